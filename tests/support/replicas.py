"""Replica-registry rows for tests, written as the controller's registry writes them (the deployment
repository only reads them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert

from yun.store import Database
from yun.store.orm import ReplicaRow

__all__ = ["ENGINE_SECRET", "add_replica"]

ENGINE_SECRET = "engine-secret-7f3a9c-never-shown"
"""The engine secret every test replica carries: no answer may ever contain it."""


def add_replica(db: Database, deployment_id: str, replica_id: str, state: str, **columns: Any) -> None:
    """One `replicas` row (`columns` override the defaults: node, endpoint, error, restarts, generation…)."""
    now = datetime.now(UTC)
    row = {
        "id": replica_id,
        "deployment_id": deployment_id,
        "generation": 1,
        "backend": "local",
        "shape": "cpu1",
        "node": "node-a",
        "endpoint": "http://127.0.0.1:9" if state == "ready" else None,
        "secret": ENGINE_SECRET,
        "state": state,
        "error": None,
        "restarts": 0,
        "created_at": now,
        "ready_at": now if state == "ready" else None,
        "stopped_at": now if state == "stopped" else None,
        "updated_at": now,
        **columns,
    }
    with db.engine.begin() as c:
        c.execute(insert(cast(Table, ReplicaRow.__table__)).values(**row))
