"""`LocalFileStore`: uploaded files as files in a directory of the data dir (the embedded default).

The directory is created 0700 and every file 0600: they are the tenants' data, nothing another local user
should read. A file is written to a temporary name beside its target and renamed into place once whole
and flushed to disk, so a reader never sees half a file and a crash leaves at worst a `.part-*` file
(never under a key). Disk I/O runs on worker threads, a chunk at a time: the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from yun.errors import NotFound, StorageUnavailable
from yun.jobs.files.store import CHUNK_BYTES, check_key

__all__ = ["LocalFileStore"]

# Chunks are gathered to about this size before each write: one thread hop per MiB, not per packet.
_WRITE_BYTES = 1024 * 1024


class LocalFileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.chmod(0o700)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot use {root} for files: {exc.strerror or exc}.") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        target = self._path(key)
        partial = target.with_name(f".part-{uuid.uuid4().hex}")
        try:
            fh = await asyncio.to_thread(_create, partial)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot write to the file store: {exc.strerror or exc}.") from exc
        size = 0
        try:
            with fh:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in chunks:
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= _WRITE_BYTES:
                        await asyncio.to_thread(fh.write, b"".join(pending))
                        size += pending_size
                        pending, pending_size = [], 0
                await asyncio.to_thread(_finish, fh, b"".join(pending))
                size += pending_size
            await asyncio.to_thread(os.replace, partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StorageUnavailable(f"Cannot write to the file store: {exc.strerror or exc}.") from exc
        except BaseException:
            # The stream failed or the task was cancelled: no half file stays (unlink is one quick syscall,
            # done here even under cancellation).
            partial.unlink(missing_ok=True)
            raise
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound(f"No stored object under '{key}'.", param="key") from None
        except OSError as exc:
            raise StorageUnavailable(f"Cannot read from the file store: {exc.strerror or exc}.") from exc
        return _chunks(fh)

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageUnavailable(f"Cannot remove a file of the file store: {exc.strerror or exc}.") from exc
        return True

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)


def _create(partial: Path) -> BinaryIO:
    partial.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _finish(fh: BinaryIO, tail: bytes) -> None:
    fh.write(tail)
    fh.flush()
    os.fsync(fh.fileno())  # whole on disk before the rename makes it visible under its key


async def _chunks(fh: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK_BYTES):
            yield chunk
    finally:
        with contextlib.suppress(OSError):
            fh.close()
