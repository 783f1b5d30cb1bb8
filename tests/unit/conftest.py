"""Fixtures shared by the money tests (writer, progress, gateway): a real database with one organization."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from yun.store import Database, OrganizationRepository, upgrade


@pytest.fixture
def org_db(database_url: str) -> Iterator[Database]:
    """A migrated database (SQLite or PostgreSQL, see `database_url`) holding the organization `org-a`."""
    upgrade(database_url)
    database = Database(database_url)
    OrganizationRepository(database).get_or_create("org-a", "a")
    yield database
    database.dispose()
