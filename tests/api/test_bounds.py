"""Item 15: out-of-range numbers, dates and NUL characters are a 400 naming the field, never a 500; a
posting that would overflow the balance is refused in the store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from yun.errors import InvalidRequest
from yun.store.money import INT64_MAX, MoneyRepository


async def _refused(api: Api, method: str, path: str, param: str, *, key: str | None = None, **kw: Any) -> None:
    r = await api.http.request(method, path, headers=api.auth(key), **kw)
    assert r.status_code == 400, (path, kw, r.status_code, r.text)
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, (path, kw, error)


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit"])
@pytest.mark.parametrize("value", [10**30, 2**31, 2**40, 2**63, 0, -5])
async def test_limits_past_what_the_store_holds(api: Api, field: str, value: int) -> None:
    org, key = await api.new_org()
    await _refused(api, "POST", "/admin/orgs", field, json={"name": "o", field: value})
    await _refused(api, "PUT", f"/admin/orgs/{org}/limits", field, json={field: value})
    await _refused(api, "POST", f"/admin/orgs/{org}/keys", field, json={"name": "k", field: value})
    await _refused(api, "POST", "/v1/organization/keys", field, key=key, json={"name": "k", field: value})


async def test_largest_limits_are_stored(api: Api) -> None:
    r = await api.http.post(
        "/admin/orgs", json={"name": "big", "rpm_limit": 10_000_000, "tpm_limit": 2**31 - 1}, headers=api.auth()
    )
    assert r.status_code == 201, r.text
    org = r.json()["id"]
    r = await api.get(f"/admin/orgs/{org}")
    assert (r.json()["rpm_limit"], r.json()["tpm_limit"]) == (10_000_000, 2**31 - 1)


_HUGE_CREDITS = [
    '{"amount": 1e400}',
    '{"amount": "1e400"}',
    '{"amount": 1e30}',
    '{"amount": "1000000000000000000000000000000"}',
    '{"amount": "NaN"}',
    '{"amount": "Infinity"}',
    '{"amount": 9223372037}',
    '{"amount": "1000000000.000000001"}',
    '{"amount": "-1e30", "kind": "adjustment"}',
]


@pytest.mark.parametrize("raw", _HUGE_CREDITS)
async def test_credits_past_what_a_balance_holds(api: Api, raw: str) -> None:
    org, _ = await api.new_org(credits=None)
    headers = {**api.auth(), "content-type": "application/json"}
    r = await api.http.post(f"/admin/orgs/{org}/credits", content=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "amount"
    assert api.services.billing.money.balance(org) == (0, 0)


async def test_a_credit_that_would_overflow_the_balance_is_refused_and_the_ledger_still_adds_up(api: Api) -> None:
    org, _ = await api.new_org(credits=None)
    for _ in range(9):  # $9e9: just under the $9.22e9 a BIGINT of nanodollars holds
        r = await api.http.post(f"/admin/orgs/{org}/credits", json={"amount": "1000000000"}, headers=api.auth())
        assert r.status_code == 201, r.text
    r = await api.http.post(f"/admin/orgs/{org}/credits", json={"amount": "1000000000"}, headers=api.auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "amount", r.text
    assert "largest" in r.json()["error"]["message"]
    money = api.services.billing.money
    balance, held = money.balance(org)
    assert balance == money.ledger_sum(org) == 9 * 10**18 and type(balance) is int and held == 0
    r = await api.get(f"/admin/orgs/{org}")
    assert r.json()["balance"]["balance_nanodollars"] == 9 * 10**18
    # What still fits is accepted, to the last nanodollar.
    r = await api.http.post(f"/admin/orgs/{org}/credits", json={"amount": "223372036.854775807"}, headers=api.auth())
    assert r.status_code == 201, r.text
    assert money.balance(org)[0] == money.ledger_sum(org) == INT64_MAX


async def test_the_store_refuses_an_overflowing_posting_without_the_wire_bound(api: Api) -> None:
    org, _ = await api.new_org(credits=None)
    money: MoneyRepository = api.services.billing.money
    assert money.credit(org, "grant", INT64_MAX - 5, "a")
    with pytest.raises(InvalidRequest) as refused:
        money.credit(org, "grant", 6, "b")
    assert refused.value.param == "amount"
    with pytest.raises(InvalidRequest):
        money.credit(org, "grant", 2**64, "c")
    with pytest.raises(InvalidRequest):
        money.credit(org, "adjustment", -(2**64), "d")
    assert money.credit(org, "grant", 5, "e")
    assert money.balance(org)[0] == money.ledger_sum(org) == INT64_MAX
    with pytest.raises(InvalidRequest):
        money.add_price("m", 10**30, 0, 0)
    with pytest.raises(InvalidRequest):
        money.set_free_allowance(org, "m", 10**30)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 1e30, "output": 1}, "input"),
        ({"input": "1", "output": "1e400"}, "output"),
        ({"input": "1", "output": "1", "cached_input": "1000000.000000001"}, "cached_input"),
        ({"input": -1, "output": 1}, "input"),
    ],
)
async def test_prices_past_what_the_store_holds(api: Api, body: dict[str, Any], param: str) -> None:
    await _refused(api, "PUT", "/admin/prices/some-model", param, json=body)


async def test_free_tokens_past_what_the_store_holds(api: Api) -> None:
    body = {"model": "m", "monthly_tokens": 10**30}
    await _refused(api, "PUT", "/admin/free-allowances", "monthly_tokens", json=body)


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "2026-13", "2026-1", "x"])
async def test_statement_months_out_of_range(api: Api, month: str) -> None:
    _, key = await api.new_org()
    await _refused(api, "GET", f"/v1/organization/statements/{month}", "month", key=key)


async def test_nul_characters_are_refused_everywhere(api: Api) -> None:
    org, key = await api.new_org()
    nul = "a\x00b"
    await _refused(api, "POST", "/admin/orgs", "name", json={"name": nul})
    await _refused(api, "POST", "/v1/organization/members", "email", key=key, json={"email": f"{nul}@x.example"})
    await _refused(api, "POST", "/v1/organization/members", "name", key=key, json={"email": "a@x.example", "name": nul})
    await _refused(api, "POST", "/v1/organization/keys", "name", key=key, json={"name": nul})
    await _refused(
        api, "POST", "/v1/organization/keys", "allowed_models.0", key=key, json={"name": "k", "allowed_models": [nul]}
    )
    await _refused(api, "POST", f"/admin/orgs/{org}/credits", "reference", json={"amount": "1", "reference": nul})
    await _refused(api, "POST", f"/admin/orgs/{org}/credits", "note", json={"amount": "1", "note": nul})
    await _refused(
        api, "PUT", "/admin/free-allowances", "org_id", json={"model": "m", "monthly_tokens": 1, "org_id": nul}
    )
    await _refused(api, "GET", "/admin/orgs/a%00b", "org")
    await _refused(api, "DELETE", "/v1/organization/keys/a%00b", "key_id", key=key)
    await _refused(api, "DELETE", "/v1/organization/members/a%00b", "member_id", key=key)
    await _refused(api, "GET", "/v1/organization/usage/records", "after", key=key, params={"after": nul})
    await _refused(api, "PUT", "/admin/prices/a%00b", "model_id", json={"input": 1, "output": 1})
    await _refused(api, "GET", "/admin/prices/a%00b", "model_id")


async def test_page_bounds(api: Api) -> None:
    _, key = await api.new_org()
    for params, param in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": 10**30}, "limit")):
        await _refused(api, "GET", "/v1/organization/usage/records", param, key=key, params=params)
    await _refused(api, "GET", "/v1/organization/usage/records", "after", key=key, params={"after": "x" * 81})
