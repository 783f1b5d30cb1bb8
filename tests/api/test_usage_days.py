"""Item 4: usage over HTTP covers inclusive UTC days, today included, with clear errors at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine

from tests.api.conftest import Api


def _days(body: dict[str, object]) -> dict[str, int]:
    return {row["key"]: row["requests"] for row in body["data"]}  # type: ignore[attr-defined, index]


async def test_usage_shows_what_was_spent_today(api: Api) -> None:
    org, key = await api.new_org()
    await api.spend(org)
    today = datetime.now(UTC).date().isoformat()
    for params in ({}, {"start": today, "end": today}, {"end": today}, {"start": today}):
        r = await api.get("/v1/organization/usage", key, **params)
        assert r.status_code == 200, r.text
        assert [(row["key"], row["requests"]) for row in r.json()["data"]] == [("m", 1)], params
    r = await api.get("/v1/organization/usage", key, group_by="day")
    assert _days(r.json()) == {today: 1}


async def test_days_are_inclusive_utc_days_at_midnight(api: Api) -> None:
    org, key = await api.new_org()
    day, next_day = date(2031, 3, 14), date(2031, 3, 15)
    with time_machine.travel(datetime(2031, 3, 14, 23, 59, 59, 999_000, tzinfo=UTC), tick=False):
        await api.spend(org)
    with time_machine.travel(datetime(2031, 3, 15, 0, 0, 0, tzinfo=UTC), tick=False):
        await api.spend(org)
        await api.spend(org)

    async def days(**params: str) -> dict[str, int]:
        r = await api.get("/v1/organization/usage", key, group_by="day", **params)
        assert r.status_code == 200, r.text
        return _days(r.json())

    assert await days(start=day.isoformat(), end=day.isoformat()) == {"2031-03-14": 1}
    assert await days(start=next_day.isoformat(), end=next_day.isoformat()) == {"2031-03-15": 2}
    assert await days(start=day.isoformat(), end=next_day.isoformat()) == {"2031-03-14": 1, "2031-03-15": 2}
    assert await days(start="2031-03-13", end="2031-03-13") == {}
    assert await days(start="2031-03-16", end="2031-03-16") == {}
    # Without start, the 30 days ending at `end` (both included).
    assert await days(end=next_day.isoformat()) == {"2031-03-14": 1, "2031-03-15": 2}
    assert await days(end=(day + timedelta(days=29)).isoformat()) == {"2031-03-14": 1, "2031-03-15": 2}
    assert await days(end=(day + timedelta(days=30)).isoformat()) == {"2031-03-15": 2}
    # The CLI's path (the same query service) agrees with the HTTP answer.
    rows = api.services.usage.summary(org, day, day, "day")
    assert [(r.key, r.requests) for r in rows] == [("2031-03-14", 1)]


@pytest.mark.parametrize("caller", ["tenant", "admin"])
async def test_date_edges_are_clear_errors(api: Api, caller: str) -> None:
    """The same day rules for an org's own usage and for an admin's view of any org's."""
    org, owner_key = await api.new_org()
    path, key = ("/v1/organization/usage", owner_key) if caller == "tenant" else (f"/admin/orgs/{org}/usage", None)

    async def refused(**params: str) -> str:
        r = await api.get(path, key, **params)
        assert r.status_code == 400, (params, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        return str(error["param"])

    assert await refused(start="2030-01-02", end="2030-01-01") == "start"
    assert await refused(end="0001-01-01") == "end"
    assert await refused(start="0001-01-01", end="2030-01-01") == "start"
    assert await refused(end="9999-12-31") == "end"
    assert await refused(start="1999-12-31", end="2000-01-01") == "start"
    assert await refused(start="2000-01-01", end="2199-12-31") == "start"  # more than ten years
    assert await refused(end="2030-02-30") == "end"
    assert await refused(end="yesterday") == "end"
    # Far dates inside the bounds are simply empty.
    for start, end in (("2000-01-01", "2000-01-01"), ("2199-12-31", "2199-12-31"), ("2000-01-01", "2009-12-31")):
        r = await api.get(path, key, start=start, end=end)
        assert r.status_code == 200 and r.json()["data"] == [], r.text
    r = await api.get(path, key, end="2000-01-01")
    assert r.status_code == 200 and r.json()["start"] == "2000-01-01"
