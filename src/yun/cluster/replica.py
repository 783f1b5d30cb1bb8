"""A replica: one engine process Yun runs (or one external endpoint), with its health and load."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from pathlib import Path

from yun.cluster.spec import EngineTuning, ReplicaSpec
from yun.engines import Engine, OpenAIHTTPEngine
from yun.errors import EngineUnavailable

__all__ = ["Replica"]

log = logging.getLogger("yun.cluster")

_FAILURES_TO_UNHEALTHY = 3
_LOCAL_CONNECTIONS = 64
_EMBEDDING_SLOTS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Replica:
    """Owns an engine and, for local models, the process that runs it.

    `outstanding` counts requests in flight so the router can send new work to the least loaded
    replica; it is touched only from the event loop, so it needs no lock.
    """

    def __init__(self, spec: ReplicaSpec, index: int, tuning: EngineTuning, log_dir: Path) -> None:
        self.spec = spec
        self.index = index
        self.name = f"{spec.model_id}/{index}"
        self.tuning = tuning
        self.log_dir = log_dir
        self.engine: Engine | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.healthy = False
        self.outstanding = 0
        self.restarts = 0
        self.state = "stopped"
        self._retry_at = 0.0
        self._stopped = False
        self.failures = 0

    @property
    def slots(self) -> int | None:
        """Requests the engine runs at once (llama.cpp's slots); None for an external server, whose
        capacity Yun does not know (it queues or refuses by itself)."""
        if self.spec.external:
            return None
        return _EMBEDDING_SLOTS if self.spec.kind == "embedding" else self.tuning.parallel

    async def start(self) -> None:
        """Start (or restart) the replica and wait until it answers its health probe."""
        if self.spec.external:
            assert self.spec.url is not None
            self.engine = OpenAIHTTPEngine(
                self.name, self.spec.url, api_key=self.spec.api_key, timeout_s=self.tuning.request_timeout_s
            )
            self.healthy = await self.engine.healthy()
            self.state = "ready" if self.healthy else "unreachable"
            return
        await self._spawn()

    async def _spawn(self) -> None:
        assert self.spec.path is not None
        port = _free_port()
        args = [
            sys.executable,
            "-m",
            "yun.engines.xllamacpp_worker",
            "--model",
            self.spec.path,
            "--port",
            str(port),
            "--threads",
            str(self.tuning.threads),
        ]
        # The context a request gets is the spec's (what cards and errors state), set per model or globally.
        if self.spec.kind == "embedding":
            args += ["--embedding", "--parallel", str(_EMBEDDING_SLOTS), "--ctx", str(self.spec.context_length or 512)]
        else:
            ctx = self.spec.context_length or self.tuning.context_per_slot
            args += ["--parallel", str(self.tuning.parallel), "--ctx", str(ctx)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{self.spec.model_id.replace('/', '_')}-{self.index}.log"
        self.state = "loading"
        started = time.monotonic()
        with log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                *args, stdout=log_file, stderr=log_file, stdin=asyncio.subprocess.DEVNULL
            )
        engine = OpenAIHTTPEngine(
            self.name,
            f"http://127.0.0.1:{port}",
            llamacpp=True,
            timeout_s=self.tuning.request_timeout_s,
            max_connections=_LOCAL_CONNECTIONS,  # the rest wait in the gateway, below the worker's HTTP threads
            # No idle keep-alive connections to our own workers: llama.cpp's HTTP server polls each one
            # every 10 ms (strace: ~96 polls/s per idle connection), and each wake-up takes a core from
            # its compute threads on a 2-core machine. A loopback connect per request costs far less
            # than that next to a generation of tens of milliseconds or more.
            keep_alive=False,
        )
        deadline = started + self.tuning.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                break
            if await engine.healthy():
                if self.engine is not None:
                    await self.engine.aclose()
                self.engine = engine
                self.healthy = True
                self.state = "ready"
                log.info("replica %s ready in %.1fs (log %s)", self.name, time.monotonic() - started, log_path)
                return
            await asyncio.sleep(0.1)
        await engine.aclose()
        await self._kill()
        self.state = "failed"
        raise EngineUnavailable(f"replica {self.name} did not become healthy; see {log_path}")

    async def check(self) -> bool:
        """Probe health; restart a local replica whose process died. Never raises."""
        if self._stopped:
            return False
        if not self.spec.external and (self.process is None or self.process.returncode is not None):
            self.healthy = False
            if time.monotonic() < self._retry_at:
                return False
            self.restarts += 1
            code = None if self.process is None else self.process.returncode
            log.warning("replica %s is not running (exit code %s); restarting", self.name, code)
            try:
                await self._spawn()
            except EngineUnavailable as exc:
                # Back off so a model that cannot load does not spin the CPU re-loading it.
                self._retry_at = time.monotonic() + min(60.0, 2.0**self.restarts)
                log.error("%s", exc)
            return self.healthy
        if self.engine is None:
            self.healthy = False
            return False
        if await self.engine.healthy():
            self.failures = 0
            self.healthy = True
        else:
            # One slow probe under load is not an outage: only consecutive failures take a live replica
            # out of rotation (a dead process is caught above, at once).
            self.failures += 1
            if self.failures >= _FAILURES_TO_UNHEALTHY:
                self.healthy = False
        if self.spec.external:
            self.state = "ready" if self.healthy else "unreachable"
        return self.healthy

    async def _kill(self) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._stopped = True
        self.healthy = False
        self.state = "stopped"
        await self._kill()
        if self.engine is not None:
            await self.engine.aclose()
            self.engine = None
