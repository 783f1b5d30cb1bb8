"""The FileStore contract, one suite on both backends: a directory, and S3 against moto's S3-compatible
server (started here on loopback, spoken to over real HTTP by boto3)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.support.s3 import S3_CREDENTIALS, moto_s3, new_bucket
from yun.errors import InvalidRequest, NotFound
from yun.jobs.files import FileStore, LocalFileStore, file_store
from yun.jobs.files.s3 import PART_BYTES, S3FileStore
from yun.jobs.files.store import CHUNK_BYTES
from yun.settings import Settings

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def s3_store(endpoint: str) -> S3FileStore:
    return S3FileStore(new_bucket(endpoint), endpoint_url=endpoint, **S3_CREDENTIALS)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore:
    if request.param == "local":
        return LocalFileStore(tmp_path / "files")
    return s3_store(request.getfixturevalue("s3_endpoint"))


async def _stream(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def _read(store: FileStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in await store.open(key)])


class Boom(Exception):
    pass


async def _failing(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in _stream(data):
        yield chunk
    raise Boom()


def _leftovers(store: FileStore) -> list[str]:
    """Everything the store holds, multipart uploads in progress included."""
    if isinstance(store, LocalFileStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3FileStore)
    objects = store._s3.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = store._s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return sorted([o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads])


async def test_put_then_read_back_delete(store: FileStore) -> None:
    data = os.urandom(300_000)
    assert await store.put("org-a/file-1", _stream(data)) == len(data)
    assert await store.exists("org-a/file-1")
    assert await _read(store, "org-a/file-1") == data
    assert await store.delete("org-a/file-1") is True
    assert not await store.exists("org-a/file-1")
    assert await store.delete("org-a/file-1") is False
    assert _leftovers(store) == []


async def test_empty_object(store: FileStore) -> None:
    assert await store.put("empty", _stream(b"")) == 0
    assert await _read(store, "empty") == b""


async def test_large_object_in_many_parts_reads_back_in_bounded_chunks(store: FileStore) -> None:
    data = os.urandom(20 * MIB + 12345)
    assert len(data) > 2 * PART_BYTES  # several parts of a multipart upload on S3
    assert await store.put("big", _stream(data, 256 * 1024)) == len(data)
    chunks = [chunk async for chunk in await store.open("big")]
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= CHUNK_BYTES and len(chunks) >= 20


async def test_put_replaces_an_object(store: FileStore) -> None:
    await store.put("k", _stream(b"old"))
    await store.put("k", _stream(b"new content"))
    assert await _read(store, "k") == b"new content"


async def test_missing_keys(store: FileStore) -> None:
    assert not await store.exists("nope")
    with pytest.raises(NotFound):
        await store.open("nope")
    assert await store.delete("nope") is False


@pytest.mark.parametrize("size", [1000, 2 * PART_BYTES + 5])
async def test_a_failing_stream_leaves_nothing(store: FileStore, size: int) -> None:
    with pytest.raises(Boom):
        await store.put("broken", _failing(os.urandom(size)))
    assert not await store.exists("broken")
    assert _leftovers(store) == []


async def test_a_cancelled_put_leaves_nothing(store: FileStore) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(3 * PART_BYTES // MIB):
            yield os.urandom(MIB)
        started.set()
        await asyncio.Event().wait()  # the client stalls; the request is then cancelled
        yield b""

    task = asyncio.create_task(store.put("cut", endless()))
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _leftovers(store) == []


@pytest.mark.parametrize("key", ["", "../x", "/abs", "a/../b", "a//b", "a b", ".hidden"])
async def test_keys_cannot_leave_the_store(store: FileStore, key: str) -> None:
    with pytest.raises(InvalidRequest):
        await store.put(key, _stream(b"x"))
    with pytest.raises(InvalidRequest):
        await store.open(key)


def test_local_files_are_private(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "files")
    asyncio.run(store.put("org-a/f", _stream(b"secret")))
    assert stat.S_IMODE((tmp_path / "files").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "files" / "org-a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "files" / "org-a" / "f").stat().st_mode) == 0o600


def test_settings_pick_the_backend_and_refuse_s3_without_a_bucket(tmp_path: Path) -> None:
    local = file_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalFileStore) and local.root == tmp_path / "files"
    with pytest.raises(ValidationError, match="s3_bucket"):
        Settings(data_dir=tmp_path, files={"backend": "s3"})
    with pytest.raises(ValidationError, match="set together"):
        Settings(data_dir=tmp_path, files={"backend": "s3", "s3_bucket": "b", "s3_access_key_id": "k"})
    s3 = file_store(Settings(data_dir=tmp_path, files={"backend": "s3", "s3_bucket": "b", "s3_region": "eu-west-1"}))
    assert isinstance(s3, S3FileStore) and s3.bucket == "b"
    assert Settings(data_dir=tmp_path).files.max_file_bytes == 512 * MIB
    assert Settings(data_dir=tmp_path).files.max_org_bytes == 10 * 1024 * MIB
