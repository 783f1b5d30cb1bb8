"""Turn a sentence-transformers BERT checkpoint (safetensors + WordPiece vocab) into an F16 GGUF.

llama.cpp only loads GGUF, and its own converter (`convert_hf_to_gguf.py`) imports torch and
transformers, which Yun does not ship. This module does the same job for the one family we bundle
(BERT encoders such as all-MiniLM-L6-v2) with numpy, safetensors and the `gguf` package only. It
mirrors upstream's `BertModel` conversion so that llama.cpp sees exactly the file it would have got
from upstream: same keys, same tensor names and types, same vocab rewriting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

from yun.catalog.gguf_info import gguf_writer
from yun.errors import ModelSourceMissing

__all__ = ["convert_bert_to_gguf"]

_REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")

# Weights llama.cpp's BERT graph never reads: the position-id buffer, the [CLS] pooler (sentence-
# transformers pools itself) and masked-LM / next-sentence heads of *ForPreTraining checkpoints.
_DROPPED = ("embeddings.position_ids", "pooler.", "cls.")

# Upstream keeps these 2D tables in F32 even in an F16 file (small, and read by row lookup).
_ALWAYS_F32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)

_POOLING_MODES = (
    ("pooling_mode_mean_tokens", gguf.PoolingType.MEAN),
    ("pooling_mode_cls_token", gguf.PoolingType.CLS),
    ("pooling_mode_lasttoken", gguf.PoolingType.LAST),
)

# special_tokens_map.json key -> the literal most BERT vocabularies use, if the map is absent.
_SPECIALS = {"cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "pad": "[PAD]", "mask": "[MASK]"}


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _pooling_type(model_dir: Path) -> gguf.PoolingType | None:
    """The pooling sentence-transformers applies, so the server pools the same way without flags.

    None means the directory is a plain HF model with no Pooling module; llama.cpp then needs the
    pooling chosen at load time.
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None
    with modules_file.open(encoding="utf-8") as f:
        modules: list[dict[str, Any]] = json.load(f)
    for module in modules:
        if module.get("type") == "sentence_transformers.models.Pooling":
            config_file = model_dir / module["path"] / "config.json"
            if not config_file.is_file():
                raise ModelSourceMissing(f"{config_file} is missing (named by modules.json)")
            pooling = _read_json(config_file)
            for key, kind in _POOLING_MODES:
                if pooling.get(key):
                    return kind
            # max / mean_sqrt_len pooling have no llama.cpp equivalent: refuse rather than drift.
            raise ValueError(f"{config_file}: pooling mode not supported by llama.cpp: {pooling}")
    return None


def _vocab(model_dir: Path, n_rows: int) -> tuple[list[str], list[int]]:
    """Token texts and types in llama.cpp's WPM convention.

    llama.cpp's WordPiece tokenizer marks word starts with a phantom space (U+2581) instead of marking
    continuations with "##", so every normal piece that starts a word gets the prefix and "##x"
    becomes "x". Control tokens ([CLS], [SEP], ...) stay verbatim so the parser can match them.
    """
    with (model_dir / "vocab.txt").open(encoding="utf-8") as f:
        pieces = [line.rstrip("\r\n") for line in f]
    if len(pieces) > n_rows:
        raise ValueError(f"vocab.txt has {len(pieces)} tokens but the embedding table {n_rows} rows")

    added: dict[str, bool] = {}  # added token -> special?
    tokenizer_file = model_dir / "tokenizer.json"
    if tokenizer_file.is_file():
        for tok in _read_json(tokenizer_file).get("added_tokens", []):
            added[tok["content"]] = bool(tok.get("special", False))
    for name in _special_tokens(model_dir).values():
        added.setdefault(name, True)

    tokens: list[str] = []
    types: list[int] = []
    for piece in pieces:
        if piece in added:
            kind = gguf.TokenType.CONTROL if added[piece] else gguf.TokenType.USER_DEFINED
            tokens.append(piece)
        else:
            kind = gguf.TokenType.NORMAL
            tokens.append(piece[2:] if piece.startswith("##") else "\u2581" + piece)
        types.append(int(kind))
    # Upstream pads a vocab shorter than the embedding table with unreachable placeholders.
    for i in range(len(pieces), n_rows):
        tokens.append(f"[PAD{i}]")
        types.append(int(gguf.TokenType.USER_DEFINED))
    return tokens, types


