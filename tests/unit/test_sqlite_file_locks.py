"""SQLite's locks are POSIX (fcntl) locks, which belong to the process: closing *any* descriptor of the
database file drops every lock the process holds on it, under its open connections. Yun must therefore
never open (and close) a database file it may already have open. Found when the bootstrap's setup lock
(which makes sure the file exists with mode 0600) ran with the server's connections open: another
process then read a settled hold as still open (tests/reliability/test_second_serve.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from yun.store import Database
from yun.store.db import ensure_sqlite_dir


def test_an_existing_database_file_is_never_opened_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data" / "yun.db"
    url = f"sqlite:///{path}"
    db = Database(url)
    try:
        with db.session() as s, s.begin():
            s.connection().exec_driver_sql("CREATE TABLE t (x)")
        opened: list[str] = []
        real_open = os.open

        def watching_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            opened.append(os.fspath(file))
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", watching_open)
        ensure_sqlite_dir(url)  # what the setup lock and every Database() do
        assert str(path) not in opened
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        db.dispose()


def test_a_missing_database_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "yun.db"
    ensure_sqlite_dir(f"sqlite:///{path}")
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
