"""Compute prices and unit economics through the admin API and the `yun` CLI, on the live server."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Cli, LiveServer
from yun.billing import BillingService
from yun.billing.compute import ComputeBilling
from yun.store import Database, DeploymentRepository
from yun.store.compute import ComputeInterval, ComputeRepository
from yun.tenancy import DEFAULT_ORG


@pytest.fixture
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=30) as c:
        yield c


def test_compute_prices_through_the_api(admin: httpx.Client) -> None:
    r = admin.put("/admin/compute-prices/cpu2-mem4096", json={"cost": "0.04", "price": 0.1})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("shape", "version", "cost", "price", "unit")} == {
        "shape": "cpu2-mem4096",
        "version": 1,
        "cost": "0.040000000",
        "price": "0.100000000",
        "unit": "USD per replica-hour",
    }
    assert admin.put("/admin/compute-prices/cpu2-mem4096", json={"price": "0.25"}).json()["version"] == 2
    history = admin.get("/admin/compute-prices/cpu2-mem4096").json()["data"]
    assert [(p["version"], p["cost"], p["price"]) for p in history] == [
        (1, "0.040000000", "0.100000000"),
        (2, "0.040000000", "0.250000000"),
    ]
    current = {p["shape"]: p for p in admin.get("/admin/compute-prices").json()["data"]}
    assert current["cpu2-mem4096"]["version"] == 2


@pytest.mark.parametrize(
    ("shape", "body", "status", "param"),
    [
        ("cpu1", {}, 400, "cost"),
        ("cpu1", {"cost": "-1"}, 400, "cost"),
        ("cpu1", {"price": "100001"}, 400, "price"),
        ("cpu1", {"cost": "1", "extra": 1}, 400, "extra"),
        ("CPU 1", {"cost": "1"}, 400, "shape"),
    ],
)
def test_bad_compute_prices_name_the_field(
    admin: httpx.Client, shape: str, body: dict[str, object], status: int, param: str
) -> None:
    r = admin.put(f"/admin/compute-prices/{shape}", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_an_unpriced_shape_is_404(admin: httpx.Client) -> None:
    r = admin.get("/admin/compute-prices/cpu64")
    assert r.status_code == 404 and "cpu64" in r.json()["error"]["message"]


def test_compute_prices_through_the_cli(cli: Cli) -> None:
    out = cli.run("prices", "compute", "set", "cpu1-gpu1", "--cost", "1.20", "--price", "2.50")
    assert out == "cpu1-gpu1: compute price version 1 (cost $1.200000000, price $2.500000000 per replica-hour)\n"
    assert "version 2" in cli.run("prices", "compute", "set", "cpu1-gpu1", "--price", "2.75")
    history = json.loads(cli.run("prices", "compute", "list", "cpu1-gpu1", "--json"))["data"]
    assert [(p["version"], p["cost"], p["price"]) for p in history] == [
        (1, "1.200000000", "2.500000000"),
        (2, "1.200000000", "2.750000000"),
    ]
    table = cli.run("prices", "compute", "list")
    assert "cpu1-gpu1" in table and "2.750000000" in table
    assert "give a cost, a price or both" in cli.fail("prices", "compute", "set", "cpu1-gpu1")
    assert "no compute price for the shape 'cpu99'" in cli.fail("prices", "compute", "list", "cpu99")


def test_economics_through_the_api_and_the_cli(admin: httpx.Client, live_server: LiveServer, cli: Cli) -> None:
    """Dedicated compute metered on the live server's database and billed by a compute biller (a second one:
    the server's own runs too, each second is billed once whichever does), then read back as unit economics:
    equal to the ledger's charges and to the intervals' cost."""
    org = admin.post("/admin/orgs", json={"name": "econ-org"}).json()["id"]
    admin.post(f"/admin/orgs/{org}/credits", json={"amount": "1"})
    admin.put("/admin/compute-prices/cpu3", json={"cost": "0.36", "price": "0.72"})  # 100,000 / 200,000 a second
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=300)
    db = Database(f"sqlite:///{live_server.data_dir / 'yun.db'}")
    try:
        interval = ComputeInterval(
            "econ-r1", "econ-dep", org, "econ-model", "cpu3", "node-a", start, start + timedelta(seconds=100), True
        )
        ComputeRepository(db).record([replace(interval, price_version=1, cost=10_000_000, price=20_000_000)], start)
        billing = BillingService(db, "econ-test", internal_orgs=frozenset({DEFAULT_ORG}))
        ComputeBilling(db, billing, DeploymentRepository(db), interval_s=60).bill()
    finally:
        db.dispose()
    charges = [e for e in admin.get(f"/admin/orgs/{org}/ledger").json()["data"] if e["kind"] == "charge"]
    assert [e["amount_nanodollars"] for e in charges] == [-20_000_000]

    by_org = admin.get("/admin/economics", params={"days": 2, "by": "org"}).json()
    mine = [r for r in by_org["data"] if r["org_id"] == org]
    assert sum(r["compute_revenue"] for r in mine) == sum(r["revenue"] for r in mine) == 20_000_000
    assert sum(r["cost"] for r in mine) == 10_000_000 and sum(r["replica_seconds"] for r in mine) == 100
    assert {"revenue_usd", "cost_usd", "margin_usd"} <= mine[0].keys()
    assert by_org["totals"]["revenue"] == sum(r["revenue"] for r in by_org["data"])
    for k in ("training_revenue", "training_cost", "training_seconds"):  # fine-tuning, beside replicas
        assert by_org["totals"][k] == sum(r[k] for r in by_org["data"]) and k in mine[0]
    assert mine[0]["training_revenue"] == mine[0]["training_seconds"] == 0
    by_model = admin.get("/admin/economics", params={"days": 2}).json()
    assert by_model["by"] == "model"
    assert sum(r["margin"] for r in by_model["data"] if r["model"] == "econ-model") == 10_000_000
    for bad in ({"by": "week"}, {"days": 0}, {"days": 3661}):
        r = admin.get("/admin/economics", params=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] in ("by", "days"), r.text

    table = cli.run("economics", "--days", "2", "--by", "org")
    assert org in table and re.search(r"^total: revenue \$\d+\.\d{9}, compute cost \$", table, re.M)
    assert "training $" in table and "training-s" in table
    assert json.loads(cli.run("economics", "--by", "model", "--json"))["by"] == "model"
    assert "by" in cli.fail("economics", "--by", "week")


def test_the_readme_compute_commands_work_as_written(cli: Cli) -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Compute by the second") :]
    block = section[
        section.index("```bash\n") + len("```bash\n") : section.index("```\n", section.index("```bash") + 7)
    ]
    steps = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [s[:2] for s in steps] == [["yun", "prices"], ["yun", "prices"], ["yun", "economics"]]
    outputs = [cli.run(*step[1:]) for step in steps]
    assert outputs[0].startswith("cpu1: compute price version ")
    assert "cpu1" in outputs[1] and "total: revenue $" in outputs[2]
