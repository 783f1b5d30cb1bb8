"""The `Cluster` contract runs on both backends: `local` (child processes) and `ray` (actors on a real
two-node Ray cluster, the session fixture `ray_cluster` of tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from yun.cluster.backends import LocalBackend
from yun.cluster.backends.supervised import RestartPolicy
from yun.cluster.base import Cluster

# Fast supervision for tests: a dead engine is noticed within half a second and restarted 0.2 s later.
RESTARTS = RestartPolicy(max_restarts=2, backoff_s=0.2, max_backoff_s=1.0)


def ray_backend_for(cluster: Any, **kwargs: Any) -> Cluster:
    from tests.support.raycluster import HEAD_IP
    from yun.cluster.backends.ray import RayBackend

    options = {"policy": RESTARTS, "log_dir": str(cluster.root / "engines"), **kwargs}
    return RayBackend(cluster.address, node_ip_address=HEAD_IP, **options)


@pytest_asyncio.fixture(loop_scope="session", params=["local", "ray"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Each contract test runs once per backend; every replica it placed is stopped after it."""
    if request.param == "ray":
        cluster: Cluster = ray_backend_for(request.getfixturevalue("ray_cluster"))
    else:
        cluster = LocalBackend(tmp_path / "engines", policy=RESTARTS)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.close(stop_replicas=True)


@pytest_asyncio.fixture(loop_scope="session", params=["local", "ray"])
async def hung_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """`backend` with a short liveness bound: an engine silent for 2 s (probed every 0.5 s) is hung."""
    policy = dataclasses.replace(RESTARTS, hung_after_s=2.0, probe_s=0.5)
    if request.param == "ray":
        cluster: Cluster = ray_backend_for(request.getfixturevalue("ray_cluster"), policy=policy)
    else:
        cluster = LocalBackend(tmp_path / "engines", policy=policy)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.close(stop_replicas=True)


@pytest_asyncio.fixture(loop_scope="session")
async def ray_backend(ray_cluster: Any) -> AsyncIterator[Cluster]:
    backend = ray_backend_for(ray_cluster)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close(stop_replicas=True)
