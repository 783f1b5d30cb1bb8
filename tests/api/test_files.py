"""/v1/files with the official `openai` client against a live server (uvicorn on loopback, the real app on
SQLite and on PostgreSQL, files in the data dir): upload, list and paging, retrieve, content, delete; each
tenant sees only its own files; per-file and per-organization limits refuse with 413 and leave nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from tests.api.conftest import Api, api_settings, running_api
from tests.support.s3 import S3_CREDENTIALS, moto_s3, new_bucket
from tests.support.uvicorn_app import served
from yun.jobs.files.s3 import S3FileStore
from yun.settings import FilesSettings

KIB = 1024
MIB = 1024 * KIB
FILE_LIMIT = 256 * KIB
ORG_LIMIT = 600 * KIB


def example(i: int, pad: int = 0) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"What is {i} + 1?" + " " * pad},
            {"role": "assistant", "content": str(i + 1)},
        ]
    }


def training_file(n: int = 12, pad: int = 0) -> bytes:
    return b"".join(json.dumps(example(i, pad)).encode() + b"\n" for i in range(n))


def batch_file(n: int = 3) -> bytes:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
        for i in range(n)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@dataclass
class Live:
    api: Api
    url: str
    key: str
    client: openai.AsyncOpenAI

    def stored(self) -> list[Path]:
        """Every file in the file store's directory (partial writes included)."""
        root = self.api.services.settings.files_dir
        return sorted(p for p in root.rglob("*") if p.is_file())

    async def other(self) -> openai.AsyncOpenAI:
        _, key = await self.api.new_org()
        return openai.AsyncOpenAI(api_key=key, base_url=f"{self.url}/v1", max_retries=0)


@contextlib.asynccontextmanager
async def live_files(database_url: str, data_dir: Path, **files: int) -> AsyncIterator[Live]:
    settings = api_settings(data_dir, database_url).model_copy(
        update={"files": api_settings(data_dir).files.model_copy(update=files)}
    )
    async with running_api(settings) as api, served(api.app) as url:
        _, key = await api.new_org()
        client = openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
        yield Live(api, url, key, client)
        await client.close()


@pytest_asyncio.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with live_files(database_url, tmp_path / "data", max_file_bytes=FILE_LIMIT, max_org_bytes=ORG_LIMIT) as it:
        yield it


