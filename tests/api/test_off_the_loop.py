"""No database call runs on the event loop in the admin and organization endpoints, nor in verifying an
API key (PostgreSQL, where each one is a network round trip that would stall every request in flight).
See tests/unit/test_off_the_loop.py for the inference path.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from tests.api.conftest import Api
from tests.unit.test_off_the_loop import Statements


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_admin_and_organization_endpoints_run_no_statement_on_the_loop(api: Api) -> None:
    org_id, key = await api.new_org(credits="5")
    await api.spend(org_id)
    recorded = Statements(api.services.db)
    recorded.start()
    api.services.keys.forget_cache()  # every key below is verified from the database
    api.services.billing.invalidate()
    loop = threading.get_ident()
    month = datetime.now(UTC).strftime("%Y-%m")
    admin = [
        "/admin/orgs",
        f"/admin/orgs/{org_id}",
        f"/admin/orgs/{org_id}/balance",
        f"/admin/orgs/{org_id}/keys",
        f"/admin/orgs/{org_id}/ledger",
        f"/admin/orgs/{org_id}/usage",
        f"/admin/orgs/{org_id}/statements/{month}",
        f"/admin/orgs/{org_id}/members",
        "/admin/prices",
        "/admin/free-allowances",
        "/admin/keys",
        "/admin/users",
        "/admin/models",
    ]
    tenant = [
        "/v1/organization/balance",
        "/v1/organization/keys",
        "/v1/organization/members",
        "/v1/organization/usage",
        "/v1/organization/usage/records",
        f"/v1/organization/statements/{month}",
        "/v1/models",
    ]
    for path in admin:
        r = await api.get(path)
        assert r.status_code == 200, (path, r.text)
    for path in tenant:
        r = await api.get(path, key)
        assert r.status_code == 200, (path, r.text)
    api.services.keys.forget_cache()
    r = await api.http.post(
        "/v1/chat/completions", json={"model": "none", "messages": []}, headers=api.auth(key)
    )  # verified, then refused: no such model
    assert r.status_code in (400, 404), r.text
    r = await api.http.post(f"/admin/orgs/{org_id}/credits", json={"amount": "1"}, headers=api.auth())
    assert r.status_code == 201, r.text
    assert recorded.seen, "the endpoints were meant to read the database"
    assert recorded.on(loop) == []
