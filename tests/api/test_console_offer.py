"""What a tenant is offered and runs (`/v1/organization/prices`, `/v1/organization/deployments`), the two
read-only calls the console's Models and Playground pages make, on SQLite and PostgreSQL: prices only of the
models the key may use, deployments and replica-seconds only of the caller's organization."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from tests.api.conftest import Api
from tests.api.test_console_assets import ASSET_RE
from tests.api.test_console_sessions import browser, csrf_of, new_user, sign_in
from tests.support.replicas import add_replica
from yun.billing.compute import ComputeBilling


async def test_prices_are_those_of_the_models_the_key_may_use(api: Api) -> None:
    api.services.catalog.add_external("priced", "http://127.0.0.1:9/v1")
    api.services.catalog.add_external("free", "http://127.0.0.1:9/v1")
    api.services.catalog.add_external("hidden", "http://127.0.0.1:9/v1")
    body = {"input": "0.50", "output": "1.50", "cached_input": "0.25", "training": "3"}
    r = await api.http.put("/admin/prices/priced", json=body, headers=api.auth())
    assert r.status_code == 200, r.text
    r = await api.http.put("/admin/prices/hidden", json=body, headers=api.auth())
    assert r.status_code == 200, r.text
    org_id, owner = await api.new_org()
    r = await api.http.post(
        "/v1/organization/keys",
        json={"name": "two models", "role": "member", "allowed_models": ["priced", "free"]},
        headers=api.auth(owner),
    )
    assert r.status_code == 201, r.text
    member = r.json()["secret"]

    r = await api.get("/v1/organization/prices", member)
    assert r.status_code == 200, r.text
    found = {p["model"]: p for p in r.json()["data"]}
    assert set(found) == {"priced", "free"}  # never the price of a model the key may not use
    assert found["priced"] == {
        "model": "priced",
        "priced": True,
        "version": 1,
        "input": "0.500000000",
        "cached_input": "0.250000000",
        "output": "1.500000000",
        "training": "3.000000000",
        "unit": "USD per 1M tokens",
    }
    assert found["free"] == {"model": "free", "priced": False, "unit": "USD per 1M tokens"}
    # A new version is what the list says at once.
    r = await api.http.put("/admin/prices/priced", json={**body, "output": "2"}, headers=api.auth())
    assert r.status_code == 200, r.text
    again = {p["model"]: p for p in (await api.get("/v1/organization/prices", member)).json()["data"]}
    assert (again["priced"]["version"], again["priced"]["output"]) == (2, "2.000000000")
    assert {p["model"] for p in (await api.get("/v1/organization/prices", owner)).json()["data"]} >= {
        "priced",
        "free",
        "hidden",
    }
    assert (await api.http.get("/v1/organization/prices")).status_code == 401


async def test_deployments_and_replica_seconds_are_the_orgs_own(api: Api) -> None:
    services = api.services
    org_a, key_a = await api.new_org()
    org_b, key_b = await api.new_org()
    services.billing.set_compute_price("cpu1", "1.80", "3.60")  # $0.001 a replica-second, dedicated
    services.deployments.create("m", deployment_id="a-dedicated", owner_org=org_a, replicas=1)
    services.deployments.create("m", deployment_id="b-dedicated", owner_org=org_b, replicas=1)
    services.deployments.create("m", deployment_id="shared", replicas=1)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    add_replica(services.db, "a-dedicated", "ra", "ready", created_at=t0, ready_at=t0)
    add_replica(services.db, "b-dedicated", "rb", "ready", created_at=t0, ready_at=t0)
    biller = ComputeBilling(services.db, services.billing, services.deployments, interval_s=60)
    # Off the loop, as the controller runs it: a hold is written by the money writer on this loop.
    await asyncio.to_thread(biller.bill, t0)
    await asyncio.to_thread(biller.bill, t0 + timedelta(seconds=90))

    r = await api.get("/v1/organization/deployments", key_a)
    assert r.status_code == 200, r.text
    [mine] = r.json()["data"]  # neither org B's nor the shared deployment
    assert {k: mine[k] for k in ("id", "model", "desired", "ready", "shape", "replica_seconds")} == {
        "id": "a-dedicated",
        "model": "m",
        "desired": 1,
        "ready": 1,
        "shape": "cpu1",
        "replica_seconds": 90,
    }
    assert (mine["charged"], mine["price_per_replica_hour"]) == ("0.090000000", "3.600000000")
    [theirs] = (await api.get("/v1/organization/deployments", key_b)).json()["data"]
    assert theirs["id"] == "b-dedicated" and theirs["replica_seconds"] == 90
    # An organization without dedicated compute has an empty list, not an error.
    _, key_c = await api.new_org()
    assert (await api.get("/v1/organization/deployments", key_c)).json()["data"] == []
    assert (await api.http.get("/v1/organization/deployments")).status_code == 401


async def test_the_tenant_pages_need_a_session_and_load_only_yuns_assets(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    pages = {"/console/models": "Models", "/console/playground": "Playground", "/console/fine-tuning": "Fine-tuning"}
    async with browser(api) as anon:
        for path in pages:
            r = await anon.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/console/sign-in", path
    async with browser(api) as b:
        await sign_in(b, email)
        assets: set[str] = set()
        for path, heading in pages.items():
            r = await b.get(path)
            assert r.status_code == 200 and f"<h1>{heading}</h1>" in r.text, path
            assert f'href="{path}" aria-current="page"' in r.text  # the nav says where you are
            links = set(ASSET_RE.findall(r.text))
            assert not {a for a in links if "//" in a}, "nothing is loaded from another host"
            assets |= {a for a in links if a.startswith("/console/static/")}
    assert {
        "/console/static/tenant.css",
        "/console/static/playground.js",
        "/console/static/models.js",
        "/console/static/fine_tuning.js",
    } <= assets
    async with browser(api) as anon:
        for asset in sorted(assets):
            r = await anon.get(asset)
            assert r.status_code == 200 and len(r.content) > 500, asset


async def test_a_session_reaches_its_own_orgs_files_only(api: Api) -> None:
    """The Fine-tuning page's calls, made with a member's session: another org's file is not found, to read
    or to delete, and a state change without the CSRF token is refused."""
    org_a, _ = await api.new_org()
    _, key_b = await api.new_org()
    lines = "".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}) + "\n"
        for i in range(10)
    )
    r = await api.http.post(
        "/v1/files",
        files={"file": ("b.jsonl", lines.encode(), "application/jsonl")},
        data={"purpose": "fine-tune"},
        headers=api.auth(key_b),
    )
    assert r.status_code == 200, r.text
    theirs = r.json()["id"]
    email = await new_user(api, org_a)
    async with browser(api) as b:
        await sign_in(b, email)
        token = await csrf_of(b)
        r = await b.post(
            "/v1/files", files={"file": ("a.jsonl", lines.encode())}, data={"purpose": "fine-tune"}, headers={}
        )
        assert r.status_code == 403, r.text  # no CSRF token
        r = await b.post(
            "/v1/files",
            files={"file": ("a.jsonl", lines.encode())},
            data={"purpose": "fine-tune"},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 200, r.text
        mine = r.json()["id"]
        listed = (await b.get("/v1/files")).json()["data"]
        assert [f["id"] for f in listed] == [mine]
        assert (await b.get(f"/v1/files/{theirs}")).status_code == 404
        r = await b.delete(f"/v1/files/{theirs}", headers={"X-CSRF-Token": token})
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
        assert (await b.get(f"/v1/fine_tuning/jobs/ftjob-{'0' * 24}/events")).status_code == 404
        assert (await b.get("/v1/fine_tuning/jobs")).json()["data"] == []
    assert (await api.get(f"/v1/files/{theirs}", key_b)).status_code == 200  # still there for its owner
