"""The `FileStore` seam: where the bytes of uploaded files live.

Two real backends keep the same contract (tests/unit/test_file_store.py runs one suite on both): a
directory in the data dir (`LocalFileStore`, the embedded default) and S3-compatible object storage
(`S3FileStore`, for clusters: every gateway and training node reads the same bucket).

The contract:
- `put` stores a stream of chunks under a key and returns its size. Nothing is held whole in memory, and
  the object appears only once all of it is stored: if the stream raises (a client that disconnects, an
  upload over its limit, a bad line) or the task is cancelled, nothing is left under the key or beside it.
- `open` checks that the object exists (NotFound if not) and returns an iterator of its bytes in chunks.
- `delete` removes an object (True) or says there was none (False); `exists` asks.
Failures of the storage itself (disk, network, credentials) are `StorageUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from yun.errors import InvalidRequest

__all__ = ["CHUNK_BYTES", "FileStore", "check_key"]

CHUNK_BYTES = 1024 * 1024
"""The size of the chunks `open` yields (the last may be shorter)."""

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")


def check_key(key: str) -> str:
    """Keys are relative paths of plain names (letters, digits, `.`, `_`, `-`; no `..`, no leading `/`),
    so a key can never reach outside the store's directory or bucket prefix."""
    if not _KEY.fullmatch(key) or ".." in key:
        raise InvalidRequest(f"Not a storage key: {key!r}.", param="key")
    return key


class FileStore(Protocol):
    """Where uploaded files' bytes are kept. Keys are `check_key` paths, chosen by the caller."""

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream under `key` (replacing any object there) and return its size in bytes. All or
        nothing: if `chunks` raises, or the task is cancelled, nothing is left behind and the error goes on."""
        ...

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of up to CHUNK_BYTES; NotFound if there is none under `key`."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; False when there was none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...
