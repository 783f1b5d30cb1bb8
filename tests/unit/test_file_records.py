"""Uploaded files' metadata, one contract on SQLite and PostgreSQL (the `org_db` fixture): scoped to their
organization, paged in both orders, deletable, and held within the organization's storage limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from yun.errors import NotFound
from yun.store import Database, OrganizationRepository
from yun.store.files import FileRepository, OverLimit, StoredFile


def _file(file_id: str, size: int = 10, org_id: str = "org-a", purpose: str = "fine-tune") -> StoredFile:
    return StoredFile(
        id=file_id,
        org_id=org_id,
        filename=f"{file_id}.jsonl",
        purpose=purpose,
        bytes=size,
        status="processed",
        storage_key=f"{org_id}/{file_id}",
        created_at=datetime.now(UTC),
    )


@pytest.fixture
def repo(org_db: Database) -> FileRepository:
    OrganizationRepository(org_db).get_or_create("org-b", "b")
    return FileRepository(org_db)


def test_a_file_reads_back_for_its_organization_only(repo: FileRepository) -> None:
    before = datetime.now(UTC)
    added = repo.add(_file("file-1"), max_org_bytes=100)
    got = repo.get("org-a", "file-1")
    assert got == added and got.created_at >= before and got.created_at.tzinfo is not None
    assert repo.get("org-b", "file-1") is None
    assert repo.get("org-a", "file-2") is None


def test_the_storage_limit_counts_every_file_of_the_organization(repo: FileRepository) -> None:
    repo.add(_file("file-1", 60), max_org_bytes=100)
    repo.add(_file("file-x", 90, org_id="org-b"), max_org_bytes=100)  # another org's files do not count
    with pytest.raises(OverLimit) as refused:
        repo.add(_file("file-2", 41), max_org_bytes=100)
    assert refused.value.used == 60
    assert repo.get("org-a", "file-2") is None
    repo.add(_file("file-2", 40), max_org_bytes=100)  # exactly the limit fits
    assert repo.usage("org-a") == 100 and repo.usage("org-b") == 90
    repo.delete("org-a", "file-1")
    assert repo.usage("org-a") == 40


def test_delete_is_scoped_and_final(repo: FileRepository) -> None:
    repo.add(_file("file-1"), max_org_bytes=100)
    assert repo.delete("org-b", "file-1") is None
    deleted = repo.delete("org-a", "file-1")
    assert deleted is not None and deleted.storage_key == "org-a/file-1"
    assert repo.get("org-a", "file-1") is None
    assert repo.delete("org-a", "file-1") is None


def test_pages_in_both_orders_with_a_cursor_and_a_purpose(repo: FileRepository) -> None:
    ids = [f"file-{i}" for i in range(7)]
    for i, file_id in enumerate(ids):
        repo.add(_file(file_id, purpose="batch" if i % 3 == 0 else "fine-tune"), max_org_bytes=10_000)
    repo.add(_file("file-other", org_id="org-b"), max_org_bytes=10_000)

    def walk(order: str, limit: int, purpose: str | None = None) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            page = repo.page("org-a", limit=limit, order=order, after=after, purpose=purpose)  # type: ignore[arg-type]
            seen += [f.id for f in page.files]
            if not page.has_more:
                return seen
            after = page.files[-1].id

    assert walk("asc", 3) == ids
    assert walk("desc", 2) == ids[::-1]
    assert walk("asc", 100) == ids
    assert walk("asc", 1, "batch") == ["file-0", "file-3", "file-6"]
    first = repo.page("org-a", limit=7)
    assert len(first.files) == 7 and not first.has_more
    with pytest.raises(NotFound):
        repo.page("org-a", limit=3, after="file-other")  # another org's file is no cursor here
