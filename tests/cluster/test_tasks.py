"""The batch-task half of the `Cluster` contract (fine-tuning runs), on both backends: `local` (a child
process in the caller's directory) and `ray` (a detached actor on a node of the real two-node cluster, in
a directory of that node, its inputs shipped and its files read back through the backend)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import ray_backend_for
from yun.cluster.base import Cluster, Resources, TaskOrder, TaskStatus
from yun.errors import ComputeBusy

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Reads its input, counts its starts, writes output as it goes, and on SIGTERM says so and exits 3.
SCRIPT = """
import os, pathlib, signal, sys, time
pathlib.Path("pid").write_text(str(os.getpid()))
def stop(*_):
    pathlib.Path("out/log.txt").open("a").write("stopped\\n")
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
pathlib.Path("out").mkdir(exist_ok=True)
with pathlib.Path("starts").open("a") as f:
    f.write("x")
words = pathlib.Path("in/words.txt").read_text().split()
for word in words:
    pathlib.Path("out/log.txt").open("a").write(word.upper() + "\\n")
mode = sys.argv[1]
if mode == "wait":
    while True:
        time.sleep(0.05)
sys.exit(int(mode))
"""


def _order(tmp_path: Path, task_id: str, mode: str, *, cpus: float = 0.5) -> TaskOrder:
    workdir = tmp_path / task_id
    (workdir / "in").mkdir(parents=True)
    (workdir / "in" / "words.txt").write_text("alpha beta")
    (workdir / "task.py").write_text(SCRIPT)
    return TaskOrder(
        task_id=task_id,
        command=(sys.executable, "task.py", mode),
        workdir=str(workdir),
        resources=Resources(cpus=cpus),
        env=(("OMP_NUM_THREADS", "1"),),
        inputs=("task.py", "in/words.txt"),
    )


async def _ended(backend: Cluster, task_id: str) -> TaskStatus:
    deadline = time.monotonic() + 60
    while True:
        status = await backend.task(task_id)
        assert status is not None, f"the backend lost task {task_id}"
        if not status.running:
            return status
        assert time.monotonic() < deadline, f"task {task_id} did not end"
        await asyncio.sleep(0.1)


async def _written(backend: Cluster, task_id: str, name: str, text: str) -> bytes:
    deadline = time.monotonic() + 60
    while text.encode() not in (data := await backend.task_file(task_id, name) or b""):
        assert time.monotonic() < deadline, f"task {task_id} never wrote {text!r} to {name}"
        await asyncio.sleep(0.1)
    return data


async def test_a_task_runs_on_its_inputs_and_its_output_is_read_back(backend: Cluster, tmp_path: Path) -> None:
    order = _order(tmp_path, "t-ok", "0")
    started = await backend.start_task(order)
    assert started.task_id == "t-ok" and started.node
    status = await _ended(backend, "t-ok")
    assert status.exit_code == 0
    assert await backend.task_file("t-ok", "out/log.txt") == b"ALPHA\nBETA\n"
    assert await backend.task_file("t-ok", "out/log.txt", offset=6) == b"BETA\n"  # read on from where it was
    assert await backend.task_file("t-ok", "out/missing.txt") is None
    with pytest.raises(ValueError, match="inside the task's working directory"):
        await backend.task_file("t-ok", "../t-ok/out/log.txt")
    with pytest.raises(ValueError, match="inside the task's working directory"):
        await backend.task_file("t-ok", "/etc/passwd")
    await backend.release_task("t-ok")
    assert await backend.task("t-ok") is None
    assert await backend.task_file("t-ok", "out/log.txt") is None
    await backend.release_task("t-ok")  # unknown now: ignored


async def test_a_failing_task_reports_its_exit_code(backend: Cluster, tmp_path: Path) -> None:
    await backend.start_task(_order(tmp_path, "t-fail", "7"))
    assert (await _ended(backend, "t-fail")).exit_code == 7
    await backend.release_task("t-fail")


async def test_starting_a_running_task_again_starts_nothing_and_stop_sends_sigterm(
    backend: Cluster, tmp_path: Path
) -> None:
    order = _order(tmp_path, "t-wait", "wait")
    await backend.start_task(order)
    await _written(backend, "t-wait", "out/log.txt", "BETA")
    again = await backend.start_task(order)
    assert again.running
    assert await backend.task_file("t-wait", "starts") == b"x"
    await backend.stop_task("t-wait", grace_s=10)
    status = await _ended(backend, "t-wait")
    assert status.exit_code == 3  # its own SIGTERM handler ran: the stop was a request, not a kill
    assert (await backend.task_file("t-wait", "out/log.txt") or b"").endswith(b"stopped\n")
    await backend.release_task("t-wait")
    await backend.stop_task("t-wait")  # unknown now: ignored


async def test_releasing_a_task_whose_process_has_not_exited_yet_leaves_no_process_behind(
    backend: Cluster, tmp_path: Path
) -> None:
    # A trainer writes its last event, then exits: the runner may release it in between. Its process is
    # then waited for and stopped, never left running or unreaped (a zombie per job on `local`, once).
    await backend.start_task(_order(tmp_path, "t-exiting", "wait"))
    await _written(backend, "t-exiting", "out/log.txt", "BETA")
    pid = int(await backend.task_file("t-exiting", "pid") or b"0")
    assert pid > 0
    await backend.release_task("t-exiting")
    assert await backend.task("t-exiting") is None
    deadline = time.monotonic() + 30
    while (state := _process_state(pid)) is not None:  # both backends' nodes are this host
        assert time.monotonic() < deadline, f"the released task's process {pid} is still there (state {state})"
        await asyncio.sleep(0.1)


def _process_state(pid: int) -> str | None:
    """The state letter of process `pid` (Z: exited, not reaped), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


async def test_an_ended_task_started_again_runs_again(backend: Cluster, tmp_path: Path) -> None:
    order = _order(tmp_path, "t-twice", "0")
    await backend.start_task(order)
    await _ended(backend, "t-twice")
    await backend.start_task(order)
    assert (await _ended(backend, "t-twice")).exit_code == 0
    # A second run on the same node finds what the first left (a resumed trainer finds its checkpoints).
    assert await backend.task_file("t-twice", "starts") in (b"xx", b"x")
    await backend.release_task("t-twice")


async def test_a_task_no_node_can_hold_is_compute_busy(ray_cluster: object, tmp_path: Path) -> None:
    backend = ray_backend_for(ray_cluster, task_start_timeout_s=3.0)
    await backend.start()
    try:
        with pytest.raises(ComputeBusy, match="no node of the Ray cluster had cpu8 free"):
            await backend.start_task(_order(tmp_path, "t-big", "0", cpus=8))
        assert await backend.task("t-big") is None  # not left waiting for a node behind the caller's back
    finally:
        await backend.close()
