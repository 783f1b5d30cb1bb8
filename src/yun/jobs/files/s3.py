"""`S3FileStore`: uploaded files in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), for clusters.

A file of up to one part (8 MiB) is one `PutObject`; a larger one is a multipart upload, sent a part at a
time as the stream arrives, so at most one part is ever held in memory. S3 shows a multipart object only
once it is completed; a stream that fails or is cancelled aborts the upload, and the store drops its parts.
boto3 blocks, so every call runs on a worker thread; its errors become `StorageUnavailable` (or NotFound)
here, and nothing above this module sees one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from yun.errors import NotFound, StorageUnavailable
from yun.jobs.files.store import CHUNK_BYTES, check_key

__all__ = ["PART_BYTES", "S3FileStore"]

log = logging.getLogger("yun.jobs")

PART_BYTES = 8 * 1024 * 1024
"""The size of each part of a multipart upload (S3's minimum is 5 MiB, except for the last part)."""

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3FileStore:
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._s3: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        name = self._key(key)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        size = 0
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        started = await _call(self._s3.create_multipart_upload, Bucket=self.bucket, Key=name)
                        upload_id = started["UploadId"]
                    part = bytes(buffer[:PART_BYTES])
                    del buffer[:PART_BYTES]
                    parts.append(await self._part(name, upload_id, len(parts) + 1, part))
            if upload_id is None:
                await _call(self._s3.put_object, Bucket=self.bucket, Key=name, Body=bytes(buffer))
                return size
            if buffer:
                parts.append(await self._part(name, upload_id, len(parts) + 1, bytes(buffer)))
            await _call(
                self._s3.complete_multipart_upload,
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return size
        except BaseException:
            if upload_id is not None:
                self._abort(name, upload_id)
            raise

    async def _part(self, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        done = await _call(
            self._s3.upload_part, Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"ETag": done["ETag"], "PartNumber": number}

    def _abort(self, name: str, upload_id: str) -> None:
        # Called on the failing path, also under cancellation: blocking, so the abort is sure to be sent.
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            log.warning("could not abort the multipart upload of %s (the bucket's lifecycle rule drops it)", name)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        name = self._key(key)
        try:
            found = await _call(self._s3.get_object, Bucket=self.bucket, Key=name)
        except _Missing:
            raise NotFound(f"No stored object under '{key}'.", param="key") from None
        return _chunks(found["Body"])

    async def delete(self, key: str) -> bool:
        if not await self.exists(key):
            return False
        await _call(self._s3.delete_object, Bucket=self.bucket, Key=self._key(key))
        return True

    async def exists(self, key: str) -> bool:
        try:
            await _call(self._s3.head_object, Bucket=self.bucket, Key=self._key(key))
        except _Missing:
            return False
        return True


class _Missing(Exception):
    pass


async def _call(method: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(method, **kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise _Missing() from exc
        raise StorageUnavailable(f"The file store refused the request: {code or exc}.") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"The file store cannot be reached: {exc}.") from exc


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    pieces: Iterator[bytes] = body.iter_chunks(CHUNK_BYTES)
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(next, pieces, b"")
            except (BotoCoreError, ClientError, OSError) as exc:
                raise StorageUnavailable(f"Reading from the file store failed: {exc}.") from exc
            if not chunk:
                return
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            body.close()
