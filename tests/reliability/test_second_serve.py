"""A second `yun serve` on the data dir of a running one (issue 10, items 1 and 12): it is refused before
it touches anything, and the first server's stream in flight meanwhile is billed in full.

Before the data-dir lock and leases, the second start ran crash recovery over the live server's open
holds (billing a 1,500-token answer as 213 `interrupted` tokens), then either failed on its port or, on
another port, started a second copy of every model process writing the same replica logs.

The stream is held open deterministically: the replica's process is stopped (SIGSTOP) before the request
is sent, so the request holds its credit and waits for the engine for as long as the second start
takes; the replica is continued (SIGCONT) after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import MODEL, ReliabilityServer, audit_ledger, expected_cost
from tests.support.server import YunServer

pytestmark = pytest.mark.reliability

MAX_TOKENS = 300


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def replica_pid(gateway_pid: int) -> int:
    """The pid of the one model process a `yun serve` process runs."""
    workers = [
        pid for pid in _children(gateway_pid) if b"xllamacpp_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, workers
    return workers[0]


def _settled_at(db: Path, request_id: str) -> Any:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
        return c.execute("SELECT settled_at FROM reservations WHERE request_id = ?", (request_id,)).fetchone()[0]


class StreamInThread:
    """One streamed chat request read to its end in a thread of its own (its events kept)."""

    def __init__(self, url: str, key: str, max_tokens: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.error: httpx.HTTPError | None = None
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self._thread = threading.Thread(target=self._run, args=(url, key, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, key: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with (
                httpx.Client(trust_env=False, timeout=300) as client,
                client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r,
            ):
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        self.events.append(json.loads(line[6:]))
        except httpx.HTTPError as exc:  # the server was killed mid-stream
            self.error = exc

    def join(self) -> dict[str, Any] | None:
        """Wait for the end of the stream; its usage chunk, if it came."""
        self._thread.join(300)
        assert not self._thread.is_alive(), "the stream never ended"
        return next((e["usage"] for e in reversed(self.events) if e.get("usage")), None)


def open_hold(query: Callable[[str], list[Any]], org: str) -> str:
    """The request id of the org's one open hold, once it is written (bounded poll)."""
    for _ in range(1200):
        rows = query(org)
        if rows:
            [(request_id,)] = rows
            return str(request_id)
        time.sleep(0.1)
    raise AssertionError("the request never took its hold")


def _sqlite_open_holds(db: Path) -> Callable[[str], list[Any]]:
    def query(org: str) -> list[Any]:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
            return c.execute(
                "SELECT request_id FROM reservations WHERE org_id = ? AND settled_at IS NULL", (org,)
            ).fetchall()

    return query


def test_a_second_serve_is_refused_and_the_first_ones_stream_is_billed_in_full(yun_server: ReliabilityServer) -> None:
    server = yun_server
    org = server.new_org("streamer", "100")
    key = server.new_key(org)
    assert server.proc is not None
    replica = replica_pid(server.proc.pid)
    os.kill(replica, signal.SIGSTOP)  # the request below takes its hold, then waits for the engine
    try:
        stream = StreamInThread(server.url, key, MAX_TOKENS)
        request_id = open_hold(_sqlite_open_holds(server.db_path), org)
        second = YunServer(
            server.root / "second",
            data_dir=server.data_dir,
            args=["--no-default-models"],
            env=server.env,
            start_timeout_s=120,
        )
        second.launch()
        returncode = second.wait_exit()
        said = second.stdout() + second.stderr()
        assert returncode != 0, said
        assert server.proc is not None and f"pid {server.proc.pid}" in said and str(server.data_dir) in said, said
        assert "Traceback" not in said
        assert _settled_at(server.db_path, request_id) is None  # the live hold was not touched
    finally:
        os.kill(replica, signal.SIGCONT)
    usage = stream.join()

    assert stream.status == 200 and usage is not None and usage["completion_tokens"] == MAX_TOKENS
    assert stream.events[0]["id"] == request_id
    record = audit_ledger(server.db_path).records[request_id]
    assert (record["status"], record["completion_tokens"], record["prompt_tokens"]) == (
        "ok",
        MAX_TOKENS,
        usage["prompt_tokens"],
    )
    assert record["cost"] == expected_cost(usage["prompt_tokens"], MAX_TOKENS)
    # One model process, one replica log, written by the first server only.
    assert replica_pid(server.proc.pid) == replica
    logs = list((server.data_dir / "logs").iterdir())
    assert len(logs) == 1 and logs[0].name.startswith(f"{MODEL}-")  # one replica placed: <replica id>.log
    assert len(re.findall(r"^listening ", logs[0].read_text(errors="replace"), re.M)) == 1
