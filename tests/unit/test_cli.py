"""The `yun` CLI against a real SQLite data dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yun.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_models_add_list_show_remove(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    d = ["--data-dir", str(tmp_path)]
    _run("models", "add", "my-tiny", "--file", str(tiny_model), "--license", "apache-2.0", *d)
    _run("models", "add", "remote", "--url", "http://127.0.0.1:9/", "--upstream-model", "x", *d)
    listing = _run("models", "list", *d)
    assert "my-tiny" in listing and "qwen2" in listing and "remote" in listing
    shown = _run("models", "show", "my-tiny", *d)
    assert '"context_length": 4096' in shown and '"license": "apache-2.0"' in shown
    # The served context: the global setting, or the model's own from `--context`.
    monkeypatch.setenv("YUN_ENGINE__CONTEXT_PER_SLOT", "1024")
    shown = _run("models", "show", "my-tiny", *d)
    assert '"context_length": 1024' in shown and '"trained_context_length": 4096' in shown
    _run("models", "add", "tiny-2k", "--file", str(tiny_model), "--context", "2048", *d)
    assert '"context_length": 2048' in _run("models", "show", "tiny-2k", *d)
    assert re.search(r"tiny-2k .*2048", _run("models", "list", *d))
    _run("models", "remove", "remote", *d)
    assert "remote" not in _run("models", "list", *d)


@pytest.mark.parametrize(
    "args",
    [
        ["models", "add", "x"],  # no source
        ["models", "add", "x", "--file", "/nonexistent.gguf"],
        ["models", "add", "bad id!", "--url", "http://h"],
        ["models", "add", "x", "--url", "ftp://h"],
        ["models", "add", "x", "--url", "http://h", "--context", "0"],
        ["models", "show", "missing"],
        ["keys", "revoke", "key_missing"],
    ],
)
def test_cli_errors_are_clear(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    d = ["--data-dir", str(tmp_path)]
    out = _run("keys", "create", "ci", *d)
    secret = re.search(r"yun-[A-Za-z0-9_-]{43}", out)
    assert secret is not None
    key_id = re.search(r"key_[0-9a-f]{24}", out)
    assert key_id is not None
    listing = _run("keys", "list", *d)
    assert key_id.group(0) in listing and secret.group(0) not in listing
    _run("keys", "revoke", key_id.group(0), *d)


def test_hub_source_fails_cleanly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path is real code; with the hub unreachable it must say so, not crash."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(
        app,
        [
            "models",
            "add",
            "h",
            "--hub",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "--hub-file",
            "x.gguf",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "hub" in result.output
