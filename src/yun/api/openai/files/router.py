"""OpenAI's Files API: POST /v1/files (a streamed multipart upload), GET /v1/files (paged), GET and DELETE
/v1/files/{file_id}, GET /v1/files/{file_id}/content (streamed from the file store).

A file is its organization's alone: every read is scoped by the org id of the key, so another tenant's id is
not found (404), exactly like an id that never existed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator
from starlette.responses import StreamingResponse

from yun.api.bounds import Cursor, Identifier, no_nul
from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.errors import ERROR_RESPONSES
from yun.api.openai.files.protocol import FileDeleted, FileList, FileObject
from yun.api.openai.files.service import Upload
from yun.errors import NotFound
from yun.store.files import StoredFile
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["UPLOAD_ROUTE", "router"]

log = logging.getLogger("yun.api")

UPLOAD_ROUTE = ("POST", "/v1/files")
"""The one route whose body is streamed (api/limits.py gives it the per-file limit, not the 8 MiB one)."""

router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERROR_RESPONSES)

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune", "batch"]},
                    },
                }
            }
        },
    }
}


@router.post("", openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, principal: PrincipalDep, services: ServicesDep) -> FileObject:
    """Uploads a file (multipart: `file`, `purpose`), streamed to the file store and checked as it arrives:
    a JSONL file of purpose `fine-tune` must hold chat examples, one of purpose `batch` requests."""
    require_role(principal, INFERENCE_ROLES, "upload files")
    upload = Upload(services.files, services.file_records, services.settings.files, principal.org_id)
    stored = await upload.run(request.headers.get("content-type"), request.stream())
    return FileObject.of(stored)


@router.get("")
async def list_files(
    principal: PrincipalDep,
    services: ServicesDep,
    purpose: Annotated[str, AfterValidator(no_nul)] | None = Query(default=None, max_length=40),
    limit: int = Query(default=10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    after: Cursor | None = None,
) -> FileList:
    """The organization's files, newest first by default; page on with `after` (the last id seen)."""
    require_role(principal, INFERENCE_ROLES, "list files")
    page = await asyncio.to_thread(
        services.file_records.page, principal.org_id, limit=limit, order=order, after=after, purpose=purpose
    )
    data = [FileObject.of(f) for f in page.files]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


async def _own(services: ServicesDep, principal: Principal, file_id: str, doing: str) -> StoredFile:
    require_role(principal, INFERENCE_ROLES, doing)
    found = await asyncio.to_thread(services.file_records.get, principal.org_id, file_id)
    if found is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return found


@router.get("/{file_id}")
async def retrieve_file(file_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> FileObject:
    """One file of the caller's organization."""
    return FileObject.of(await _own(services, principal, file_id, "read files"))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def file_content(file_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> StreamingResponse:
    """The file's bytes, streamed from the file store."""
    found = await _own(services, principal, file_id, "read files")
    chunks = await services.files.open(found.storage_key)
    disposition = f"attachment; filename*=UTF-8''{quote(found.filename, safe='')}"
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Length": str(found.bytes), "Content-Disposition": disposition},
    )


@router.delete("/{file_id}")
async def delete_file(file_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> FileDeleted:
    """Deletes the file: its record at once (it no longer counts against the storage limit), then its bytes."""
    require_role(principal, INFERENCE_ROLES, "delete files")
    found = await asyncio.to_thread(services.file_records.delete, principal.org_id, file_id)
    if found is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    try:
        await services.files.delete(found.storage_key)
    except Exception:  # the file is gone for the tenant either way; the operator sees the orphan in the log
        log.exception("could not delete %s of file %s from the file store", found.storage_key, file_id)
    return FileDeleted(id=file_id)
