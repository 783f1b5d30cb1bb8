"""Compute prices and unit economics through the admin API and the `yun` CLI, on the live server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.cli.conftest import Cli, LiveServer


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
