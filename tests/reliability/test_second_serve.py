"""A second `yun serve` on the data dir of a running one (issue 10, items 1 and 12): it is refused before
it touches anything, and the first server's stream in flight meanwhile is billed in full.

Before the data-dir lock and leases, the second start ran crash recovery over the live server's open
holds (billing a 1,500-token answer as 213 `interrupted` tokens), then either failed on its port or, on
another port, started a second copy of every model process writing the same replica logs.

The stream is held open deterministically: the replica's process is stopped (SIGSTOP) after the first
chunk, so the hold is open for as long as the second start takes, and continued (SIGCONT) after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import MODEL, YunServer, audit_ledger, expected_cost, free_port

pytestmark = pytest.mark.reliability

MAX_TOKENS = 300


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _replica_pid(server: YunServer) -> int:
    assert server.proc is not None
    workers = [
        pid for pid in _children(server.proc.pid) if b"xllamacpp_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, workers
    return workers[0]


def _settled_at(db: Path, request_id: str) -> Any:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
        return c.execute("SELECT settled_at FROM reservations WHERE request_id = ?", (request_id,)).fetchone()[0]


def test_a_second_serve_is_refused_and_the_first_ones_stream_is_billed_in_full(yun_server: YunServer) -> None:
    server = yun_server
    key = server.new_key(server.new_org("streamer", "100"))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    replica = _replica_pid(server)
    usage: dict[str, Any] | None = None
    with (
        httpx.Client(trust_env=False, timeout=120) as client,
        client.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        assert r.status_code == 200
        events = (json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {"))
        request_id = next(events)["id"]
        os.kill(replica, signal.SIGSTOP)  # the stream is now stalled mid-way, its hold open
        try:
            assert _settled_at(server.db_path, request_id) is None
            second = subprocess.run(
                [sys.executable, "-m", "yun", "serve", "--data-dir", str(server.data_dir)]
                + ["--port", str(free_port()), "--no-default-models"],
                env=server._env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            said = second.stdout + second.stderr
            assert second.returncode != 0, said
            assert server.proc is not None and f"pid {server.proc.pid}" in said and str(server.data_dir) in said, said
            assert "Traceback" not in said
            assert _settled_at(server.db_path, request_id) is None  # the live hold was not touched
        finally:
            os.kill(replica, signal.SIGCONT)
        for event in events:
            usage = event.get("usage") or usage

    assert usage is not None and usage["completion_tokens"] == MAX_TOKENS
    record = audit_ledger(server.db_path).records[request_id]
    assert (record["status"], record["completion_tokens"], record["prompt_tokens"]) == (
        "ok",
        MAX_TOKENS,
        usage["prompt_tokens"],
    )
    assert record["cost"] == expected_cost(usage["prompt_tokens"], MAX_TOKENS)
    # One model process, one replica log, written by the first server only.
    assert _children(server.proc.pid).count(replica) == 1 and _replica_pid(server) == replica
    log = (server.data_dir / "logs" / f"{MODEL}-0.log").read_text(errors="replace")
    assert log.count("\nlistening ") + log.startswith("listening ") == 1
    assert sorted(p.name for p in (server.data_dir / "logs").iterdir()) == [f"{MODEL}-0.log"]
