"""`yun deployments` over HTTP against the live server of this package (whose controller acts on what the
commands write): every command, people's output and --json, one clear line for wrong input, and the
README's Deployments steps as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.cli.conftest import NO_ENGINE, Cli, Deployable, LiveServer, until
from tests.support.registry import engine_access

README = Path(__file__).resolve().parents[2] / "README.md"
README_MODEL = "qwen2.5-coder-0.5b-instruct"
FAILS = shlex.join(NO_ENGINE)


@pytest.fixture(autouse=True)
def _narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # ids and messages must still come out whole


def _gone(cli: Cli, deployment_id: str) -> None:
    until(lambda: deployment_id not in cli.run("deployments", "list"), f"{deployment_id} removed by the controller")


def test_create_list_show_scale_update_delete(cli: Cli, deployable: Deployable) -> None:
    dep = cli.run(
        "deployments", "create", deployable.model, "--min", "0", "--replicas", "0", "--max", "3", "--command", FAILS
    ).strip()
    assert re.fullmatch(r"dep-[0-9a-f]{12}", dep)
    listing = cli.run("deployments", "list", "--model", deployable.model)
    assert re.search(
        rf"^\s*{dep}\s+{deployable.model}\s+shared\s+llamacpp\s+0/0 \(0-3\)\s+cpu1\s+1\s+active", listing, re.M
    )
    listed = json.loads(cli.run("deployments", "list", "--model", deployable.model, "--json"))["data"]
    assert dep in [d["id"] for d in listed]
    assert "2 replicas desired (min 0, max 3), 0 ready" in cli.run("deployments", "scale", dep, "2")
    assert "1 replicas desired (min 0, max 1)" in cli.run("deployments", "scale", dep, "--max", "1")
    command = f"{FAILS} --port {{port}} --model '{{model}}'"
    assert "generation 2; its replicas are replaced" in cli.run(
        "deployments", "update", dep, "--threads", "2", "--command", command
    )
    assert "updated (generation 2, replicas keep running)" in cli.run(
        "deployments", "update", dep, "--idle-timeout", "60", "--autoscale", '{"target_in_flight": 3}'
    )
    shown = cli.run("deployments", "show", dep)
    assert re.search(r"^replicas\s+0 ready of 1 desired \(min 0, max 1\)$", shown, re.M), shown
    assert re.search(r"^engine args\s+threads 2, parallel default, context default$", shown, re.M), shown
    assert re.search(rf"^command\s+{FAILS} --port '\{{port\}}' --model '\{{model\}}'$", shown, re.M), shown
    assert re.search(r"^autoscale\s+target_in_flight 3$", shown, re.M), shown
    full = json.loads(cli.run("deployments", "show", dep, "--json"))
    assert full["command"] == [*NO_ENGINE, "--port", "{port}", "--model", "{model}"] and full["idle_timeout_s"] == 60
    assert "generation 3" in cli.run("deployments", "update", dep, "--reset", "threads", "--reset", "idle-timeout-s")
    reset = json.loads(cli.run("deployments", "show", dep, "--json"))
    assert (reset["threads"], reset["idle_timeout_s"]) == (None, None)
    assert f"deleting {dep}: the controller stops its replicas, then removes it" in cli.run(
        "deployments", "delete", dep
    )
    _gone(cli, dep)


def test_dedicated_to_an_org(cli: Cli, deployable: Deployable) -> None:
    org = cli.run("orgs", "create", "dep-cli-owner").strip()
    dep = cli.run(
        "deployments", "create", deployable.model, "--id", "cli-dedicated", "--owner", "dep-cli-owner", "--min", "0",
        "--replicas", "0", "--engine", "vllm", "--cpus", "4", "--gpus", "1", "--memory-mb", "16384",
    ).strip()  # fmt: skip
    assert dep == "cli-dedicated"
    listing = cli.run("deployments", "list", "--owner", "dep-cli-owner")
    assert re.search(rf"^\s*cli-dedicated\s+{deployable.model}\s+{org}\s+vllm\s+.*cpu4-gpu1-mem16384", listing, re.M)
    assert "4 CPU, 1 GPU, 16384 MiB per replica (cpu4-gpu1-mem16384)" in cli.run("deployments", "show", dep)
    cli.run("deployments", "delete", dep)


def test_show_prints_the_replicas(cli: Cli, deployable: Deployable, live_server: LiveServer) -> None:
    """The shared deployment the controller made for the model: its one real replica, never its secret."""
    endpoint, headers = engine_access(live_server.data_dir, deployable.default)
    shown = cli.run("deployments", "show", deployable.default)
    assert re.search(r"^replicas\s+1 ready of 1 desired \(min 1, max 1\)$", shown, re.M), shown
    assert re.search(rf"^\s*\S+\s+ready\s+1\s+\S+\s+{re.escape(endpoint)}\s+0\s+\d{{4}}-", shown, re.M), shown
    secret = headers["Authorization"].removeprefix("Bearer ")
    for out in (shown, cli.run("deployments", "show", deployable.default, "--json"), cli.run("deployments", "list")):
        assert secret not in out


def test_show_says_why_a_replica_failed(cli: Cli, deployable: Deployable) -> None:
    dep = cli.run("deployments", "create", deployable.model, "--command", FAILS).strip()

    def failed() -> str | None:
        out = cli.run("deployments", "show", dep)
        return out if " failed: " in out else None

    shown = until(failed, "a failed replica of a deployment whose engine exits at once")
    assert re.search(rf"^{dep}-[0-9a-f]{{8}} failed: \S", shown, re.M), shown
    assert re.search(r"^message\s+replica failed \(\d+ in a row\), next try in", shown, re.M), shown
    assert re.search(r"^\s*\S+\s+failed\s+1\s", shown, re.M), shown  # in the replica table too
    cli.run("deployments", "delete", dep)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show", "dep-nope"], "no deployment 'dep-nope'"),
        (["delete", "dep-nope"], "no deployment 'dep-nope'"),
        (["scale", "dep-nope", "1"], "no deployment 'dep-nope'"),
        (["create", "no-such-model"], "'no-such-model' does not exist"),
        (["create", "{model}", "--owner", "nope"], "no organization 'nope'"),
        (["create", "{model}", "--engine", "tgi"], "'engine'"),
        (["create", "{model}", "--replicas", "3", "--max", "2"], "replicas must be between min (1) and max (2)"),
        (["create", "{model}", "--cpus", "0"], "'cpus'"),
        (["create", "{model}", "--context", "1"], "'context'"),
        (["create", "{model}", "--command", "a 'b"], "--command: No closing quotation"),
        (["create", "{model}", "--command", "engine --key {secret}"], "must not carry {secret}"),
        (["scale", "{dep}"], "give a replica count, --min or --max"),
        (["scale", "{dep}", "5"], "replicas must be between min (0) and max (1)"),
        (["update", "{dep}"], "nothing to change"),
        (["update", "{dep}", "--reset", "owner"], "--reset owner: not a field that has a default"),
        (["update", "{dep}", "--threads", "0"], "'threads'"),
        (["list", "--owner", "nope"], "no organization 'nope'"),
        (["list", "--model", "nope"], "'nope' does not exist"),
    ],
)
def test_wrong_input_is_one_clear_line(cli: Cli, deployable: Deployable, args: list[str], says: str) -> None:
    dep = cli.run("deployments", "create", deployable.model, "--min", "0", "--replicas", "0").strip()
    line = cli.fail("deployments", *[a.replace("{model}", deployable.model).replace("{dep}", dep) for a in args])
    assert says in line and line.startswith("error: ") and "\n" not in line, line
    cli.run("deployments", "delete", dep)


def test_typos_are_named(cli: Cli) -> None:
    assert "No such command 'lst'" in cli.fail("deployments", "lst")
    assert "No such option: --replica" in cli.fail("deployments", "create", "m", "--replica", "2")


def _readme_steps() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("### Deployments") :]
    start = section.index("```bash\n") + len("```bash\n")
    return [shlex.split(line, comments=True) for line in section[start : section.index("```", start)].splitlines()]


def test_the_readme_steps_work_as_written(cli: Cli, deployable: Deployable) -> None:
    """The README's Deployments steps in order, with the tiny model standing in for the bundled one and
    `acme` created and credited first (as the README's tenants steps do). The controller runs what they ask for."""
    steps = _readme_steps()
    assert [s[:2] for s in steps] == [["yun", "deployments"]] * len(steps)
    assert [s[2] for s in steps] == ["create", "list", "scale", "update", "show", "delete"]
    cli.run("orgs", "create", "acme")
    cli.run("credits", "grant", "acme", "25")  # as the README's tenants steps do: dedicated compute is held ahead
    out = {}
    for step in steps:
        out[step[2]] = cli.run(*[deployable.model if a == README_MODEL else a for a in step[1:]])
    assert out["create"] == "qwen-acme\n"
    assert re.search(r"^\s*qwen-acme\s+\S+\s+org-[0-9a-f]{20}\s+llamacpp\s+\d/1 \(0-2\)", out["list"], re.M), out[
        "list"
    ]
    assert "2 replicas desired (min 0, max 2)" in out["scale"]
    assert "qwen-acme: generation 2" in out["update"]
    assert re.search(r"^engine args\s+threads 2, parallel 2, context 8192$", out["show"], re.M), out["show"]
    assert out["delete"] == "deleting qwen-acme: the controller stops its replicas, then removes it\n"
    _gone(cli, "qwen-acme")
