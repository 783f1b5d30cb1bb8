"""The engine command built from an order: what runs, and that the secret is never part of it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from tests.cluster.helpers import llama_order, vllm_order
from tests.support import fake_engine
from yun.cluster.backends.engine_process import engine_command


def test_llamacpp_runs_the_xllamacpp_worker_on_the_given_address(tmp_path: Path) -> None:
    order = llama_order(tmp_path / "m.gguf")
    argv = engine_command(order, "10.0.0.7", 4321)
    assert argv == [
        sys.executable, "-m", "yun.engines.xllamacpp_worker", "--model", str(tmp_path / "m.gguf"),
        "--host", "10.0.0.7", "--port", "4321", "--threads", "1", "--parallel", "1", "--ctx", "256",
    ]  # fmt: skip
    assert engine_command(dataclasses.replace(order, kind="embedding"), "h", 1)[-1] == "--embedding"


def test_vllm_serves_the_model_and_takes_its_key_from_the_environment() -> None:
    argv = engine_command(vllm_order(command=None), "10.0.0.7", 4321)
    assert argv == ["vllm", "serve", "fake/model", "--host", "10.0.0.7", "--port", "4321"]


def test_a_custom_command_gets_the_address_and_model_substituted() -> None:
    argv = engine_command(vllm_order(), "10.0.0.7", 4321)
    path = str(fake_engine.PATH)
    assert argv == [sys.executable, path, "--host", "10.0.0.7", "--port", "4321", "--model", "fake/model"]