async def test_upload_list_page_retrieve_content_delete(live: Live) -> None:
    client = live.client
    train = training_file()
    first = await client.files.create(file=("train.jsonl", train), purpose="fine-tune")
    assert (first.object, first.bytes, first.filename, first.purpose, first.status) == (
        "file",
        len(train),
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert first.id.startswith("file-") and first.created_at > 0
    second = await client.files.create(file=("more.jsonl", training_file(20)), purpose="fine-tune")
    batch = await client.files.create(file=("batch.jsonl", batch_file()), purpose="batch")
    ids = [first.id, second.id, batch.id]

    listed = await client.files.list()
    assert [f.id for f in listed.data] == ids[::-1]  # newest first
    assert listed.has_more is False
    assert [f.id async for f in client.files.list(limit=1, order="asc")] == ids  # the SDK pages with `after`
    page = await client.files.list(limit=2)
    assert page.has_more is True and page.first_id == ids[2] and page.last_id == ids[1]
    assert [f.id for f in (await client.files.list(purpose="batch")).data] == [batch.id]

    got = await client.files.retrieve(first.id)
    assert got == first
    content = await client.files.content(first.id)
    assert content.read() == train
    assert content.response.headers["content-length"] == str(len(train))

    deleted = await client.files.delete(first.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (first.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.delete(first.id)
    assert [f.id for f in (await client.files.list()).data] == [batch.id, second.id]
    assert len(live.stored()) == 2


async def test_another_organization_gets_404_on_every_route(live: Live) -> None:
    mine = await live.client.files.create(file=("train.jsonl", training_file()), purpose="fine-tune")
    theirs = await live.other()
    missing = "file-000000000000000000000000"
    for file_id in (mine.id, missing):
        for call in (theirs.files.retrieve, theirs.files.content, theirs.files.delete):
            with pytest.raises(openai.NotFoundError) as refused:
                await call(file_id)
            assert refused.value.body["message"] == f"No such File object: {file_id}"  # type: ignore[index]
    assert (await theirs.files.list()).data == []
    with pytest.raises(openai.NotFoundError):
        await theirs.files.list(after=mine.id)
    assert (await live.client.files.content(mine.id)).read() == training_file()  # untouched
    await theirs.close()


async def test_a_file_over_the_per_file_limit_is_413_and_leaves_nothing(live: Live) -> None:
    big = training_file(2000)
    assert len(big) > FILE_LIMIT
    with pytest.raises(openai.APIStatusError) as refused:
        await live.client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert refused.value.status_code == 413
    message = refused.value.body["message"]  # type: ignore[index]
    assert "per-file limit of 256 KiB (262144 bytes)" in message
    assert live.stored() == []
    assert (await live.client.files.list()).data == []


async def test_the_organization_storage_limit_is_413_naming_limit_and_usage(live: Live) -> None:
    one = training_file(1400)
    assert FILE_LIMIT > len(one) > ORG_LIMIT // 3
    done = [await live.client.files.create(file=("a.jsonl", one), purpose="fine-tune") for _ in range(2)]
    with pytest.raises(openai.APIStatusError) as refused:
        await live.client.files.create(file=("c.jsonl", one), purpose="fine-tune")
    assert refused.value.status_code == 413
    message = refused.value.body["message"]  # type: ignore[index]
    assert "limit of 600 KiB (614400 bytes)" in message and f"already holds {2 * len(one) / KIB:.4g} KiB" in message
    assert len(live.stored()) == 2
    # Another organization has its own room; deleting a file makes room again.
    theirs = await live.other()
    await theirs.files.create(file=("c.jsonl", one), purpose="fine-tune")
    await live.client.files.delete(done[0].id)
    await live.client.files.create(file=("c.jsonl", one), purpose="fine-tune")
    await theirs.close()


async def test_a_bad_purpose_is_400_naming_purpose(live: Live) -> None:
    for purpose in ("assistants", ""):
        with pytest.raises(openai.BadRequestError) as refused:
            await live.client.files.create(file=("t.jsonl", training_file()), purpose=purpose)  # type: ignore[arg-type]
        assert refused.value.body["param"] == "purpose"  # type: ignore[index]
    assert live.stored() == []


async def test_the_purpose_may_come_after_the_file(live: Live) -> None:
    """The file is stored as it arrives, then checked and kept, or deleted, once the purpose is known."""
    train = training_file()
    for purpose, status in (("fine-tune", 200), ("batch", 400), ("nope", 400)):
        body = (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n' + train + b"\r\n"
            b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + purpose.encode() + b"\r\n--XyZ--\r\n"
        )
        async with httpx.AsyncClient(base_url=live.url) as http:
            r = await http.post(
                "/v1/files",
                content=body,
                headers={"Authorization": f"Bearer {live.key}", "Content-Type": "multipart/form-data; boundary=XyZ"},
            )
        assert r.status_code == status, r.text
    assert len(live.stored()) == 1
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}) as http:
        no_purpose = await http.post("/v1/files", files={"file": ("t.jsonl", train)})
        assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
        assert "Missing 'purpose'" in no_purpose.json()["error"]["message"]
        no_file = await http.post("/v1/files", files={"other": ("t.jsonl", train)}, data={"purpose": "batch"})
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
        not_multipart = await http.post("/v1/files", json={"purpose": "batch"})
        assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["error"]["message"]
    assert len(live.stored()) == 1


BAD_LINES = [
    (b"{not json}\n", 1, "not valid JSON"),
    (b"[1, 2]\n", 1, "expected a JSON object"),
    (b'{"prompt": "x"}\n', 1, "missing 'messages'"),
    (b'{"messages": []}\n', 1, "'messages' must be a non-empty list"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}\n', 1, "has role 'robot'"),
    (b'{"messages": [{"role": "user"}]}\n', 1, "has no 'content'"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}\n', 1, "no assistant message"),
]


@pytest.mark.parametrize(("bad", "line", "problem"), BAD_LINES)
async def test_each_bad_training_line_is_named(live: Live, bad: bytes, line: int, problem: str) -> None:
    good = training_file(3)
    with pytest.raises(openai.BadRequestError) as refused:
        await live.client.files.create(file=("t.jsonl", good + b"\n" + bad + good), purpose="fine-tune")
    message = refused.value.body["message"]  # type: ignore[index]
    assert f"line {3 + 1 + line}: " in message and problem in message, message
    assert live.stored() == []


async def test_too_few_examples_and_bad_batch_lines(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await live.client.files.create(file=("t.jsonl", training_file(9)), purpose="fine-tune")
    assert "it has 9 example(s); fine-tuning needs at least 10" in refused.value.body["message"]  # type: ignore[index]
    duplicate = batch_file(2) + batch_file(1)
    with pytest.raises(openai.BadRequestError) as refused:
        await live.client.files.create(file=("b.jsonl", duplicate), purpose="batch")
    assert "line 3: custom_id 'r0' is already used on line 1" in refused.value.body["message"]  # type: ignore[index]
    get = json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}).encode()
    with pytest.raises(openai.BadRequestError) as refused:
        await live.client.files.create(file=("b.jsonl", get), purpose="batch")
    assert "line 1: 'method' must be \"POST\"" in refused.value.body["message"]  # type: ignore[index]
    assert live.stored() == []