def _special_tokens(model_dir: Path) -> dict[str, str]:
    """Role -> token text, from special_tokens_map.json / tokenizer_config.json (later file wins)."""
    found = dict(_SPECIALS)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        data = _read_json(path)
        for role in _SPECIALS:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                found[role] = value
    return found


def _write_hparams(writer: gguf.GGUFWriter, model_dir: Path, config: dict[str, Any]) -> None:
    """The `bert.*` keys llama.cpp's BERT loader reads, from the HF config (as upstream's TextModel)."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)  # an encoder: every token attends to every token
    pooling = _pooling_type(model_dir)
    if pooling is not None:
        writer.add_pooling_type(pooling)


def _write_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, config: dict[str, Any], n_rows: int) -> None:
    tokens, types = _vocab(model_dir, n_rows)
    ids = {tok: i for i, tok in enumerate(tokens)}
    roles = _special_tokens(model_dir)
    missing = [text for text in roles.values() if text not in ids]
    if missing:
        raise ValueError(f"special tokens {missing} are not in vocab.txt")
    special = {role: ids[text] for role, text in roles.items()}

    writer.add_tokenizer_model("bert")  # selects llama.cpp's WPM tokenizer
    writer.add_tokenizer_pre("default")  # WPM has its own fixed pre-tokenizer; recorded as upstream does
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Segment embeddings rows; llama.cpp checks it against token_types.weight and always uses row 0.
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    # "[CLS] text [SEP]" like the HF TemplateProcessing: llama.cpp adds BOS first and SEP/EOS last.
    writer.add_bos_token_id(special["cls"])
    writer.add_eos_token_id(special["sep"])
    writer.add_sep_token_id(special["sep"])
    writer.add_unk_token_id(special["unk"])
    writer.add_pad_token_id(special["pad"])
    writer.add_mask_token_id(special["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)


def _write_tensors(writer: gguf.GGUFWriter, weights: dict[str, np.ndarray[Any, Any]], n_layers: int) -> None:
    """Rename HF tensors to GGUF names; 2D weights F16, biases/norms/lookup tables F32 (as upstream)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for name, data in weights.items():
        if name.startswith(_DROPPED):
            continue
        mapped = names.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            # An unknown weight means a BERT variant this converter does not understand.
            raise ValueError(f"tensor {name!r} has no llama.cpp BERT equivalent")
        kind, gguf_name = mapped
        as_f16 = data.ndim >= 2 and gguf_name.endswith(".weight") and kind not in _ALWAYS_F32
        writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float16 if as_f16 else np.float32))


def convert_bert_to_gguf(model_dir: Path, out_path: Path) -> Path:
    """Write `model_dir` (a sentence-transformers BERT) as an F16 GGUF at `out_path` and return it.

    The file is written under a temporary name next to `out_path` and renamed into place at the end,
    so an interrupted conversion never leaves a truncated GGUF that a later start would load.
    """
    missing = [name for name in _REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelSourceMissing(f"{model_dir} lacks {', '.join(missing)}; cannot convert it to GGUF")
    config = _read_json(model_dir / "config.json")
    if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{model_dir}: only GELU BERT models convert (llama.cpp's 'bert' graph)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{model_dir}: only absolute position embeddings are supported")

    # *ForMaskedLM checkpoints nest the encoder under "bert."; upstream strips it the same way.
    weights = {k.removeprefix("bert."): v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    embeddings = weights.get("embeddings.word_embeddings.weight")
    if embeddings is None:
        raise ValueError(f"{model_dir}/model.safetensors has no word embeddings; is it a BERT model?")

    with gguf_writer(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT]) as writer:
        _write_hparams(writer, model_dir, config)
        _write_tokenizer(writer, model_dir, config, int(embeddings.shape[0]))
        _write_tensors(writer, weights, int(config["num_hidden_layers"]))
    return out_path
