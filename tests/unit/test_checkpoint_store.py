"""A fine-tuning job's checkpoints kept in the FileStore (jobs/fine_tuning/checkpoints.py), on both
backends: a directory and S3 (moto's server over real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3 import S3_CREDENTIALS, moto_s3, new_bucket
from yun.jobs.files import FileStore, LocalFileStore
from yun.jobs.files.s3 import S3FileStore
from yun.jobs.fine_tuning.checkpoints import CheckpointStore


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore:
    if request.param == "local":
        return LocalFileStore(tmp_path / "files")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3FileStore(new_bucket(endpoint), endpoint_url=endpoint, **S3_CREDENTIALS)


def _node(tmp_path: Path, epoch: int, state: bytes) -> tuple[Path, dict[str, object]]:
    """A node's working directory holding the checkpoint of `epoch` (as the trainer writes it) and its event."""
    workdir = tmp_path / "node"
    path = f"out/checkpoints/epoch-{epoch:03d}"
    (workdir / path).mkdir(parents=True, exist_ok=True)
    files = {"adapter_model.safetensors": b"weights" * 1000, "state.pt": state, "position.json": b'{"epoch": 1}'}
    for name, data in files.items():
        (workdir / path / name).write_bytes(data)
    return workdir, {"type": "checkpoint", "epoch": epoch, "step": 3 * epoch, "path": path, "files": sorted(files)}


async def test_the_newest_checkpoint_is_kept_and_restored_into_a_fresh_directory(
    store: FileStore, tmp_path: Path
) -> None:
    kept = CheckpointStore(store)
    assert await kept.newest("ftjob-1") is None
    node, first = _node(tmp_path, 1, b"optimizer 1")

    async def read(name: str) -> bytes | None:
        target = node / name
        return target.read_bytes() if target.is_file() else None

    one = await kept.keep("ftjob-1", first, read)
    assert one is not None and (one.epoch, one.step) == (1, 3)
    _, second = _node(tmp_path, 2, b"optimizer 2")
    two = await kept.keep("ftjob-1", second, read)
    assert two is not None and await kept.newest("ftjob-1") == two
    assert not await store.exists("ft-checkpoints/ftjob-1/out/checkpoints/epoch-001/state.pt")  # only the newest

    fresh = tmp_path / "another-node"
    restored = await kept.restore("ftjob-1", fresh)
    assert restored == two
    assert (fresh / "out/checkpoints/epoch-002/state.pt").read_bytes() == b"optimizer 2"
    assert (fresh / "out/checkpoints/epoch-002/adapter_model.safetensors").read_bytes() == b"weights" * 1000
    assert [p.name for p in (fresh / "out/checkpoints").iterdir()] == ["epoch-002"]  # no scratch left
    assert restored.inputs() == tuple(f"out/checkpoints/epoch-002/{n}" for n in second["files"])  # type: ignore[attr-defined]

    await kept.forget("ftjob-1")
    assert await kept.newest("ftjob-1") is None
    assert not await store.exists("ft-checkpoints/ftjob-1/out/checkpoints/epoch-002/state.pt")


async def test_a_checkpoint_that_cannot_be_read_is_not_kept_and_the_previous_stays(
    store: FileStore, tmp_path: Path
) -> None:
    kept = CheckpointStore(store)
    node, first = _node(tmp_path, 1, b"optimizer 1")

    async def read(name: str) -> bytes | None:
        target = node / name
        return target.read_bytes() if target.is_file() else None

    assert await kept.keep("ftjob-2", first, read) is not None
    _, second = _node(tmp_path, 2, b"optimizer 2")
    (node / "out/checkpoints/epoch-002/state.pt").unlink()  # gone before the runner read it
    assert await kept.keep("ftjob-2", second, read) is None
    newest = await kept.newest("ftjob-2")
    assert newest is not None and newest.epoch == 1
    escaping = {**second, "path": "../../etc"}
    assert await kept.keep("ftjob-2", escaping, read) is None  # a path out of the working directory: refused
