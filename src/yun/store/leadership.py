"""Which controller is the active one: at most one places replicas per database.

PostgreSQL: a session-level advisory lock held on a connection of its own for as long as the
controller is active. PostgreSQL releases it the moment that connection ends, so when the active
controller dies (even `kill -9`: the kernel closes its socket) a standby's next try, a second later,
takes over. A controller checks its connection every pass; if it is gone, so is the lock, and it
stops acting at once (another may already be active).

SQLite: one `yun serve` per data dir (the data-dir lock), so it is always the active one.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

__all__ = ["Leadership"]

log = logging.getLogger("yun.store")

_CONTROLLER_LOCK_KEY = 0x59554E_C7_12  # "YUN", controller: distinct from the setup lock's key


class Leadership:
    def __init__(self, url: str) -> None:
        self.url = url
        self._embedded = not url.startswith("postgresql")
        self._engine = None if self._embedded else create_engine(url, poolclass=NullPool)
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._embedded or self._conn is not None

    def try_acquire(self) -> bool:
        """Become the active controller if none is; True if this one is (now or already)."""
        if self.held:
            return self.check()
        assert self._engine is not None
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            log.warning("cannot reach the database to stand for controller: %s", exc)
            return False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _CONTROLLER_LOCK_KEY}).scalar())
            conn.commit()
        except SQLAlchemyError:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> bool:
        """Whether this controller still holds the lock (its connection is alive); False drops it."""
        if self._embedded:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except SQLAlchemyError as exc:
            log.error("lost the controller lock (its database connection failed: %s)", exc)
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _CONTROLLER_LOCK_KEY})
                self._conn.commit()
            except SQLAlchemyError:
                log.debug("unlocking the controller lock failed; closing its connection releases it", exc_info=True)
            self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                log.debug("closing the controller lock's connection failed", exc_info=True)
