"""What only the `local` backend promises: its engines do not outlive the process that placed them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.helpers import engine_pid, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

_CONTROLLER = """
import asyncio, sys, dataclasses, json
from pathlib import Path
from tests.cluster.helpers import vllm_order
from yun.cluster.backends import LocalBackend

async def main():
    status = await LocalBackend(Path(sys.argv[1])).place(vllm_order())
    print(json.dumps(dataclasses.asdict(status)), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_killed_controller_leaves_no_engine_behind(tmp_path: Path) -> None:
    controller = subprocess.Popen(
        [sys.executable, "-c", _CONTROLLER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],  # `tests` importable
    )
    engine = None
    try:
        assert controller.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(controller.stdout.readline), 60)
        endpoint = json.loads(line)["endpoint"]
        engine = engine_pid(endpoint)
        os.kill(controller.pid, signal.SIGKILL)

        async def gone() -> bool | None:
            return True if not Path(f"/proc/{engine}").exists() else None

        await until(gone, "the engine died with its controller (PR_SET_PDEATHSIG)", timeout=10)
    finally:
        controller.kill()
        controller.wait(10)
        if controller.stdout is not None:
            controller.stdout.close()
        if engine is not None and Path(f"/proc/{engine}").exists():  # the test failed: do not leak it
            os.kill(engine, signal.SIGKILL)
