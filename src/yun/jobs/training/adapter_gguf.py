"""PEFT LoRA weights -> a llama.cpp LoRA adapter GGUF, which a llama.cpp server loads beside its base model
(`--lora FILE`) and applies per request (`"lora": [{"id": N, "scale": 1.0}]`).

The layout (TRAINING.md, as llama.cpp's own convert_lora_to_gguf.py writes it): the base's architecture,
`general.type` "adapter", `adapter.type` "lora", `adapter.lora.alpha`; one pair of tensors per adapted
matrix, `blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down}.weight.lora_a` = PEFT's
`lora_A` (r x in) and `.lora_b` = `lora_B` (out x r), not transposed. llama.cpp's converter stores llama's
q/k weights with their rows permuted (rotary halves interleaved) and transformers undoes that when it
loads a GGUF, so for llama-architecture bases the q/k `lora_b` rows are permuted back here; qwen2 keeps
its rows as they are.

numpy and gguf only (no torch): the trainer hands over its tensors as arrays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

from yun.catalog.gguf_info import gguf_writer, read_gguf_metadata

__all__ = ["TENSOR_NAMES", "write_lora_gguf"]

TENSOR_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
"""transformers module -> llama.cpp tensor, per block."""

_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_PERMUTED_ARCHS = frozenset({"llama"})


def _permute_rows(w: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """llama.cpp's converter's permutation of q/k rows (rotary pairs interleaved), applied to `lora_b`."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_lora_gguf(
    weights: Mapping[str, np.ndarray[Any, Any]],
    base_gguf: Path,
    alpha: float,
    out_path: Path,
    dtype: Literal["f16", "f32"] = "f16",
) -> Path:
    """Write `weights` (PEFT's adapter state dict, as arrays) as an adapter of `base_gguf`, atomically."""
    meta, _ = read_gguf_metadata(base_gguf, arrays=frozenset())
    arch = str(meta["general.architecture"])
    n_head = int(meta.get(f"{arch}.attention.head_count", 0))
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    np_dtype = np.float16 if dtype == "f16" else np.float32
    tensors: list[tuple[str, np.ndarray[Any, Any]]] = []
    for key in sorted(weights, key=_order):
        match = _KEY.search(key)
        if match is None or match.group(2) not in TENSOR_NAMES:
            raise ValueError(f"{key}: not a LoRA weight of a module llama.cpp adapters support")
        block, module, side = int(match.group(1)), match.group(2), match.group(3)
        w = np.asarray(weights[key], dtype=np.float32)
        if side == "B" and arch in _PERMUTED_ARCHS and module in ("q_proj", "k_proj"):
            w = _permute_rows(w, n_head if module == "q_proj" else n_head_kv)
        name = f"blk.{block}.{TENSOR_NAMES[module]}.weight.lora_{side.lower()}"
        tensors.append((name, np.ascontiguousarray(w.astype(np_dtype))))
    if not tensors:
        raise ValueError("no LoRA weights to write")
    with gguf_writer(out_path, arch) as writer:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        for name, tensor in tensors:
            writer.add_tensor(name, tensor)
    return out_path


def _order(key: str) -> tuple[int, str]:
    match = _KEY.search(key)
    return (int(match.group(1)) if match else -1, key)
