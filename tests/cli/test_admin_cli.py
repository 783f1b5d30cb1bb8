"""Every admin command of the CLI over HTTP against a live server (item 8), with clear errors for wrong
input (item 10) and output people can copy from (item 11)."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, LiveServer
from tests.support.net import taken_port
from yun.cli import app as cli_app

KEY_ID = re.compile(r"key_[0-9a-f]{24}")
SECRET = re.compile(r"yun-[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def _narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what cut ids before: they must come out whole anyway


def test_login_stores_url_and_key_for_the_owner_only(live_server: LiveServer, bare_cli: Cli, cli_env: Path) -> None:
    assert "no API key" in bare_cli.fail("orgs", "list")
    out = bare_cli.run("login", live_server.url, input=live_server.admin_key + "\n")
    assert live_server.url in out
    saved = cli_env / "login.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert json.loads(saved.read_text()) == {"url": live_server.url, "api_key": live_server.admin_key}
    assert "org-default" in bare_cli.run("orgs", "list")  # no YUN_URL or YUN_API_KEY: the login is used
    assert "logged out" in bare_cli.run("logout")
    assert not saved.exists()
    assert "no API key" in bare_cli.fail("orgs", "list")


def test_login_refuses_a_wrong_or_tenant_key(live_server: LiveServer, bare_cli: Cli, cli_env: Path) -> None:
    wrong = "yun-" + "x" * 43
    assert "Incorrect API key" in bare_cli.fail("login", live_server.url, input=wrong + "\n")
    assert "platform admin" in bare_cli.fail("login", live_server.url, input=live_server.tenant_key + "\n")
    assert not (cli_env / "login.json").exists()


def test_a_server_that_is_not_there_is_named(bare_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    with taken_port(listen=False) as port:
        url = f"http://127.0.0.1:{port}"  # bound, never listening: refused
        monkeypatch.setenv("YUN_URL", url)
        monkeypatch.setenv("YUN_API_KEY", "yun-" + "x" * 43)
        line = bare_cli.fail("orgs", "list")
    assert url in line and "yun login" in line and "\n" not in line


def test_orgs_by_id_or_name_and_full_ids(cli: Cli) -> None:
    org_id = cli.run("orgs", "create", "acme-ids", "--rpm", "600").strip()
    assert re.fullmatch(r"org-[0-9a-f]{20}", org_id)
    listing = cli.run("orgs", "list")
    assert org_id in listing and "acme-ids" in listing
    by_name = json.loads(cli.run("orgs", "show", "acme-ids", "--json"))
    assert by_name["id"] == org_id and by_name["rpm_limit"] == 600
    assert json.loads(cli.run("orgs", "show", org_id, "--json"))["name"] == "acme-ids"
    assert "rpm=unlimited tpm=1000" in cli.run("orgs", "limits", "acme-ids", "--tpm", "1000")
    assert f"{org_id}: weight=2.5" in cli.run("orgs", "weight", "acme-ids", "2.5")
    assert json.loads(cli.run("orgs", "show", "acme-ids", "--json"))["weight"] == 2.5
    assert "already exists" in cli.fail("orgs", "create", "acme-ids")


def test_keys_create_list_revoke_with_whole_ids_at_80_columns(cli: Cli, live_server: LiveServer) -> None:
    cli.run("orgs", "create", "acme-keys")
    result = cli.runner.invoke(cli_app, ["keys", "create", "ci", "--org", "acme-keys"])
    assert result.exit_code == 0, result.output
    secret = SECRET.search(result.stdout)
    key_id = KEY_ID.search(result.stderr)
    assert secret is not None and key_id is not None
    listing = cli.run("keys", "list", "--org", "acme-keys")
    assert key_id.group(0) in listing and secret.group(0) not in listing
    keys = json.loads(cli.run("keys", "list", "--org", "acme-keys", "--json"))["data"]
    assert [k["id"] for k in keys] == [key_id.group(0)]
    cli.run("keys", "revoke", key_id.group(0))
    assert json.loads(cli.run("keys", "list", "--org", "acme-keys", "--json"))["data"][0]["revoked_at"]
    assert "no API key 'key_missing'" in cli.fail("keys", "revoke", "key_missing")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["usage", "nope"], "no organization 'nope'"),
        (["statement", "nope", "2026-11"], "no organization 'nope'"),
        (["credits", "balance", "nope"], "no organization 'nope'"),
        (["credits", "grant", "nope", "5"], "no organization 'nope'"),
        (["ledger", "nope"], "no organization 'nope'"),
        (["orgs", "show", "nope"], "no organization 'nope'"),
        (["keys", "create", "k", "--org", "nope"], "no organization 'nope'"),
        (["keys", "list", "--org", "nope"], "no organization 'nope'"),
        (["members", "list", "nope"], "no organization 'nope'"),
        (["prices", "list", "nope"], "'nope' does not exist"),
        (["prices", "set", "nope", "--input", "1", "--output", "1"], "'nope' does not exist"),
        (["models", "show", "nope"], "'nope' does not exist"),
        (["models", "remove", "nope"], "no model 'nope'"),
        (["keys", "create", "k", "--rpm", "-5"], "rpm_limit"),
        (["keys", "create", "k", "--tpm", "0"], "tpm_limit"),
        (["orgs", "create", "x-limits", "--rpm", "-5"], "rpm_limit"),
        (["orgs", "weight", "org-default", "0"], "weight"),
        (["orgs", "weight", "nope", "2"], "no organization 'nope'"),
        (["statement", "org-default", "1999-12"], "month"),
        (["statement", "org-default", "12-2026"], "month"),
        (["usage", "org-default", "--by", "week"], "group_by"),
        (["credits", "grant", "org-default", "--", "-5"], "amount"),
        (["models", "add", "x"], "exactly one of --file"),
        (["models", "add", "x", "--file", "/nonexistent.gguf"], "no such file: /nonexistent.gguf"),
        (["models", "add", "bad id!", "--url", "http://h"], "model ids are"),
        (["models", "add", "x", "--url", "ftp://h"], "url must start with http"),
    ],
)
def test_wrong_input_is_one_clear_line(cli: Cli, args: list[str], says: str) -> None:
    line = cli.fail(*args)
    assert says in line and line.startswith("error: ") and "\n" not in line, line


def test_free_tier_for_an_unknown_org_or_model(cli: Cli, live_server: LiveServer, tiny_model: Path) -> None:
    cli.run("models", "add", "tiny-free", "--url", "http://127.0.0.1:9", "--upstream-model", "x")
    assert "no organization 'nope'" in cli.fail("free-tier", "tiny-free", "1000", "--org", "nope")
    assert "does not exist" in cli.fail("free-tier", "no-such-model", "1000")
    cli.run("orgs", "create", "acme-free")
    out = cli.run("free-tier", "tiny-free", "1000", "--org", "acme-free")
    assert "1000 free tokens a month for org-" in out
    cli.run("models", "remove", "tiny-free")


def test_expiry_in_the_past_is_refused(cli: Cli) -> None:
    result = cli.runner.invoke(cli_app, ["keys", "create", "k", "--expires-days", "-1"])
    assert result.exit_code == 2 and "--expires-days" in result.output


def test_models_add_list_show_remove(cli: Cli, tiny_model: Path) -> None:
    cli.run("models", "add", "my-tiny", "--file", str(tiny_model), "--license", "apache-2.0")
    cli.run("models", "add", "remote", "--url", "http://u:secret@127.0.0.1:9/", "--upstream-model", "x")
    listing = cli.run("models", "list")
    assert "my-tiny" in listing and "qwen2" in listing and "remote" in listing
    shown = json.loads(cli.run("models", "show", "my-tiny", "--json"))
    # The served context (the server's engine.context_per_slot, 512 here), and the file's own.
    assert shown["card"]["context_length"] == 512 and shown["card"]["trained_context_length"] == 4096
    assert shown["card"]["license"] == "apache-2.0"
    readable = cli.run("models", "show", "my-tiny")
    assert re.search(r"^context_length\s+512$", readable, re.M) and str(tiny_model) in readable
    cli.run("models", "add", "tiny-2k", "--file", str(tiny_model), "--context", "2048")
    assert json.loads(cli.run("models", "show", "tiny-2k", "--json"))["card"]["context_length"] == 2048
    assert re.search(r"tiny-2k .*2048", cli.run("models", "list"))
    assert "context must be between" in cli.fail("models", "add", "x", "--url", "http://h", "--context", "0")
    cli.run("models", "remove", "tiny-2k")
    remote = json.loads(cli.run("models", "show", "remote", "--json"))
    assert "secret" not in json.dumps(remote) and remote["url"] == "http://u:***@127.0.0.1:9"
    assert {m["id"] for m in json.loads(cli.run("models", "list", "--json"))["data"]} >= {"my-tiny", "remote"}
    cli.run("models", "remove", "remote")
    cli.run("models", "remove", "my-tiny")
    assert "remote" not in cli.run("models", "list")


def test_money_commands(cli: Cli) -> None:
    cli.run("models", "add", "priced", "--url", "http://127.0.0.1:9", "--upstream-model", "x")
    org = cli.run("orgs", "create", "acme-money").strip()
    assert "price version 1" in cli.run("prices", "set", "priced", "--input", "0.05", "--output", "0.10")
    assert "price version 2" in cli.run("prices", "set", "priced", "--input", "0.06", "--output", "0.12")
    history = json.loads(cli.run("prices", "list", "priced", "--json"))["data"]
    assert [(p["version"], p["input"]) for p in history] == [(1, "0.050000000"), (2, "0.060000000")]
    assert "0.060000000" in cli.run("prices", "list")
    assert "posted; balance $25.000000000" in cli.run("credits", "grant", "acme-money", "25", "--reference", "r1")
    assert "already posted" in cli.run("credits", "grant", org, "25", "--reference", "r1")
    assert json.loads(cli.run("credits", "balance", "acme-money", "--json"))["balance_nanodollars"] == 25 * 10**9
    assert "available $25.000000000" in cli.run("credits", "balance", org)
    ledger = json.loads(cli.run("ledger", "acme-money", "--json"))["data"]
    assert [(e["kind"], e["amount_usd"], e["reference"]) for e in ledger] == [("grant", "25.000000000", "r1")]
    assert "r1" in cli.run("ledger", org)
    assert json.loads(cli.run("usage", "acme-money", "--json"))["data"] == []
    cli.run("usage", org, "--days", "7", "--by", "day")
    rows = list(csv.reader(io.StringIO(cli.run("statement", "acme-money", "2026-11", "--csv"))))
    assert rows[0] == ["section", "model_id", "kind", "quantity", "amount_usd"]
    assert json.loads(cli.run("statement", org, "2026-11"))["org_id"] == org
    cli.run("models", "remove", "priced")


def test_members(cli: Cli) -> None:
    cli.run("orgs", "create", "acme-people")
    out = cli.run("members", "add", "acme-people", "ann@acme.example", "--name", "Ann", "--role", "admin")
    member_id = out.split()[0]
    assert "ann@acme.example" in cli.run("members", "list", "acme-people")
    assert json.loads(cli.run("members", "list", "acme-people", "--json"))["data"][0]["role"] == "admin"
    cli.run("orgs", "create", "acme-people-2")
    cli.run("members", "add", "acme-people-2", "ann@acme.example", "--role", "billing-viewer")
    users = {u["email"]: u for u in json.loads(cli.run("users", "list", "--json"))["data"]}
    ann = users["ann@acme.example"]
    assert member_id in {m["member_id"] for m in ann["memberships"]}
    assert {(m["org_name"], m["role"]) for m in ann["memberships"]} == {
        ("acme-people", "admin"),
        ("acme-people-2", "billing-viewer"),
    }
    assert member_id in cli.run("users", "list")
    cli.run("members", "remove", "acme-people", member_id)
    assert json.loads(cli.run("members", "list", "acme-people", "--json"))["data"] == []


def test_status(cli: Cli, live_server: LiveServer) -> None:
    out = cli.run("status")
    assert live_server.url in out
    data = json.loads(cli.run("status", "--json"))
    assert data["health"]["status"] in ("ok", "degraded") and data["url"] == live_server.url


def test_hub_source_fails_cleanly_offline(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path is real code (run by the server); with the hub unreachable it says so, not crash."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = cli.fail("models", "add", "h", "--hub", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "--hub-file", "x.gguf")
    assert "could not fetch Qwen/Qwen2.5-0.5B-Instruct-GGUF/x.gguf from the hub" in line and "(HTTP 400)" in line


def test_usage_and_statement_show_training_as_its_own_line(cli: Cli, live_server: LiveServer) -> None:
    """A job's trained tokens, settled through the money path into the server's database, in `yun usage`
    (the trained column, input 0) and `yun statement` (a training_tokens line that reconciles)."""
    from datetime import UTC, datetime

    from yun.billing import BillingService
    from yun.billing.training import TrainingBilling
    from yun.store import Database

    org = cli.run("orgs", "create", "acme-training").strip()
    cli.run("credits", "grant", org, "10")
    db = Database(f"sqlite:///{live_server.data_dir / 'yun.db'}")
    try:
        billing = BillingService(db, "gw-cli-test")
        billing.money.add_price("trained-base", 0, 0, 0, 2_000_000_000)  # $2 per 1M trained tokens
        training = TrainingBilling(billing)
        hold = training.reserve("ftjob-cli", org, "key", "trained-base", 5000)
        assert training.settle(hold, 4000, "ok", 3.0, "job:ftjob-cli") == 8_000_000
    finally:
        db.dispose()
    header, _rule, row = cli.run("usage", org).splitlines()[:3]
    cells = dict(zip(header.replace("cost $", "cost").split(), row.split(), strict=True))
    assert (cells["model"], cells["requests"], cells["input"], cells["trained"]) == ("trained-base", "0", "0", "4000")
    month = datetime.now(UTC).strftime("%Y-%m")
    rows = list(csv.reader(io.StringIO(cli.run("statement", org, month, "--csv"))))
    assert ["usage", "trained-base", "training_tokens", "4000", "0.008000000"] in rows
    assert rows[-1][2:4] == ["reconciled", "true"]