def _multipart_head(boundary: str = "XyZ") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode()


async def _chunked(total: int, sent: list[int]) -> AsyncIterator[bytes]:
    yield _multipart_head()
    line = json.dumps(example(1)).encode() + b"\n"
    piece = line * (64 * KIB // len(line))
    while sent[0] < total:
        sent[0] += len(piece)
        yield piece


async def test_a_chunked_upload_over_the_limit_gets_the_413(live: Live) -> None:
    sent = [0]
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        r = await http.post(
            "/v1/files",
            content=_chunked(2 * FILE_LIMIT, sent),
            headers={"Authorization": f"Bearer {live.key}", "Content-Type": "multipart/form-data; boundary=XyZ"},
        )
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    assert live.stored() == []


async def _raw_upload(url: str, key: str, body_bytes: int, *, close_after: bool) -> bytes:
    """Send a chunked upload of up to `body_bytes` over a raw socket, reading the answer as it comes;
    with `close_after`, hang up after that much instead. Returns what the server answered."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "POST /v1/files HTTP/1.1\r\nHost: yun\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
        ).encode()
    )
    received = bytearray()

    async def read_all() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(64 * KIB):
                received.extend(chunk)

    answer = asyncio.ensure_future(read_all())
    sent = 0
    piece = json.dumps(example(1)).encode() + b"\n"
    piece = piece * (256 * KIB // len(piece))
    with contextlib.suppress(ConnectionError):
        head = _multipart_head()
        writer.write(b"%x\r\n%s\r\n" % (len(head), head))
        while sent < body_bytes and not answer.done():
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            sent += len(piece)
    if close_after:
        writer.close()
        answer.cancel()
        return b""
    await asyncio.wait_for(answer, 60)
    writer.close()
    assert sent < body_bytes, "the server read the whole endless upload"
    return bytes(received)


async def test_an_endless_chunked_upload_is_cut_off(live: Live) -> None:
    got = await _raw_upload(live.url, live.key, 200 * MIB, close_after=False)
    # The 413 goes out once the count passes the limit (and a bounded part of the rest was read); a client
    # that still writes then may see the connection reset before it reads the answer: either way, cut off.
    assert got == b"" or (got.startswith(b"HTTP/1.1 413 ") and b"per-file limit" in got), got[:200]
    assert live.stored() == []


async def test_a_client_that_hangs_up_mid_upload_leaves_nothing(live: Live) -> None:
    await _raw_upload(live.url, live.key, FILE_LIMIT // 2, close_after=True)
    for _ in range(200):
        if live.stored() == []:
            break
        await asyncio.sleep(0.05)
    assert live.stored() == []
    assert (await live.client.files.list()).data == []


async def test_uploads_have_their_limit_and_inference_keeps_8_mib(database_url: str, tmp_path: Path) -> None:
    async with live_files(database_url, tmp_path / "data", max_file_bytes=16 * MIB) as live:
        assert live.api.services.settings.server.max_body_bytes == 8 * MIB
        body = training_file(30_000, pad=200)
        assert 8 * MIB < len(body) < 16 * MIB
        uploaded = await live.client.files.create(file=("big.jsonl", body), purpose="fine-tune")
        assert uploaded.bytes == len(body)
        with pytest.raises(openai.APIStatusError) as refused:
            await live.client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x" * (9 * MIB)}]
            )
        assert refused.value.status_code == 413
        assert "limit of 8388608 bytes" in refused.value.body["message"]  # type: ignore[index]


async def test_files_in_an_s3_bucket(tmp_path: Path) -> None:
    """`files.backend = "s3"`: the same API, the bytes in the bucket (moto's S3 server), nothing left on
    a refusal or a delete."""
    with moto_s3() as endpoint:
        bucket = new_bucket(endpoint)
        s3 = {
            "backend": "s3",
            "s3_endpoint_url": endpoint,
            "s3_bucket": bucket,
            "s3_region": S3_CREDENTIALS["region"],
            "s3_access_key_id": S3_CREDENTIALS["access_key_id"],
            "s3_secret_access_key": S3_CREDENTIALS["secret_access_key"],
            "max_file_bytes": FILE_LIMIT,
        }
        settings = api_settings(tmp_path / "data")
        settings = settings.model_copy(update={"files": FilesSettings.model_validate(s3)})
        async with running_api(settings) as api, served(api.app) as url:
            _, key = await api.new_org()
            client = openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
            store = api.services.files
            assert isinstance(store, S3FileStore) and store.bucket == bucket
            train = training_file()
            stored = await client.files.create(file=("t.jsonl", train), purpose="fine-tune")
            assert (await client.files.content(stored.id)).read() == train
            with pytest.raises(openai.APIStatusError) as refused:
                await client.files.create(file=("big.jsonl", training_file(2000)), purpose="fine-tune")
            assert refused.value.status_code == 413
            with pytest.raises(openai.BadRequestError):
                await client.files.create(file=("t.jsonl", training_file(3)), purpose="fine-tune")
            listed = store._s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            assert [o["Key"].rsplit("/", 1)[-1] for o in listed] == [stored.id]
            assert store._s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
            await client.files.delete(stored.id)
            assert store._s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
            await client.close()


async def test_nul_characters_are_refused(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    async with httpx.AsyncClient(base_url=live.url, headers=headers) as http:
        for path, params, param in [
            ("/v1/files", {"after": "a\x00b"}, "after"),
            ("/v1/files", {"purpose": "a\x00b"}, "purpose"),
            ("/v1/files/a%00b", None, "file_id"),
            ("/v1/files/a%00b/content", None, "file_id"),
        ]:
            r = await http.get(path, params=params)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        r = await http.delete("/v1/files/a%00b")
        assert r.status_code == 400 and r.json()["error"]["param"] == "file_id", r.text
        body = (
            _multipart_head().replace(b'filename="t.jsonl"', b'filename="a\x00b.jsonl"')
            + training_file()
            + b"\r\n--XyZ--\r\n"
        )
        r = await http.post("/v1/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    assert live.stored() == []


async def test_an_upload_is_never_held_whole_in_memory(tmp_path: Path) -> None:
    """48 MiB streamed in: the server side never holds more than a few MiB of it (tracemalloc's peak over
    the upload, the client's generated chunks included, stays far below the file's size)."""
    size = 48 * MIB
    settings = api_settings(tmp_path / "data")
    settings = settings.model_copy(update={"files": FilesSettings(max_file_bytes=64 * MIB)})
    async with running_api(settings) as api:
        _, key = await api.new_org()
        line = json.dumps(example(7)).encode() + b"\n"
        piece = line * (256 * KIB // len(line))
        count = size // len(piece)

        async def body() -> AsyncIterator[bytes]:
            yield _multipart_head()
            for _ in range(count):
                yield piece
            yield b"\r\n--XyZ--\r\n"

        tracemalloc.start()
        try:
            r = await api.http.post(
                "/v1/files",
                content=body(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=XyZ"},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.status_code == 200, r.text
        assert r.json()["bytes"] == count * len(piece)
        assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB while uploading {size / MIB:.0f} MiB"
