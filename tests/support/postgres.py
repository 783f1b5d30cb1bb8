"""A fresh PostgreSQL database on the local server (trust auth), dropped afterwards, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

__all__ = ["PG_ADMIN_URL", "fresh_database"]

PG_ADMIN_URL = os.environ.get("YUN_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) on exit. Raises sqlalchemy's
    OperationalError when PostgreSQL is not reachable at `PG_ADMIN_URL` (`YUN_TEST_POSTGRES`)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"yun_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
