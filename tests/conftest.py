"""Shared fixtures. The tiny Qwen2 model is built once per machine (cached), not per test."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.support.postgres import PG_ADMIN_URL, fresh_database
from tests.support.tiny_model import cache_root, tiny_model_path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One real two-node Ray cluster for the whole session (tests/support/raycluster.py), shared by the
    cluster backend's tests and the reliability tier's. A test that kills its worker node starts it again."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (scripts/install.sh installs it): the ray backend is not tested")
    from tests.support.raycluster import RayCluster

    cluster = RayCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def minilm_gguf() -> Path:
    from yun.catalog.bundled import minilm_model_dir
    from yun.catalog.convert_bert import convert_bert_to_gguf

    target = cache_root() / "models" / "all-minilm-l6-v2-f16.gguf"
    if not target.exists():
        convert_bert_to_gguf(minilm_model_dir(), target)
    return target


def _postgres_database() -> Iterator[str]:
    """A fresh database (tests/support/postgres.py); the test is skipped, saying why, without PostgreSQL."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_database())
        except OperationalError as exc:
            pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same store contract runs against both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'yun.db'}"
    else:
        yield from _postgres_database()
