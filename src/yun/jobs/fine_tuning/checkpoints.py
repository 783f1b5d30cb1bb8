"""A fine-tuning job's newest checkpoint, kept in the FileStore so that it outlives the node that wrote it.

A trainer writes one checkpoint per epoch in its working directory (the adapter state it resumes from:
weights, optimizer and RNG state, position) and says so with a `checkpoint` event naming the directory and
its files. On `ray` that directory is on whichever node ran the task; if the node dies, so does the
checkpoint. So the runner copies each checkpoint back through the `Cluster` seam (`task_file`) into the
FileStore (S3 on clusters, the data dir locally), and when a run of the job starts again it puts the newest
one into the new run's working directory (and ships it as an input on `ray`): the trainer, which resumes
from the newest checkpoint it finds there, goes on from it instead of from scratch.

Layout, under `ft-checkpoints/<job id>/`: the checkpoint's files at their path in the working directory,
and `latest.json` (its path, its files), written last: a manifest that exists names files that are all
stored. Only the newest is kept: the previous one's files are deleted once the new manifest is written;
all of it goes when the job ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from yun.cluster.backends.tasks import task_path
from yun.errors import InvalidRequest, NotFound, StorageUnavailable
from yun.jobs.files import FileStore
from yun.jobs.files.store import check_key

__all__ = ["CheckpointStore", "StoredCheckpoint"]

log = logging.getLogger("yun.jobs")

TaskFile = Callable[[str], Awaitable[bytes | None]]
"""Reads one file of the job's task by its path in the task's working directory (None: not there)."""


@dataclass(frozen=True)
class StoredCheckpoint:
    path: str
    """The checkpoint's directory, relative to the task's working directory (e.g. `out/checkpoints/epoch-002`)."""
    files: tuple[str, ...]
    epoch: int
    step: int

    def inputs(self) -> tuple[str, ...]:
        """Its files as a task's inputs (paths relative to the working directory)."""
        return tuple(f"{self.path}/{name}" for name in self.files)


class CheckpointStore:
    def __init__(self, files: FileStore) -> None:
        self.files = files

    @staticmethod
    def _prefix(job_id: str) -> str:
        return f"ft-checkpoints/{job_id}"

    async def keep(self, job_id: str, event: dict[str, Any], read: TaskFile) -> StoredCheckpoint | None:
        """Copy the checkpoint a trainer's `checkpoint` event names into the store; None (logged) when it
        cannot be (an event without its files, a file gone, the store down): the job goes on, and a run
        started again resumes from the node's own copy if it lands there, else from the previous one."""
        try:
            path = str(task_path(str(event.get("path") or "")))
            names = tuple(str(task_path(str(n))) for n in event.get("files") or ())
            if not names:
                return None
            for name in names:
                data = await read(f"{path}/{name}")
                if data is None:
                    raise NotFound(f"{path}/{name} is not in the task's directory")
                await self.files.put(check_key(f"{self._prefix(job_id)}/{path}/{name}"), _chunks(data))
            kept = StoredCheckpoint(path, names, int(event.get("epoch") or 0), int(event.get("step") or 0))
            previous = await self.newest(job_id)
            manifest = {"path": kept.path, "files": list(kept.files), "epoch": kept.epoch, "step": kept.step}
            await self.files.put(self._manifest(job_id), _chunks(json.dumps(manifest).encode()))
        except (ValueError, InvalidRequest, NotFound, StorageUnavailable, OSError) as exc:
            log.warning("fine-tuning job %s: its checkpoint was not kept in the file store: %s", job_id, exc)
            return None
        if previous is not None and previous.path != kept.path:
            await self._delete_files(job_id, previous)
        return kept

    async def newest(self, job_id: str) -> StoredCheckpoint | None:
        """The newest checkpoint stored for the job, if any."""
        try:
            raw = b"".join([chunk async for chunk in await self.files.open(self._manifest(job_id))])
        except NotFound:
            return None
        m = json.loads(raw)
        return StoredCheckpoint(str(m["path"]), tuple(m["files"]), int(m["epoch"]), int(m["step"]))

    async def restore(self, job_id: str, workdir: Path) -> StoredCheckpoint | None:
        """Put the newest stored checkpoint in `workdir` (unless it is there already, whole) and return it;
        written beside and renamed into place, so a directory that exists is whole."""
        kept = await self.newest(job_id)
        if kept is None:
            return None
        target = workdir / PurePosixPath(kept.path)
        if all((target / name).is_file() for name in kept.files):
            return kept
        scratch = target.with_name(f".{target.name}.fetching")
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        scratch.mkdir(parents=True, mode=0o700)
        for name in kept.files:
            with (scratch / name).open("wb") as out:
                async for chunk in await self.files.open(f"{self._prefix(job_id)}/{kept.path}/{name}"):
                    out.write(chunk)
        await asyncio.to_thread(shutil.rmtree, target, True)  # a partial copy a dead node's run left
        scratch.rename(target)
        return kept

    async def forget(self, job_id: str) -> None:
        """Delete what is stored for the job (it ended: nothing will resume)."""
        kept = await self.newest(job_id)
        if kept is not None:
            await self.files.delete(self._manifest(job_id))
            await self._delete_files(job_id, kept)

    async def _delete_files(self, job_id: str, kept: StoredCheckpoint) -> None:
        for name in kept.files:
            await self.files.delete(f"{self._prefix(job_id)}/{kept.path}/{name}")

    def _manifest(self, job_id: str) -> str:
        return f"{self._prefix(job_id)}/latest.json"


async def _chunks(data: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
