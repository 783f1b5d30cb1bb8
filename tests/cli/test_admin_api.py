"""The /admin API the CLI stands on: every route needs a platform-admin key, and any org is named by id
or by name, on the live server of this package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.cli.conftest import LiveServer


@pytest.fixture
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=30) as c:
        yield c


def test_every_admin_operation_needs_a_platform_admin_key(live_server: LiveServer) -> None:
    """Every /admin operation the server documents: 401 without a key, 403 with a tenant's key."""
    with httpx.Client(base_url=live_server.url, trust_env=False, timeout=30) as c:
        paths = c.get("/openapi.json").json()["paths"]
        operations = [
            (method.upper(), re.sub(r"\{(\w+)\}", lambda m: "2026-11" if m[1] == "month" else "x", path))
            for path, ops in paths.items()
            if path.startswith("/admin")
            for method in ops
        ]
        assert len(operations) > 20
        tenant = {"Authorization": f"Bearer {live_server.tenant_key}"}
        answers = {
            (method, path): (
                c.request(method, path, json={}).status_code,
                c.request(method, path, json={}, headers=tenant).status_code,
            )
            for method, path in operations
        }
    assert {op: got for op, got in answers.items() if got != (401, 403)} == {}


def test_orgs_by_id_or_name_on_every_org_route(admin: httpx.Client) -> None:
    org = admin.post("/admin/orgs", json={"name": "api-by-name"}).json()
    for ref in (org["id"], "api-by-name"):
        assert admin.get(f"/admin/orgs/{ref}").json()["id"] == org["id"]
        assert admin.get(f"/admin/orgs/{ref}/balance").json()["org_id"] == org["id"]
        assert admin.get(f"/admin/orgs/{ref}/usage").json()["org_id"] == org["id"]
        assert admin.get(f"/admin/orgs/{ref}/ledger").json()["org_id"] == org["id"]
        assert admin.get(f"/admin/orgs/{ref}/statements/2026-11").json()["org_id"] == org["id"]
        assert admin.get(f"/admin/orgs/{ref}/members").status_code == 200
        assert admin.get("/admin/keys", params={"org": ref}).status_code == 200
    r = admin.post("/admin/orgs/api-by-name/credits", json={"amount": "1"})
    assert r.status_code == 201 and r.json()["org_id"] == org["id"]


@pytest.mark.parametrize(
    "path",
    [
        "/admin/orgs/nope",
        "/admin/orgs/nope/balance",
        "/admin/orgs/nope/usage",
        "/admin/orgs/nope/ledger",
        "/admin/orgs/nope/statements/2026-11",
        "/admin/orgs/nope/members",
        "/admin/orgs/nope/keys",
        "/admin/keys?org=nope",
        "/admin/prices/nope",
        "/admin/models/nope",
    ],
)
def test_unknown_names_are_404_not_zeros(admin: httpx.Client, path: str) -> None:
    r = admin.get(path)
    assert r.status_code == 404, r.text
    assert "nope" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "k", "rpm_limit": -5}, "rpm_limit"),
        ({"name": "k", "tpm_limit": 2**31}, "tpm_limit"),
        ({"name": "k", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_key_bounds_name_the_field(admin: httpx.Client, body: dict[str, object], param: str) -> None:
    r = admin.post("/admin/orgs/org-default/keys", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_usage_days_are_inclusive_and_bounded(admin: httpx.Client) -> None:
    today = datetime.now(UTC).date().isoformat()
    r = admin.get("/admin/orgs/org-default/usage", params={"start": today, "end": today})
    assert r.status_code == 200 and (r.json()["start"], r.json()["end"]) == (today, today)
    assert admin.get("/admin/orgs/org-default/usage", params={"end": "0001-01-01"}).status_code == 400
    assert admin.get("/admin/orgs/org-default/usage", params={"start": today, "end": "2000-01-01"}).status_code == 400
    assert admin.get("/admin/orgs/org-default/statements/9999-12").status_code == 400


def test_usage_range_is_inclusive_at_both_ends(admin: httpx.Client, live_server: LiveServer) -> None:
    """A rollup on day D shows in start=end=D and in no range that ends the day before or starts the day after."""
    import sqlite3
    from datetime import date, timedelta

    org = admin.post("/admin/orgs", json={"name": "api-days"}).json()["id"]
    day = date(2026, 3, 15)
    with sqlite3.connect(live_server.data_dir / "yun.db") as c:  # test data: one rollup row, written as settling does
        c.execute(
            "INSERT INTO usage_rollups (org_id, model_id, day, requests, prompt_tokens, completion_tokens, "
            "cached_tokens, free_tokens, input_cost, cached_input_cost, output_cost, cost) "
            "VALUES (?, 'm', ?, 1, 10, 5, 0, 0, 100, 0, 50, 150)",
            (org, day.isoformat()),
        )

    def requests(start: date, end: date) -> int:
        r = admin.get(f"/admin/orgs/{org}/usage", params={"start": start.isoformat(), "end": end.isoformat()})
        assert r.status_code == 200, r.text
        return sum(row["requests"] for row in r.json()["data"])

    one = timedelta(days=1)
    assert requests(day, day) == 1
    assert requests(day - 5 * one, day) == 1 and requests(day, day + 5 * one) == 1
    assert requests(day - 5 * one, day - one) == 0
    assert requests(day + one, day + 5 * one) == 0
