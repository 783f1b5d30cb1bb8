"""`yun serve` as a real subprocess on 127.0.0.1, for the e2e and reliability tiers.

`YunServer` owns one data dir and one port: `start()` launches `python -m yun serve` and returns once
`/health` says it is ready (`wait_until` waits for more, e.g. a model added after the start; `yun()`
runs CLI commands against it); `stop()` is Ctrl-C; `kill9()` is SIGKILL to the whole process group (the
gateway and its replica processes). It can be started again on the same data dir and port. Its
stdout/stderr go to numbered files under `root` (one pair per start), and the bootstrap admin key is
read from the first start's output.

`launch()` is the start without the wait, for a test that expects the start to fail (`wait_exit()`) or
reads the "listening on" line itself (`wait_listening()`, which also learns the port of a `port=0` start).
`database` runs it on another database than its data dir's SQLite (e.g. several gateways, each with its
own data dir, on one PostgreSQL database).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import free_port

__all__ = ["KEY_RE", "Health", "YunServer", "answers", "at_zero", "healthy"]

KEY_RE = re.compile(r"yun-[A-Za-z0-9_-]{43}")
LISTENING_RE = re.compile(r"listening on (http://\S+)/v1")

Health = dict[str, Any]
"""What `GET /health` answers."""


def healthy(health: Health) -> bool:
    """Ready as soon as the gateway says ok (use a stricter predicate to wait for replicas)."""
    return health.get("status") == "ok"


def answers(health: Health) -> bool:
    """Ready as soon as `/health` answers at all (the gateway is up; there may be no model yet)."""
    return True


def at_zero(model: str, *, dedicated: bool) -> Health:
    """What `/health` says of an active deployment of `model` scaled to zero with nothing queued or in
    flight (its `message` aside: compare `deployment | {"message": ""}` with it)."""
    return {
        "model": model,
        "dedicated": dedicated,
        "state": "active",
        "desired": 0,
        "ready": 0,
        "queued": 0,
        "in_flight": 0,
        "message": "",
    }


class YunServer:
    """One `yun serve` subprocess (in its own process group, with its replica children) over a data dir.

    - `args`: extra `yun serve` arguments (e.g. `["--no-default-models"]`).
    - `env`: extra environment (`YUN_*` settings); the caller's own `YUN_*` variables are never inherited.
    - `ready`: a predicate over the `/health` JSON; `start()` waits (bounded by `start_timeout_s`) for it.
    - `admin_key`: give it when the data dir already has its bootstrap key (a second server on the same data).
    - `port=0`: the kernel picks; the URL is known once `wait_listening()` read it.
    - `database`: `--database` (a PostgreSQL URL); the data dir still holds its logs and replicas.
    """

    def __init__(
        self,
        root: Path,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ready: Callable[[Health], bool] = healthy,
        start_timeout_s: float = 240.0,
        admin_key: str | None = None,
        database: str | None = None,
    ) -> None:
        self.root = root
        self.data_dir = data_dir or root / "data"
        self.db_path = self.data_dir / "yun.db"
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args) if database is None else ["--database", database, *args]
        self.ready = ready
        self.start_timeout_s = start_timeout_s
        self.admin_key = admin_key
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path: Path | None = None
        self.stderr_path: Path | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("YUN_")}
        self.env.update(HF_HUB_OFFLINE="1", COLUMNS="200")  # the bootstrap key panel must not wrap the key
        self.env.update(env or {})

    def yun(self, *args: str, timeout: float = 180) -> str:
        """Run a `yun` command against this server (`YUN_URL`, and its admin key once known); it must
        succeed. Returns its stdout."""
        env = {**self.env, "YUN_URL": self.url}
        if self.admin_key is not None:
            env["YUN_API_KEY"] = self.admin_key
        done = subprocess.run(
            [sys.executable, "-m", "yun", *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"yun {' '.join(args)} failed: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> None:
        """Launch and wait until ready. The first start must print exactly one bootstrap key, later ones none."""
        self.launch()
        if self.port == 0:
            self.wait_listening()
        self.wait_until(self.ready)
        keys = KEY_RE.findall(self.stdout())
        if self.admin_key is None:
            assert len(keys) == 1, f"expected the bootstrap key on the first start, got {len(keys)}"
            self.admin_key = keys[0]
        else:
            assert keys == [], "a start on a data dir that has its admin key must not print a new one"

    def launch(self) -> subprocess.Popen[bytes]:
        """Launch `yun serve` and return at once (no wait, no check of what it prints)."""
        assert self.proc is None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.stdout_path = self.root / f"serve-{self.port}-{self.starts}.out"
        self.stderr_path = self.root / f"serve-{self.port}-{self.starts}.err"
        with self.stdout_path.open("wb") as out_f, self.stderr_path.open("wb") as err_f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "yun", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
                + self.args,
                stdout=out_f,
                stderr=err_f,
                env=self.env,
                cwd=self.root,
                start_new_session=True,  # its own process group: SIGKILL reaches the replicas too
            )
        return self.proc

    def wait_listening(self) -> str:
        """Wait (bounded by `start_timeout_s`) until the launched server says where it listens; that URL
        becomes `url` (and its port `port`). Returns the URL."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while (found := LISTENING_RE.search(self.stdout())) is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"yun serve exited with {self.proc.returncode}: {self.stderr_tail()}")
            if time.monotonic() >= deadline:
                self.kill9()
                raise AssertionError(f"yun serve never said it listens in {self.start_timeout_s}s")
            time.sleep(0.1)
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def wait_exit(self) -> int:
        """Wait (bounded by `start_timeout_s`) for a launched server to exit on its own; its return code."""
        proc = self.proc
        assert proc is not None
        try:
            return proc.wait(self.start_timeout_s)
        finally:
            self.kill9()

    def wait_until(self, ready: Callable[[Health], bool]) -> None:
        """Poll `/health` until `ready` says so (bounded by `start_timeout_s`; a server that exits or never
        gets there is killed and fails the test with its log)."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"yun serve exited with {self.proc.returncode}: {self.stderr_tail()}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if ready(client.get(self.url + "/health").json()):
                        return
                time.sleep(0.2)
        self.kill9()
        raise AssertionError(f"yun serve was not ready in {self.start_timeout_s}s: {self.stderr_tail()}")

    def stdout(self) -> str:
        """What the current (or last) start printed on stdout."""
        return "" if self.stdout_path is None else self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        """What the current (or last) start wrote on stderr (its log)."""
        return "" if self.stderr_path is None else self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, chars: int = 3000) -> str:
        return self.stderr()[-chars:]

    def kill9(self) -> None:
        """SIGKILL the gateway and its replica processes at once (the whole process group) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # The replicas were in the group; wait (bounded) until none of them is left.
        for _ in range(100):
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop (SIGINT, as Ctrl-C): the lifespan stops the replicas and disposes the database."""
        proc = self.proc
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        self.kill9()  # whatever is left of the group (a stuck gateway, a replica it failed to stop)

    def admin(self) -> httpx.Client:
        """An HTTP client with the bootstrap admin key."""
        assert self.admin_key is not None
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, trust_env=False, timeout=60
        )
