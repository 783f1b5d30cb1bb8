"""Item 13: what one organization stores about a person is visible only to that organization.

Two organizations add the same person (one email, one global user row) with different names. Every
member, key and usage endpoint under /v1/organization and /admin then shows each org only its own
words, its own member ids, and nothing that would let the two tell they share the person."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tests.api.conftest import Api
from yun.store import migrate

BOB = "bob@b.example"


async def test_two_orgs_see_only_their_own_words_about_a_shared_person(api: Api) -> None:
    org_a, key_a = await api.new_org()
    org_b, key_b = await api.new_org()
    r = await api.http.post(
        "/v1/organization/members",
        json={"email": BOB, "name": "Robert (B's payroll name)", "role": "admin"},
        headers=api.auth(key_b),
    )
    assert r.status_code == 201, r.text
    b_member = r.json()
    r = await api.http.post("/v1/organization/members", json={"email": BOB.upper()}, headers=api.auth(key_a))
    assert r.status_code == 201, r.text
    a_member = r.json()
    assert a_member["email"] == BOB and a_member["name"] == "" and a_member["role"] == "member"
    assert a_member["id"] != b_member["id"] and "user_id" not in a_member
    await api.spend(org_a)
    await api.spend(org_b)

    # Every read each org can make, as its own owner key and as the platform admin acting on it.
    month = datetime.now(UTC).strftime("%Y-%m")
    reads = ["members", "keys", "balance", "usage", "usage/records", f"statements/{month}"]
    seen: dict[str, str] = {}
    for org, key in ((org_a, key_a), (org_b, key_b)):
        text = ""
        for path in reads:
            r = await api.get(f"/v1/organization/{path}", key)
            assert r.status_code == 200, (path, r.text)
            text += r.text
        for path in (f"/admin/orgs/{org}", "/admin/orgs"):
            r = await api.get(path)
            assert r.status_code == 200, r.text
        seen[org] = text
    assert "Robert" not in seen[org_a] and b_member["id"] not in seen[org_a] and org_b not in seen[org_a]
    assert a_member["id"] not in seen[org_b] and org_a not in seen[org_b]
    # Neither answer carries the person's global user id.
    with api.services.db.engine.connect() as c:
        user_id = c.execute(sa.text("SELECT id FROM users WHERE email = :e"), {"e": BOB}).scalar_one()
    assert user_id not in seen[org_a] + seen[org_b] + str(a_member) + str(b_member)

    (listed_a,) = (await api.get("/v1/organization/members", key_a)).json()["data"]
    assert listed_a == a_member
    (listed_b,) = (await api.get("/v1/organization/members", key_b)).json()["data"]
    assert listed_b == b_member and listed_b["name"] == "Robert (B's payroll name)"

    # A member id is the org's own: the other org cannot remove (or learn of) it; its own org can.
    r = await api.http.delete(f"/v1/organization/members/{b_member['id']}", headers=api.auth(key_a))
    assert r.status_code == 404
    r = await api.http.delete(f"/v1/organization/members/{a_member['id']}", headers=api.auth(key_a))
    assert r.status_code == 200
    assert (await api.get("/v1/organization/members", key_a)).json()["data"] == []
    assert (await api.get("/v1/organization/members", key_b)).json()["data"] == [b_member]
    # Adding the person again is a new membership with a new id, still with none of B's words.
    r = await api.http.post("/v1/organization/members", json={"email": BOB, "name": "Bob"}, headers=api.auth(key_a))
    assert r.status_code == 201 and r.json()["id"] not in (a_member["id"], b_member["id"])
    assert r.json()["name"] == "Bob"
    r = await api.http.post("/v1/organization/members", json={"email": BOB}, headers=api.auth(key_a))
    assert r.status_code == 400 and r.json()["error"]["param"] == "email"


def _migrate(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def test_migration_keeps_only_names_one_org_wrote(database_url: str) -> None:
    """0007 on a database with people written the old way: a person in one org keeps the name; a person
    in two gets no name in either (which org wrote it was never recorded)."""
    engine = sa.create_engine(database_url)
    _migrate(database_url, "0005")
    now = datetime.now(UTC)
    with engine.begin() as c:
        for org in ("org-a", "org-b"):
            c.execute(
                sa.text("INSERT INTO organizations (id, name, created_at) VALUES (:id, :id, :now)"),
                {"id": org, "now": now},
            )
        for user, email, name in (("user_1", "solo@x.example", "Solo"), ("user_2", BOB, "B's words")):
            c.execute(
                sa.text(
                    "INSERT INTO users (id, email, name, is_platform_admin, created_at)"
                    " VALUES (:id, :email, :name, false, :now)"
                ),
                {"id": user, "email": email, "name": name, "now": now},
            )
        for user, org in (("user_1", "org-a"), ("user_2", "org-a"), ("user_2", "org-b")):
            c.execute(
                sa.text("INSERT INTO memberships (user_id, org_id, role) VALUES (:u, :o, 'member')"),
                {"u": user, "o": org},
            )
    _migrate(database_url, "heads")
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT user_id, org_id, id, name FROM memberships ORDER BY user_id, org_id")).all()
    engine.dispose()
    assert [(u, o, n) for u, o, _, n in rows] == [
        ("user_1", "org-a", "Solo"),
        ("user_2", "org-a", ""),
        ("user_2", "org-b", ""),
    ]
    ids = [i for _, _, i, _ in rows]
    assert len(set(ids)) == 3 and all(i.startswith("mem_") for i in ids)
