"""The trainer's parts that need no torch: hyperparameters, the adapter GGUF layout, the base copy transformers
loads, engine arguments, and the `lora` field refused on the OpenAI endpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from pydantic import ValidationError

from tests.cluster.helpers import llama_order
from yun.api.openai.chat.protocol import ChatCompletionRequest
from yun.catalog.gguf_info import read_gguf_metadata, write_without_arrays
from yun.cluster.backends.engine_process import engine_command
from yun.errors import UnsupportedParameter
from yun.jobs.training import Hyperparameters, resolve_hyperparameters
from yun.jobs.training.adapter_gguf import write_lora_gguf
from yun.jobs.training.spec import BASE_LEARNING_RATE


def test_auto_hyperparameters_and_the_multiplier() -> None:
    assert resolve_hyperparameters(Hyperparameters(), 100) == (3, 4, BASE_LEARNING_RATE)
    assert resolve_hyperparameters(Hyperparameters(batch_size=8, learning_rate_multiplier=2), 5) == (
        3,
        5,
        BASE_LEARNING_RATE * 2,
    )
    for bad in ({"n_epochs": 0}, {"batch_size": "big"}, {"learning_rate_multiplier": 0}, {"epochs": 2}):
        with pytest.raises(ValidationError):
            Hyperparameters.model_validate(bad)


def test_the_adapter_gguf_has_llama_cpp_s_lora_layout(tiny_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        f"base_model.model.model.layers.{i}.{part}.lora_{side}.weight": rng.standard_normal(shape).astype(np.float32)
        for i in range(2)
        for part, a_shape, b_shape in (("self_attn.q_proj", (8, 64), (64, 8)), ("mlp.down_proj", (8, 128), (64, 8)))
        for side, shape in (("A", a_shape), ("B", b_shape))
    }
    out = write_lora_gguf(weights, tiny_model, 16, tmp_path / "a.gguf", "f32")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(
        f"blk.{i}.{name}.weight.lora_{side}" for i in range(2) for name in ("attn_q", "ffn_down") for side in "ab"
    )
    a = tensors["blk.1.ffn_down.weight.lora_a"]
    assert list(a.shape) == [128, 8]  # ggml's ne: (in, r), i.e. PEFT's (r x in) untransposed
    np.testing.assert_array_equal(
        np.asarray(a.data).reshape(8, 128), weights["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    )
    with pytest.raises(ValueError, match="lm_head"):
        write_lora_gguf({"base_model.model.lm_head.lora_A.weight": np.zeros((8, 64))}, tiny_model, 16, tmp_path / "b")


def test_a_replica_loads_its_adapters_in_order(tmp_path: Path) -> None:
    order = llama_order(tmp_path / "m.gguf")
    order = dataclasses.replace(order, args=dataclasses.replace(order.args, lora=("/a/x.gguf", "/a/y.gguf")))
    argv = engine_command(order, "127.0.0.1", 1)
    assert argv[-4:] == ["--lora", "/a/x.gguf", "--lora", "/a/y.gguf"]


def test_lora_from_a_client_is_refused_naming_it() -> None:
    """A shared replica's adapters are other organizations' fine-tunes: only the gateway selects one (for
    the ft: model a request names); a client's own `lora` is a 400 naming it, never passed on."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = ChatCompletionRequest.model_validate({**body, "lora": [{"id": 1, "scale": 0.5}]})
    assert request.extensions() == []
    with pytest.raises(UnsupportedParameter) as info:
        request.sampling()
    assert info.value.param == "lora" and "ft:" in info.value.message


def test_serving_and_the_training_package_never_import_torch() -> None:
    code = (
        "import sys, yun.jobs.training, yun.api.app, yun.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_base_copy_for_transformers_drops_only_the_arrays(tiny_model: Path, tmp_path: Path) -> None:
    copy = write_without_arrays(tiny_model, tmp_path / "w.gguf")
    before, params = read_gguf_metadata(tiny_model)
    after, params_after = read_gguf_metadata(copy)
    vocab = {k for k, v in before.items() if v is None}  # arrays read as None
    assert vocab >= {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"}
    assert after == {**{k: v for k, v in before.items() if k not in vocab}, "qwen2.vocab_size": 151_936}
    assert params_after == params
    reader = gguf.GGUFReader(copy)
    data_start = min(t.data_offset for t in reader.tensors)
    assert tiny_model.read_bytes().endswith(copy.read_bytes()[data_start:])  # the tensors, byte for byte
    assert data_start % 32 == 0 and len(reader.tensors) == 2 + 2 * 12


def test_without_the_train_extra_a_run_fails_at_once_saying_what_to_install(tiny_model: Path, tmp_path: Path) -> None:
    """A serving-only install (no torch): the trainer's one error event names the extra, so the job fails
    with it instead of being retried as a crash."""
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"base_model": str(tiny_model), "training_file": str(data), "output_dir": str(tmp_path)})
    )
    events = tmp_path / "events.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "yun.jobs.training", "--spec", str(spec), "--events", str(events)],
        env={**os.environ, "PYTHONPATH": str(shadow.parent)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["type"] == "error" and "yun[train]" in event["message"]
