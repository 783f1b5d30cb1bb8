"""One engine process on this node, started from a `ReplicaOrder`: the part both backends share.

The `local` backend runs these as its own children; a Ray actor runs one on the node Ray placed it on.
Either way the process:

- binds the address it is given on a port picked free there, and is reached at `http://host:port`;
- gets the replica's secret only in its environment (`YUN_ENGINE_SECRET`, and `VLLM_API_KEY` for vLLM),
  never on its command line, which every user of the machine can read, and never in a log line;
- dies with the thread that started it (PR_SET_PDEATHSIG): a killed controller or Ray actor never leaves
  a model holding memory. Start it from a thread that lives as long as the replica (an event loop's).
- writes its output to one log file per replica; the tail of this start's output is what an operator
  sees when it fails.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from yun.cluster.base import ReplicaOrder
from yun.engines import OpenAIHTTPEngine
from yun.errors import EngineUnavailable

__all__ = ["EngineProcess", "engine_command", "free_port", "start_engine"]

_PR_SET_PDEATHSIG = 1
_TAIL_BYTES = 2000
_PLACEHOLDERS = ("{host}", "{port}", "{model}")


def free_port(host: str) -> int:
    """A TCP port nothing listens on at `host` right now (free until someone binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def engine_command(order: ReplicaOrder, host: str, port: int) -> list[str]:
    """The argv that serves `order` on `host:port`. It never carries the secret."""
    if order.command is not None:
        values = {"{host}": host, "{port}": str(port), "{model}": order.model_path}
        argv = []
        for part in order.command:
            if "{secret}" in part:
                raise EngineUnavailable(
                    f"replica {order.replica_id}: its engine command must not carry the secret (a command line "
                    "is readable by every user of the machine); the engine finds it in YUN_ENGINE_SECRET"
                )
            for placeholder in _PLACEHOLDERS:
                part = part.replace(placeholder, values[placeholder])
            argv.append(part)
        return argv
    if order.engine == "vllm":
        return ["vllm", "serve", order.model_path, "--host", host, "--port", str(port)]
    args = order.args
    argv = [
        sys.executable, "-m", "yun.engines.xllamacpp_worker", "--model", order.model_path,
        "--host", host, "--port", str(port), "--threads", str(args.threads),
        "--parallel", str(args.parallel), "--ctx", str(args.context),
    ]  # fmt: skip
    for adapter in args.lora:
        argv += ["--lora", adapter]
    return argv + ["--embedding"] if order.kind == "embedding" else argv


def _environment(order: ReplicaOrder) -> dict[str, str]:
    """This process's environment (PATH, CUDA_*, HF_*), plus the secret.

    llama.cpp's threads are OpenMP's, and a Ray worker has OMP_NUM_THREADS set to its actor's whole CPUs
    (1 for a replica of one CPU or less): inherited, it made a 2-thread engine 2-2.5x slower than with the
    variable unset (measured on the default model, 2 cores). The engine gets its own thread count instead."""
    env = {**os.environ, "YUN_ENGINE_SECRET": order.secret}
    if order.engine == "vllm":
        env["VLLM_API_KEY"] = order.secret
    elif order.command is None:
        env["OMP_NUM_THREADS"] = str(order.args.threads)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that forked us exits."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class EngineProcess:
    """A started engine process, its endpoint and its log."""

    def __init__(self, order: ReplicaOrder, host: str, log_dir: Path) -> None:
        self.order = order
        self.port = free_port(host)
        self.endpoint = f"http://{host}:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{order.replica_id.replace('/', '_')}.log"
        argv = engine_command(order, host, self.port)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {order.replica_id} on {self.endpoint}\n".encode())
            log.flush()
            self._log_start = log.tell()  # the tail shown on failure is this start's output only
            try:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_environment(order),
                    preexec_fn=_die_with_parent,  # only prctl and getppid run in the child
                )
            except OSError as exc:
                raise EngineUnavailable(f"replica {order.replica_id}: cannot run {argv[0]!r}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs."""
        return self.process.poll()

    def log_tail(self) -> str:
        """The end of what this start printed (for error messages)."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_start, size - _TAIL_BYTES))
                return log.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def exit_reason(self) -> str:
        """Why it is gone, for operators: the exit code (or signal) and the end of its log."""
        code = self.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        tail = self.log_tail()
        return f"engine {how}" + (f"; its log ends with:\n{tail}" if tail else f" (log {self.log_path})")

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until `GET /health` answers 200; fail early if the process exits. Raises EngineUnavailable
        with the reason (exit code and log tail, or the timeout) and leaves no process behind."""
        order = self.order
        probe = OpenAIHTTPEngine(f"replica {order.replica_id}", self.endpoint, llamacpp=True, keep_alive=False)
        deadline = time.monotonic() + timeout_s
        try:
            while self.returncode is None:
                if await probe.healthy():
                    return
                if time.monotonic() >= deadline:
                    await self.terminate()
                    tail = self.log_tail()
                    raise EngineUnavailable(
                        f"replica {order.replica_id} did not answer on {self.endpoint} within {timeout_s:g}s"
                        + (f"; its log ends with:\n{tail}" if tail else "")
                    )
                await asyncio.sleep(0.2)
        finally:
            await probe.aclose()
        raise EngineUnavailable(f"replica {order.replica_id} could not start: {self.exit_reason()}")

    async def answers(self, timeout_s: float) -> bool:
        """Whether its `GET /health` answers 200 within `timeout_s` (the liveness probe of a running engine)."""
        probe = OpenAIHTTPEngine(f"replica {self.order.replica_id}", self.endpoint, llamacpp=True, keep_alive=False)
        try:
            async with asyncio.timeout(timeout_s):
                return await probe.healthy()
        except TimeoutError:
            return False
        finally:
            await probe.aclose()

    async def terminate(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        deadline = time.monotonic() + grace_s
        while self.process.poll() is None:
            if time.monotonic() >= deadline:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
                return
            await asyncio.sleep(0.05)


async def start_engine(order: ReplicaOrder, host: str, log_dir: Path) -> EngineProcess:
    """Start the engine of `order` bound to `host` and wait until it answers (up to its `start_timeout_s`)."""
    engine = EngineProcess(order, host, log_dir)
    try:
        await engine.wait_ready(order.start_timeout_s)
    except BaseException:
        await engine.terminate(grace_s=2.0)
        raise
    return engine
