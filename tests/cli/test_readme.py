"""The README's "Tenants and money" steps, run in order and as written against a live `yun serve`
subprocess, the way a new user runs them after `yun serve` printed the bootstrap key.

The one liberty taken: the server runs on a free port with the tiny test model registered under the
bundled chat model's name (the real one takes minutes to load on a busy machine), so `yun login`'s URL
is that port's.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import YunServer, answers

README = Path(__file__).resolve().parents[2] / "README.md"
YUN = [sys.executable, "-m", "yun"]
README_URL = "http://127.0.0.1:8000"
CHAT = "qwen2.5-coder-0.5b-instruct"

# What each step must print (a regular expression searched in its stdout).
EXPECTED = {
    "login": r"^logged in to http://127\.0\.0\.1:\d+ ",
    "orgs create": r"^org-[0-9a-f]{20}\n$",
    "keys create": r"^yun-[A-Za-z0-9_-]{43}\n$",
    "prices set": rf"^{CHAT}: price version 1\n$",
    "credits grant": r"^posted; balance \$25\.000000000 \(held \$0\.000000000\)\n$",
    "free-tier": rf"^{CHAT}: 100000 free tokens a month for org-[0-9a-f]{{20}}\n$",
    "usage": r"day\s+requests\s+input\s+cached\s+output\s+free\s+cost \$",
    "statement": r"^section,model_id,kind,quantity,amount_usd\nopening,,balance,,0\.000000000\n",
}


def readme_steps() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Tenants and money") :]
    block = section[section.index("```bash\n") + len("```bash\n") : section.index("```", section.index("```bash") + 7)]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.fixture
def served(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(url, bootstrap key, the CLI's environment) of a fresh `yun serve` on its own data dir."""
    cli_env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    server = YunServer(
        tmp_path,
        args=["--no-default-models"],
        env=cli_env | {"YUN_ENGINE__CONTEXT_PER_SLOT": "512", "YUN_ENGINE__PARALLEL": "1"},
        ready=answers,
        start_timeout_s=120,
    )
    try:
        server.start()  # asserts that the bootstrap key is printed once
        assert server.admin_key is not None
        yield server.url, server.admin_key, {k: v for k, v in server.env.items() if not k.startswith("YUN_")}
    finally:
        server.stop()


def test_readme_tenants_and_money_steps_work_in_order(
    served: tuple[str, str, dict[str, str]], tiny_model: Path
) -> None:
    url, bootstrap_key, env = served
    # Stand-in for the bundled model: the server runs with --no-default-models.
    add = [*YUN, "models", "add", CHAT, "--file", str(tiny_model)]
    done = subprocess.run(add, env=env | {"YUN_URL": url, "YUN_API_KEY": bootstrap_key}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

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
    assert seen == EXPECTED.keys()
