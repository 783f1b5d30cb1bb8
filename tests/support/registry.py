"""Reach a replica's engine directly, as a gateway does: its address and secret from the replica registry."""

from __future__ import annotations

from pathlib import Path

from yun.store import Database
from yun.store.replicas import RegistryEntry, ReplicaRepository
from yun.store.secrets import load_key

__all__ = ["engine_access", "registry_of"]


def registry_of(
    deployment_id: str, database_url: str, *, data_dir: Path | None = None, secrets_key: str | None = None
) -> list[RegistryEntry]:
    """The registry's replicas of `deployment_id` that are not stopped, oldest first, secrets opened with
    `secrets_key` (`YUN_SECRETS__KEY`) or else the key file of the server's `data_dir`."""
    key_file = (data_dir or Path("/nonexistent")) / "secrets.key"
    assert secrets_key or data_dir, "give the secrets key or the data dir that holds it"
    db = Database(database_url)
    try:
        return ReplicaRepository(db, load_key(secrets_key, key_file)).of_deployment(deployment_id)
    finally:
        db.dispose()


def engine_access(data_dir: Path, deployment_id: str, database_url: str | None = None) -> tuple[str, dict[str, str]]:
    """(address, headers) of the one ready replica of `deployment_id`, read from the database of a
    `yun serve` with `data_dir` (its SQLite file unless `database_url`) and its secrets key file. The
    engine refuses any request without those headers."""
    entries = registry_of(deployment_id, database_url or f"sqlite:///{data_dir / 'yun.db'}", data_dir=data_dir)
    ready = [e for e in entries if e.state == "ready" and e.endpoint]
    assert len(ready) == 1, f"expected one ready replica of {deployment_id}, the registry has {entries}"
    assert ready[0].endpoint is not None
    return ready[0].endpoint, {"Authorization": f"Bearer {ready[0].secret}"}
