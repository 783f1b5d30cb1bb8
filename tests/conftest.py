"""Shared fixtures. The tiny Qwen2 model is built once per machine (cached), not per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.support.tiny_model import cache_root, tiny_model_path

PG_ADMIN_URL = os.environ.get("YUN_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def minilm_gguf() -> Path:
    from yun.catalog.bundled import minilm_model_dir
    from yun.catalog.convert_bert import convert_bert_to_gguf

    target = cache_root() / "models" / "all-minilm-l6-v2-f16.gguf"
    if not target.exists():
        convert_bert_to_gguf(minilm_model_dir(), target)
    return target


def _postgres_database() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"yun_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same store contract runs against both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'yun.db'}"
    else:
        yield from _postgres_database()
