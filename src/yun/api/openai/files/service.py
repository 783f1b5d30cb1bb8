"""Uploads to /v1/files: the multipart body streamed into the file store, checked as it passes.

Nothing of an upload is held whole: each chunk of the file part goes on to the store as it arrives, is
counted against the per-file limit and the room left in the organization's storage, and (for JSONL
purposes) fed to the line checks. Any refusal, or a client that goes away, leaves nothing behind: the store
drops a partial object itself (jobs/files/store.py), and a stored one is deleted again when the upload is
refused after it (a bad purpose sent after the file, the storage limit reached by a concurrent upload).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from yun.api.openai.files.multipart import Begin, Data, End, Event, boundary_of, parts
from yun.errors import InvalidRequest, PayloadTooLarge
from yun.jobs.files import FileStore
from yun.jobs.files.validate import JsonlCheck, checker_for
from yun.settings import FilesSettings
from yun.store.files import FileRepository, OverLimit, StoredFile

__all__ = ["PURPOSES", "Upload", "check_purpose", "size_text"]

log = logging.getLogger("yun.api")

PURPOSES = ("fine-tune", "batch")
_MAX_FIELD_BYTES = 1024
_MAX_FILENAME = 255


def size_text(n: int) -> str:
    """A byte count for people: `512 MiB (536870912 bytes)`."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit} ({n} bytes)"
    return f"{n} bytes"


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise InvalidRequest(f"Missing 'purpose': send {' or '.join(PURPOSES)} with the file.", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"Invalid 'purpose': {purpose!r}. Files here are for {' or '.join(PURPOSES)}.", param="purpose"
        )
    return purpose


class Upload:
    """One upload of one organization, from its multipart body to a recorded file."""

    def __init__(self, store: FileStore, repo: FileRepository, limits: FilesSettings, org_id: str) -> None:
        self.store = store
        self.repo = repo
        self.limits = limits
        self.org_id = org_id
        self.file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.key = f"{org_id}/{self.file_id}"
        self.used = 0
        self.stored = False
        """True once the file is in the store: a refusal from then on must delete it again."""

    async def run(self, content_type: str | None, body: AsyncIterator[bytes]) -> StoredFile:
        boundary = boundary_of(content_type)
        self.used = await asyncio.to_thread(self.repo.usage, self.org_id)
        try:
            stored_file = await self._receive(parts(boundary, body))
            return await asyncio.to_thread(self._record, stored_file)
        except BaseException:
            if self.stored:
                await asyncio.shield(self._forget())
            raise

    async def _forget(self) -> None:
        try:
            await self.store.delete(self.key)
        except Exception:
            log.exception("could not delete the refused upload %s from the file store", self.key)

    async def _receive(self, events: AsyncIterator[Event]) -> StoredFile:
        fields: dict[str, str] = {}
        filename: str | None = None
        size = 0
        check: JsonlCheck | None = None
        async for event in events:
            if not isinstance(event, Begin):
                continue
            if event.filename is None:
                fields[event.name] = await _field(event.name, events)
                if event.name == "purpose":
                    check_purpose(fields["purpose"])  # refused before a byte of the file is stored
                continue
            if event.name != "file" or filename is not None:
                raise InvalidRequest("Send exactly one file, in the form field 'file'.", param="file")
            filename = _clean_filename(event.filename)
            purpose = fields.get("purpose")
            check = checker_for(purpose) if purpose is not None else None
            size = await self.store.put(self.key, self._file_bytes(events, check))
            self.stored = True
        purpose = check_purpose(fields.get("purpose"))
        if filename is None:
            raise InvalidRequest("No file: send it in the form field 'file'.", param="file")
        if check is None:  # the purpose came after the file: check what was stored
            check = checker_for(purpose)
            async for chunk in await self.store.open(self.key):
                check.feed(chunk)
        check.finish()
        return StoredFile(self.file_id, self.org_id, filename, purpose, size, "processed", self.key, _epoch())

    async def _file_bytes(self, events: AsyncIterator[Event], check: JsonlCheck | None) -> AsyncIterator[bytes]:
        size = 0
        room = self.limits.max_org_bytes - self.used
        async for event in events:
            if isinstance(event, End):
                return
            if not isinstance(event, Data):
                break
            size += len(event.data)
            if size > self.limits.max_file_bytes:
                raise PayloadTooLarge(
                    f"The file is larger than the per-file limit of {size_text(self.limits.max_file_bytes)} "
                    "(the server's files.max_file_bytes).",
                    param="file",
                )
            if size > room:
                raise self._over_quota(self.used)
            if check is not None:
                check.feed(event.data)
            yield event.data
        raise InvalidRequest("The upload ended inside the file (the multipart body is cut short).", param="file")

    def _over_quota(self, used: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"This file would take your organization past its file storage limit of "
            f"{size_text(self.limits.max_org_bytes)}: it already holds {size_text(used)}. "
            "Delete files you no longer need (DELETE /v1/files/{file_id}).",
            param="file",
            code="file_storage_limit",
        )

    def _record(self, file: StoredFile) -> StoredFile:
        try:
            return self.repo.add(file, self.limits.max_org_bytes)
        except OverLimit as over:  # another upload of the organization finished first
            raise self._over_quota(over.used) from None


async def _field(name: str, events: AsyncIterator[Event]) -> str:
    value = bytearray()
    async for event in events:
        if isinstance(event, End):
            break
        if isinstance(event, Data):
            value += event.data
            if len(value) > _MAX_FIELD_BYTES:
                raise InvalidRequest(f"The form field '{name}' is longer than {_MAX_FIELD_BYTES} bytes.", param=name)
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"The form field '{name}' is not UTF-8 text.", param=name) from None


def _clean_filename(raw: str) -> str:
    # Browsers once sent full client paths; only the last name is the file's.
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > _MAX_FILENAME or any(ord(c) < 32 for c in name):
        raise InvalidRequest(
            f"The file needs a name of 1 to {_MAX_FILENAME} printable characters (got {raw[:40]!r}).", param="file"
        )
    return name


def _epoch() -> datetime:
    return datetime.fromtimestamp(0, UTC)  # replaced by the time of the insert (FileRepository.add)
