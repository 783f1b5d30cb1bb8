"""The README's own steps, in order, as written (issue 10, item 6): log in, create an org and its key, set a
price, grant credits, then run the README's Python example with the bootstrap admin key, against a real
`yun serve` (the tiny model registered under the README's model name). Before, the example got 429
`insufficient_quota`: once a price was set, the operator's own organization had $0 and was refused.

Commands are read from README.md itself, so this test walks what a new user reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Health, YunServer, answers

README = Path(__file__).resolve().parents[2] / "README.md"
ORG_RE = re.compile(r"\borg-[0-9a-f]{20}\b")
MODEL = "qwen2.5-coder-0.5b-instruct"
START_TIMEOUT_S = 240.0  # a bound for a replica load on a busy machine, never a measured time


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _money_steps() -> list[list[str]]:
    """The README's `yun ...` commands of the tenants-and-money block up to (and with) the credit grant."""
    [block] = [b for b in _blocks("bash") if "credits grant" in b]
    steps: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("yun"):
            steps.append(words[1:])
            if words[1] == "credits":
                return steps
    raise AssertionError("the README grants no credits")


def _env(root: Path) -> dict[str, str]:
    """A new user's machine: its own data dir and its own config dir (where `yun login` keeps the key)."""
    return {
        "COLUMNS": "400",
        "XDG_CONFIG_HOME": str(root / "config"),
        "YUN_DATA_DIR": str(root / "data"),
        "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
    }


def _yun(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "yun", *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _ready(health: Health) -> bool:
    return bool(health.get("models", {}).get(MODEL, {}).get("healthy_replicas"))


@pytest.fixture
def served(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(url, bootstrap admin key, CLI environment) of a fresh `yun serve` on port 0 (the kernel picks)
    serving the tiny model under the README's model name."""
    server = YunServer(
        tmp_path,
        port=0,
        args=["--no-default-models"],
        env=_env(tmp_path),
        ready=answers,
        start_timeout_s=START_TIMEOUT_S,
    )
    try:
        server.start()  # asserts that the bootstrap key is printed once
        server.yun("models", "add", MODEL, "--file", str(tiny_model))
        server.wait_until(_ready)
        assert server.admin_key is not None
        yield server.url, server.admin_key, server.env
    finally:
        server.stop()


def test_the_readmes_steps_in_order_leave_the_admin_able_to_use_the_models(
    served: tuple[str, str, dict[str, str]],
) -> None:
    url, admin_key, env = served
    org = ""
    for step in _money_steps():
        if step[0] == "login":  # at the server's real address; the key pasted, as the README says
            _yun(env, "login", url, stdin=admin_key + "\n")
            continue
        said = _yun(env, *(org if word == "ORG" else word for word in step))
        if step[:2] == ["orgs", "create"]:
            [org] = ORG_RE.findall(said)

    [example] = [b for b in _blocks("python") if "OpenAI(" in b]
    example = example.replace("http://127.0.0.1:8000/v1", url + "/v1").replace('"yun-…"', repr(admin_key))
    assert url in example and admin_key in example
    scope: dict[str, object] = {}
    # The README's code as written, keeping what its last call returns.
    exec(example.replace("client.chat.completions.create(", "answer = client.chat.completions.create(", 1), scope)
    answer = scope["answer"]
    assert answer.choices[0].message.content  # type: ignore[attr-defined]  # 200, an answer

    # Metered in full, at the price the README set, without touching a balance.
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, trust_env=False) as admin:
        usage = admin.get("/v1/organization/usage/records").json()["data"]
        balance = admin.get("/v1/organization/balance").json()
    assert [r["request_id"] for r in usage] == [answer.id]  # type: ignore[attr-defined]
    used = answer.usage  # type: ignore[attr-defined]
    # The README's price: $0.05 / $0.10 per 1M tokens, i.e. 50 / 100 nanodollars a token.
    assert usage[0]["cost_nanodollars"] == used.prompt_tokens * 50 + used.completion_tokens * 100 > 0
    assert (balance["balance_nanodollars"], balance["held_nanodollars"]) == (0, 0)
