"""The console works offline: every script and style a page loads is served by Yun itself."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.api.conftest import Api
from tests.api.test_console_sessions import browser, new_user, sign_in

ASSET_RE = re.compile(r'(?:src|href)="([^"#]+)"')


async def test_every_asset_of_every_page_is_served_by_yun(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    async with browser(api) as b:
        pages = [(await b.get("/console/sign-in")).text]
        await sign_in(b, email)
        for path in ("/console", "/console/usage", "/console/keys", "/console/account"):
            pages.append((await b.get(path)).text)
        assets = {a for page in pages for a in ASSET_RE.findall(page) if a.startswith("/console/static/")}
        links = {a for page in pages for a in ASSET_RE.findall(page)}
        assert not {a for a in links if "//" in a}, "nothing is loaded from another host"
        assert {
            "/console/static/vendor/htmx-2.0.11.min.js",
            "/console/static/vendor/chart-4.6.2.umd.min.js",
            "/console/static/console.js",
            "/console/static/console.css",
        } <= assets
        # Assets need no session (they are the same for everyone); the licenses travel with them.
    async with browser(api) as anon:
        for asset in sorted(assets) + [
            "/console/static/vendor/htmx-LICENSE",
            "/console/static/vendor/chart.js-LICENSE.md",
        ]:
            r = await anon.get(asset)
            assert r.status_code == 200 and len(r.content) > 500, asset
        assert (await anon.get("/console/static/../router.py")).status_code == 404


async def test_the_free_tier_left_this_month(api: Api) -> None:
    """What the overview shows as free tier left: per model, the allowance (the org's own, else everyone's)
    less what the org used this month."""
    org, key = await api.new_org()
    other, other_key = await api.new_org()
    api.services.billing.set_free_allowance(org, "m", 1000)
    api.services.billing.set_free_allowance("*", "everyone", 50)
    await api.spend(org, "m", prompt=100, completion=20)
    r = await api.get("/v1/organization/free-tier", key)
    assert r.status_code == 200, r.text
    month = datetime.now(UTC).strftime("%Y-%m")
    assert r.json()["data"] == [
        {"model": "everyone", "month": month, "monthly_tokens": 50, "used": 0, "held": 0, "left": 50},
        {"model": "m", "month": month, "monthly_tokens": 1000, "used": 120, "held": 0, "left": 880},
    ]
    others = (await api.get("/v1/organization/free-tier", other_key)).json()["data"]
    assert [f["model"] for f in others] == ["everyone"]
    assert (await api.get("/v1/organization/free-tier", "yun-" + "x" * 43)).status_code == 401
