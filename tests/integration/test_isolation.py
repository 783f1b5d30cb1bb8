"""Tenants never see each other's keys, usage, balances or statements: every read and write endpoint,
tried with a foreign key, answers 404/403 or shows only the caller's own data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.conftest import Harness
from tests.integration.tenants import admin, new_org

pytestmark = pytest.mark.asyncio(loop_scope="session")
MSG = [{"role": "user", "content": "hi"}]


async def test_foreign_keys_cannot_reach_another_tenant(yun: Harness) -> None:
    org_a, key_a = await new_org(yun, "5")
    org_b, key_b = await new_org(yun, "5")
    ha, hb = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
    r = await yun.http.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 2}, headers=ha
    )
    assert r.status_code == 200
    a_request = r.json()["id"]
    a_keys = (await yun.http.get("/v1/organization/keys", headers=ha)).json()["data"]
    a_key_id = a_keys[0]["id"]
    a_member = (
        await yun.http.post("/v1/organization/members", json={"email": "ann@a.example", "role": "member"}, headers=ha)
    ).json()["id"]

    # Reads show only B's own data.
    b_keys = (await yun.http.get("/v1/organization/keys", headers=hb)).json()["data"]
    assert {k["org_id"] for k in b_keys} == {org_b} and a_key_id not in {k["id"] for k in b_keys}
    records = (await yun.http.get("/v1/organization/usage/records", headers=hb)).json()["data"]
    assert a_request not in {r["request_id"] for r in records} and records == []
    # Another tenant's request id is no paging cursor: refused, and nothing of A's leaks through it.
    r = await yun.http.get(f"/v1/organization/usage/records?after={a_request}", headers=hb)
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    page = (await yun.http.get("/v1/organization/usage/records?limit=1", headers=ha)).json()
    assert [x["request_id"] for x in page["data"]] == [a_request] and page["last_id"] == a_request
    assert page["has_more"] is False
    usage = (await yun.http.get("/v1/organization/usage", headers=hb)).json()
    assert usage["org_id"] == org_b and usage["data"] == []
    balance = (await yun.http.get("/v1/organization/balance", headers=hb)).json()
    assert balance["org_id"] == org_b and balance["balance"] == 5.0
    month = datetime.now(UTC).strftime("%Y-%m")
    statement = (await yun.http.get(f"/v1/organization/statements/{month}", headers=hb)).json()
    assert org_a not in str(statement) and "tiny" not in str(statement)
    members = (await yun.http.get("/v1/organization/members", headers=hb)).json()["data"]
    assert a_member not in {m["id"] for m in members}

    # Writes aimed at A's resources are not found.
    assert (await yun.http.delete(f"/v1/organization/keys/{a_key_id}", headers=hb)).status_code == 404
    assert (await yun.http.delete(f"/v1/organization/members/{a_member}", headers=hb)).status_code == 404
    # Platform endpoints refuse tenant keys outright.
    for method, path, body in [
        ("GET", "/admin/orgs", None),
        ("GET", f"/admin/orgs/{org_a}", None),
        ("POST", f"/admin/orgs/{org_a}/credits", {"amount": "100"}),
        ("POST", f"/admin/orgs/{org_a}/keys", {"name": "x"}),
        ("PUT", f"/admin/orgs/{org_a}/limits", {"rpm_limit": 1}),
        ("PUT", "/admin/prices/tiny", {"input": "0", "output": "0"}),
        ("GET", "/admin/prices/tiny", None),
        ("PUT", "/admin/free-allowances", {"model": "tiny", "monthly_tokens": 10**9, "org_id": org_b}),
    ]:
        r = await yun.http.request(method, path, json=body, headers=hb)
        assert r.status_code == 403, (method, path, r.status_code)

    # A is untouched: its key works, its balance moved only by its own request.
    assert (await yun.http.get("/v1/organization/keys", headers=ha)).status_code == 200
    a_balance = (await yun.http.get("/v1/organization/balance", headers=ha)).json()
    assert a_balance["org_id"] == org_a
    assert yun.services.billing.money.ledger_sum(org_a) == a_balance["balance_nanodollars"]
    # And the platform admin sees both.
    orgs = {o["id"] for o in (await yun.http.get("/admin/orgs", headers=admin(yun))).json()["data"]}
    assert {org_a, org_b} <= orgs


async def test_admin_input_is_validated(yun: Harness) -> None:
    h = admin(yun)
    org_id = (await yun.http.post("/admin/orgs", json={"name": "validation-org"}, headers=h)).json()["id"]
    cases = [
        ("POST", "/admin/orgs", {"name": ""}, 400),
        ("POST", "/admin/orgs", {"name": "x", "surprise": 1}, 400),
        ("POST", "/admin/orgs", {"name": "validation-org"}, 400),
        ("POST", f"/admin/orgs/{org_id}/credits", {"amount": "abc"}, 400),
        ("POST", f"/admin/orgs/{org_id}/credits", {"amount": "-5"}, 400),
        ("POST", f"/admin/orgs/{org_id}/credits", {"amount": "-5", "kind": "adjustment"}, 400),
        ("POST", f"/admin/orgs/{org_id}/credits", {"amount": "5", "kind": "gift"}, 400),
        ("POST", "/admin/orgs/org-nope/credits", {"amount": "5"}, 404),
        ("PUT", "/admin/prices/no-such-model", {"input": "1", "output": "1"}, 404),
        ("PUT", "/admin/prices/tiny", {"input": "-1", "output": "1"}, 400),
        ("PUT", "/admin/prices/tiny", {"input": "1", "output": "1", "cached_input": "2"}, 400),
        ("PUT", "/admin/free-allowances", {"model": "tiny", "monthly_tokens": -1}, 400),
        ("POST", f"/admin/orgs/{org_id}/keys", {"name": "k", "role": "emperor"}, 400),
    ]
    for method, path, body, status in cases:
        r = await yun.http.request(method, path, json=body, headers=h)
        assert r.status_code == status, (path, body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    # The same reference is posted once (idempotent retries of a top-up).
    for _ in range(2):
        r = await yun.http.post(f"/admin/orgs/{org_id}/credits", json={"amount": "3", "reference": "inv-1"}, headers=h)
    assert r.json()["posted"] is False and r.json()["balance"]["balance"] == 3.0
