"""`yun serve` starts that cannot serve fail before they touch anything (issue 10, item 1): real
`python -m yun serve` processes on 127.0.0.1, no model (they fail, or are stopped, long before one
would matter)."""

from __future__ import annotations

import signal
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.net import taken_port as _taken_port
from tests.support.server import YunServer
from yun.billing.service import BillingService, Estimate
from yun.store import Database, OrganizationRepository, upgrade

START_TIMEOUT_S = 120.0  # a bound on a busy machine, never a measured time


def _serve(root: Path, data_dir: Path, port: int) -> YunServer:
    return YunServer(
        root,
        data_dir=data_dir,
        port=port,
        args=["--no-default-models"],
        env={"COLUMNS": "400"},  # long tmp paths: no wrapping of the one-line error
        start_timeout_s=START_TIMEOUT_S,
    )


def _refused(data_dir: Path, port: int) -> str:
    """Run a `yun serve` that must refuse to start; return what it said (stdout + stderr)."""
    server = _serve(data_dir.parent / f"refused-{uuid.uuid4().hex[:8]}", data_dir, port)
    server.launch()
    returncode = server.wait_exit()
    said = (server.stdout() + server.stderr()).strip()
    assert returncode not in (0, None), said
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    return said


@pytest.fixture
def taken_port() -> Iterator[int]:
    with _taken_port(listen=True) as port:
        yield port


@pytest.fixture
def running(tmp_path: Path) -> Iterator[YunServer]:
    """A `yun serve` on port 0 (the kernel picks), up once it said where it listens."""
    server = _serve(tmp_path, tmp_path / "data", 0)
    server.launch()
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def _open_hold(data_dir: Path) -> str:
    """A data dir whose database has a hold left open by a gateway that is gone."""
    url = f"sqlite:///{data_dir / 'yun.db'}"
    upgrade(url)
    db = Database(url)
    try:
        OrganizationRepository(db).get_or_create("org-a", "a")
        billing = BillingService(db, "gwi_gone")
        billing.credit("org-a", 1)
        rid = f"req-{uuid.uuid4().hex}"
        billing.reserve_blocking(rid, "org-a", "key-1", "m", "chat.completions", Estimate(10, 10))
    finally:
        db.dispose()
    return rid


def _settled_at(data_dir: Path, request_id: str) -> object:
    with sqlite3.connect(data_dir / "yun.db") as c:
        return c.execute("SELECT settled_at FROM reservations WHERE request_id = ?", (request_id,)).fetchone()[0]


def test_listening_is_said_only_once_it_accepts_and_a_clean_stop_ends_the_lease(running: YunServer) -> None:
    # No retry: the line was printed after uvicorn started accepting on the bound socket.
    assert httpx.get(running.url + "/health", trust_env=False, timeout=30).status_code == 200
    assert running.proc is not None
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(60) in (0, 128 + signal.SIGINT)  # uvicorn re-raises the Ctrl-C once it stopped
    with sqlite3.connect(running.db_path) as c:
        assert c.execute("SELECT count(*) FROM gateway_instances").fetchone() == (0,)


def test_a_taken_port_is_a_one_line_error_before_the_database_is_touched(tmp_path: Path, taken_port: int) -> None:
    blank = tmp_path / "blank"
    said = _refused(blank, taken_port)
    assert f"cannot listen on 127.0.0.1:{taken_port}" in said and "address already in use" in said
    assert not (blank / "yun.db").exists()  # not even created, let alone migrated

    used = tmp_path / "used"
    request_id = _open_hold(used)
    _refused(used, taken_port)
    assert _settled_at(used, request_id) is None  # recovery never ran


def test_a_second_serve_on_the_same_data_dir_is_refused_naming_the_first(
    running: YunServer, tmp_path: Path, taken_port: int
) -> None:
    data_dir = tmp_path / "data"
    assert running.proc is not None
    for port in (0, taken_port):  # another free port, or a taken one: the data dir is checked first
        said = _refused(data_dir, port)
        assert f"pid {running.proc.pid}" in said and str(data_dir) in said, said
    assert httpx.get(running.url + "/health", trust_env=False, timeout=30).status_code == 200
