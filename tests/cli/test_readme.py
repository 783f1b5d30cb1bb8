"""The README, walked as a new user reads it (issue 10, items 6 and 20), against a live `yun serve`
subprocess: the "Tenants and money" steps in order and as written (each must print what it should), then,
right after the credit grant, the README's Python example with the bootstrap admin key: it must answer
(before issue 10 item 6 it got 429 `insufficient_quota`: once a price was set, the operator's own
organization had $0 and was refused), metered in full at the README's price without touching a balance.

The liberties taken: the server runs on port 0 (the kernel picks; `yun login` and the example use the
address it printed) with the tiny test model registered under the bundled chat model's name (the real one
takes minutes to load on a busy machine).
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
YUN = [sys.executable, "-m", "yun"]
README_URL = "http://127.0.0.1:8000"
CHAT = "qwen2.5-coder-0.5b-instruct"
START_TIMEOUT_S = 240.0  # a bound for a replica load on a busy machine, never a measured time

# What each step must print (a regular expression searched in its stdout).
EXPECTED = {
    "login": r"^logged in to http://127\.0\.0\.1:\d+ ",
    "orgs create": r"^org-[0-9a-f]{20}\n$",
    "keys create": r"^yun-[A-Za-z0-9_-]{43}\n$",
    "prices set": rf"^{CHAT}: price version 1\n$",
    "credits grant": r"^posted; balance \$25\.000000000 \(held \$0\.000000000\)\n$",
    "free-tier": rf"^{CHAT}: 100000 free tokens a month for org-[0-9a-f]{{20}}\n$",
    "usage": r"day\s+requests\s+input\s+cached\s+output\s+free\s+trained\s+replica-s\s+cost \$",
    "statement": r"^section,model_id,kind,quantity,amount_usd\nopening,,balance,,0\.000000000\n",
}


def readme_steps() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Tenants and money") :]
    block = section[section.index("```bash\n") + len("```bash\n") : section.index("```", section.index("```bash") + 7)]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def _python_example() -> str:
    [example] = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "OpenAI(" in b]
    return example


def _chat_ready(health: Health) -> bool:
    return bool(health.get("models", {}).get(CHAT, {}).get("healthy_replicas"))


@pytest.fixture
def served(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(url, bootstrap key, the CLI's environment) of a fresh `yun serve` on its own data dir, on port 0,
    serving the tiny model under the README's model name (its replica healthy)."""
    cli_env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "400"}
    server = YunServer(
        tmp_path,
        port=0,
        args=["--no-default-models"],
        env=cli_env | {"YUN_ENGINE__CONTEXT_PER_SLOT": "512", "YUN_ENGINE__PARALLEL": "1"},
        ready=answers,
        start_timeout_s=START_TIMEOUT_S,
    )
    try:
        server.start()  # asserts that the bootstrap key is printed once
        # Stand-in for the bundled model: the server runs with --no-default-models.
        server.yun("models", "add", CHAT, "--file", str(tiny_model))
        server.wait_until(_chat_ready)
        assert server.admin_key is not None
        yield server.url, server.admin_key, {k: v for k, v in server.env.items() if not k.startswith("YUN_")}
    finally:
        server.stop()


def test_readme_steps_work_in_order_and_leave_the_admin_able_to_use_the_models(
    served: tuple[str, str, dict[str, str]],
) -> None:
    url, bootstrap_key, env = served
    steps = readme_steps()
    assert [s[0] for s in steps] == ["yun"] * len(steps), "every step is written `yun …`"
    assert steps[0][:2] == ["yun", "login"], "the README logs in before the first admin command"
    seen = set()
    for step in steps:
        args = [url if a == README_URL else a for a in step[1:]]
        name = " ".join(args[:2]) if args[0] in ("orgs", "keys", "prices", "credits") else args[0]
        stdin = bootstrap_key + "\n" if name == "login" else None
        r = subprocess.run([*YUN, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"`{shlex.join(step)}` exited {r.returncode}: {r.stderr}"
        assert "Traceback" not in r.stderr
        assert re.search(EXPECTED[name], r.stdout, re.M), f"`{shlex.join(step)}` printed {r.stdout!r}"
        seen.add(name)
        if name == "credits grant":  # a price is set: the README's Python example, with the admin key
            _the_python_example_is_answered_and_metered(url, bootstrap_key)
    assert seen == EXPECTED.keys()


def _the_python_example_is_answered_and_metered(url: str, admin_key: str) -> None:
    example = _python_example().replace(README_URL + "/v1", url + "/v1").replace('"yun-…"', repr(admin_key))
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
