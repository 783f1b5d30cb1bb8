"""Reach a replica's engine directly, as a gateway does: its address and secret from the replica registry."""

from __future__ import annotations

from pathlib import Path

from yun.store import Database
from yun.store.replicas import ReplicaRepository
from yun.store.secrets import load_key

__all__ = ["engine_access"]


def engine_access(data_dir: Path, deployment_id: str, database_url: str | None = None) -> tuple[str, dict[str, str]]:
    """(address, headers) of the one ready replica of `deployment_id`, read from the database of a
    `yun serve` with `data_dir` (its SQLite file unless `database_url`) and its secrets key file. The
    engine refuses any request without those headers."""
    db = Database(database_url or f"sqlite:///{data_dir / 'yun.db'}")
    try:
        entries = ReplicaRepository(db, load_key(None, data_dir / "secrets.key")).of_deployment(deployment_id)
    finally:
        db.dispose()
    ready = [e for e in entries if e.state == "ready" and e.endpoint]
    assert len(ready) == 1, f"expected one ready replica of {deployment_id}, the registry has {entries}"
    assert ready[0].endpoint is not None
    return ready[0].endpoint, {"Authorization": f"Bearer {ready[0].secret}"}
