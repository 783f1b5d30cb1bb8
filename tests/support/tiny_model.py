"""A tiny random-weight qwen2 GGUF that speaks the real Qwen tokenizer and chat template.

Unit and integration tests need a model that llama.cpp loads in about a second and that tokenizes,
templates and meters exactly like the default chat model, but whose output does not matter. We copy
every `tokenizer.*` key of the bundled Qwen2.5-Coder GGUF (vocabulary, merges, special token ids,
chat template) into a new file and give it a 2-layer qwen2 body with seeded random weights.

Properties tests may rely on:

* deterministic: same bytes on every build (fixed seed, fixed key and tensor order);
* same tokenizer and chat template as the real model, so prompt token counts match it;
* the embedding rows of every non-NORMAL token (control tokens such as `<|im_end|>` and
  `<|endoftext|>`, user-defined and unused tokens) are zero. The output projection is tied to the
  embedding, so those tokens always get logit 0 while the best ordinary token gets a positive logit:
  greedy decoding never emits an end-of-generation token and every completion runs to `max_tokens`
  (finish_reason "length") unless a stop string matches.

`tiny_model_path()` builds the file once per user cache (about 25 MB, ~10 s the first time, most of it
spent parsing the 151,936-token vocabulary) and returns the cached path afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from yun.catalog.gguf_info import gguf_writer

__all__ = [
    "N_CTX_TRAIN",
    "N_EMBD",
    "N_FF",
    "N_HEAD",
    "N_HEAD_KV",
    "N_LAYER",
    "TINY_MODEL_NAME",
    "build_tiny_qwen2",
    "source_qwen_path",
    "cache_root",
    "tiny_model_path",
]

# Bump the version whenever the recipe below changes: the cached file is keyed by its name.
TINY_MODEL_VERSION = 1
TINY_MODEL_NAME = f"tiny-qwen2-v{TINY_MODEL_VERSION}.gguf"

ARCH = "qwen2"
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX_TRAIN = 4096
ROPE_FREQ_BASE = 1_000_000.0
RMS_EPS = 1e-6
SEED = 20_250_101
INIT_STD = 0.02


def cache_root() -> Path:
    """Per-user cache shared by test runs; override with YUN_TEST_CACHE."""
    return Path(os.environ.get("YUN_TEST_CACHE", Path.home() / ".cache" / "yun-tests"))


def _copy_field(writer: gguf.GGUFWriter, field: Any) -> None:
    """Copy one metadata key verbatim: same value type, same bytes for strings."""
    types = field.types
    main = types[0]
    if main == gguf.GGUFValueType.ARRAY:
        if len(types) > 2:
            raise ValueError(f"{field.name}: nested arrays are not supported")
        if not field.data or len(types) < 2:
            return  # an empty array: GGUFWriter cannot write one and llama.cpp treats it as absent
        sub = types[1]
        values: list[Any]
        if sub == gguf.GGUFValueType.STRING:
            # Raw bytes, not contents(): no decode/encode round trip for 150k vocabulary entries.
            values = [bytes(field.parts[i]) for i in field.data]
        else:
            values = np.concatenate([field.parts[i] for i in field.data]).tolist()
        writer.add_key_value(field.name, values, main, sub_type=sub)
    elif main == gguf.GGUFValueType.STRING:
        writer.add_key_value(field.name, bytes(field.parts[-1]), main)
    else:
        writer.add_key_value(field.name, field.parts[-1].tolist()[0], main)


def _token_types(reader: gguf.GGUFReader) -> np.ndarray[Any, np.dtype[np.int32]]:
    field = reader.fields["tokenizer.ggml.token_type"]
    return np.concatenate([field.parts[i] for i in field.data]).astype(np.int32)


def _weights(token_types: np.ndarray[Any, np.dtype[np.int32]]) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """Tensors in llama.cpp's qwen2 layout. numpy shapes are the reverse of ggml's `ne`."""
    rng = np.random.default_rng(SEED)

    def matrix(rows: int, cols: int) -> np.ndarray[Any, Any]:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * INIT_STD).astype(np.float16)

    def vector(n: int, std: float) -> np.ndarray[Any, Any]:
        return (rng.standard_normal(n, dtype=np.float32) * std).astype(np.float32)

    n_vocab = len(token_types)
    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    # Tied with the output projection (qwen2's output.weight is optional). Zero rows for every
    # non-NORMAL token so greedy decoding never picks one (see the module docstring).
    embd = rng.standard_normal((n_vocab, N_EMBD), dtype=np.float32)
    embd[token_types != gguf.TokenType.NORMAL] = 0.0
    yield "token_embd.weight", embd.astype(np.float16)
    yield "output_norm.weight", np.ones(N_EMBD, dtype=np.float32)

    for i in range(N_LAYER):
        blk = f"blk.{i}"
        yield f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32)
        yield f"{blk}.attn_q.weight", matrix(N_EMBD, N_EMBD)
        yield f"{blk}.attn_q.bias", vector(N_EMBD, INIT_STD)
        yield f"{blk}.attn_k.weight", matrix(n_embd_kv, N_EMBD)
        yield f"{blk}.attn_k.bias", vector(n_embd_kv, INIT_STD)
        yield f"{blk}.attn_v.weight", matrix(n_embd_kv, N_EMBD)
        yield f"{blk}.attn_v.bias", vector(n_embd_kv, INIT_STD)
        yield f"{blk}.attn_output.weight", matrix(N_EMBD, N_EMBD)
        yield f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32)
        yield f"{blk}.ffn_gate.weight", matrix(N_FF, N_EMBD)
        yield f"{blk}.ffn_up.weight", matrix(N_FF, N_EMBD)
        yield f"{blk}.ffn_down.weight", matrix(N_EMBD, N_FF)


def build_tiny_qwen2(source_gguf: Path, out_path: Path) -> Path:
    """Write the tiny model to `out_path` (atomically) using the tokenizer of `source_gguf`."""
    reader = gguf.GGUFReader(source_gguf)
    with gguf_writer(out_path, ARCH) as writer:
        writer.add_type("model")
        writer.add_name("yun tiny qwen2 (random weights, for tests)")
        writer.add_context_length(N_CTX_TRAIN)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_freq_base(ROPE_FREQ_BASE)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for name, field in reader.fields.items():
            if name.startswith("tokenizer."):
                _copy_field(writer, field)
        for name, tensor in _weights(_token_types(reader)):
            writer.add_tensor(name, tensor)
    return out_path


def source_qwen_path() -> Path:
    """The real Qwen2.5-Coder-0.5B GGUF, joined from its registry packages into the test cache."""
    from yun.catalog.bundled import QWEN_CODER_05B, ensure_joined

    return ensure_joined(QWEN_CODER_05B, cache_root() / "models")


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tiny_model_path() -> Path:
    """The cached tiny model, built on first use. Safe to call from parallel test processes."""
    target = cache_root() / TINY_MODEL_NAME
    if target.exists():
        return target
    with _locked(cache_root() / f"{TINY_MODEL_NAME}.lock"):
        if not target.exists():  # another process may have built it while we waited
            build_tiny_qwen2(source_qwen_path(), target)
    return target


if __name__ == "__main__":
    print(tiny_model_path())
