"""The stored responses, one contract on SQLite and PostgreSQL (the `org_db` fixture): scoped to their
organization, deletable, and chained through `previous_response_id`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from yun.errors import InvalidRequest, NotFound
from yun.store import Database, OrganizationRepository
from yun.store import responses as store_responses
from yun.store.responses import ResponseRepository, StoredResponse


def _stored(response_id: str, org_id: str = "org-a", previous: str | None = None) -> StoredResponse:
    item = {
        "type": "message",
        "id": f"msg_{response_id}",
        "role": "user",
        "content": [{"type": "input_text", "text": "é"}],
    }
    return StoredResponse(
        id=response_id,
        org_id=org_id,
        model_id="tiny",
        input_items=[item],
        response={"id": response_id, "object": "response", "output": [{"type": "message", "id": "m"}], "usage": None},
        previous_response_id=previous,
    )


@pytest.fixture
def repo(org_db: Database) -> ResponseRepository:
    OrganizationRepository(org_db).get_or_create("org-b", "b")
    return ResponseRepository(org_db)


def test_saved_response_reads_back_the_same_for_its_organization_only(repo: ResponseRepository) -> None:
    before = datetime.now(UTC)
    saved = repo.save(_stored("resp_1"))
    got = repo.get("org-a", "resp_1")
    assert got == saved and got.input_items == _stored("resp_1").input_items
    assert got.created_at is not None and got.created_at.tzinfo is not None and got.created_at >= before
    assert repo.get("org-b", "resp_1") is None
    assert repo.get("org-a", "resp_missing") is None


def test_delete_is_scoped_and_final(repo: ResponseRepository) -> None:
    repo.save(_stored("resp_1"))
    assert repo.delete("org-b", "resp_1") is False
    assert repo.get("org-a", "resp_1") is not None
    assert repo.delete("org-a", "resp_1") is True
    assert repo.get("org-a", "resp_1") is None
    assert repo.delete("org-a", "resp_1") is False


def test_chain_follows_previous_ids_oldest_first(repo: ResponseRepository) -> None:
    repo.save(_stored("resp_1"))
    repo.save(_stored("resp_2", previous="resp_1"))
    repo.save(_stored("resp_3", previous="resp_2"))
    assert [r.id for r in repo.chain("org-a", "resp_3")] == ["resp_1", "resp_2", "resp_3"]
    assert [r.id for r in repo.chain("org-a", "resp_1")] == ["resp_1"]
    with pytest.raises(NotFound) as e:
        repo.chain("org-b", "resp_3")
    assert e.value.param == "previous_response_id"
    # A deleted response in the middle breaks the conversation loudly, never silently.
    repo.delete("org-a", "resp_2")
    with pytest.raises(NotFound, match="resp_2"):
        repo.chain("org-a", "resp_3")


def test_chain_is_bounded(repo: ResponseRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_responses, "MAX_CHAIN", 2)
    repo.save(_stored("resp_1"))
    repo.save(_stored("resp_2", previous="resp_1"))
    repo.save(_stored("resp_3", previous="resp_2"))
    assert len(repo.chain("org-a", "resp_2")) == 2
    with pytest.raises(InvalidRequest):
        repo.chain("org-a", "resp_3")
