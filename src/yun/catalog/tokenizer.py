"""A GGUF model's own tokenizer and chat template, in the gateway, to count a prompt before it runs.

The gateway holds credit for a request's maximum cost and refuses prompts longer than the served
context before any engine sees them, so it must know how many tokens a prompt is. Asking the replica
(llama.cpp's `/apply-template` + `/tokenize`) is exact but costs two HTTP round trips per request,
measured at ~0.3 ms of gateway CPU and ~0.6 ms of latency (half the overhead budget, see
bench/prompt_count.py); the same vocabulary and merges in HF `tokenizers` (Rust) count a chat prompt in
tens of microseconds. The vocabulary, merges, special tokens and chat template all come from the GGUF
file the replica runs, so both sides tokenize the same text with the same table.

Supported: byte-level BPE vocabularies (`tokenizer.ggml.model` "gpt2") whose pre-tokenizer we know
(Qwen2, SmolLM), and WordPiece ("bert", the embedding models). Anything else returns None from
`load_counter` and the gateway keeps its byte bound for that model (safe, only looser).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yun.catalog.gguf_info import read_gguf_metadata

__all__ = ["PromptCounter", "load_counter"]

log = logging.getLogger("yun.catalog")

_VOCAB = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"})
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4

# llama.cpp's pre-tokenizer split per `tokenizer.ggml.pre` (the regexes of the models' own tokenizer.json).
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _bpe_pre_tokenizer(pre: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    if pre == "qwen2":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre == "smollm":  # digits one by one, then GPT-2's split
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    return None


def _bpe(meta: dict[str, Any]) -> Any:
    from tokenizers import AddedToken, Tokenizer, models

    pre = _bpe_pre_tokenizer(str(meta.get("tokenizer.ggml.pre")))
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges: list[str] | None = meta.get("tokenizer.ggml.merges")
    if pre is None or not merges:
        return None
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [(a, b) for a, _, b in (m.partition(" ") for m in merges)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    tokenizer.pre_tokenizer = pre
    # Control and user-defined tokens (<|im_start|>, <|endoftext|>, ...) are matched whole in the text,
    # as llama.cpp's tokenizer does with parse_special for a rendered chat prompt.
    types: list[int] = meta.get("tokenizer.ggml.token_type") or []
    special = [tok for tok, kind in zip(tokens, types, strict=False) if kind in (_CONTROL, _USER_DEFINED)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tokenizer


def _wordpiece(meta: dict[str, Any]) -> Any:
    """Undo llama.cpp's WordPiece layout (see convert_bert.py): a word-start piece carries U+2581,
    a continuation piece is bare; HF WordPiece wants word starts bare and continuations as `##x`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    vocab: dict[str, int] = {}
    for i, (tok, kind) in enumerate(zip(tokens, types, strict=False)):
        if kind != _NORMAL:
            piece = tok
        elif tok.startswith("\u2581"):
            piece = tok[1:]
        else:
            piece = "##" + tok
        vocab.setdefault(piece, i)
    unk = "[UNK]" if "[UNK]" in vocab else tokens[int(meta.get("tokenizer.ggml.unknown_token_id", 0))]
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk, max_input_chars_per_word=1 << 30))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def _raise(message: str) -> None:
    raise ValueError(message)


@dataclass
class PromptCounter:
    """Counts the tokens the engine will see for a request to one model.

    `chat` renders the model's chat template the way llama.cpp does (jinja, `add_generation_prompt`) and
    tokenizes the whole rendered prompt, special tokens included: the count the engine reports as
    `prompt_tokens`, checked against the real engine in tests/integration/test_prompt_count.py. Where the
    render cannot be trusted (a template our jinja cannot run) it returns None and the caller keeps
    the byte bound.
    """

    tokenizer: Any
    template: Any
    bos: str | None
    eos: str | None
    add_bos: bool
    add_eos: bool

    def text(self, text: str) -> int:
        """Tokens of a completion prompt or an embedding input, with the BOS/EOS (CLS/SEP) the engine adds."""
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + self.add_bos + self.add_eos

    def chat(self, body: dict[str, Any]) -> int | None:
        if self.template is None:
            return None
        try:
            prompt = self.template.render(
                messages=body.get("messages") or [],
                tools=body.get("tools") or None,
                add_generation_prompt=True,
                bos_token=self.bos or "",
                eos_token=self.eos or "",
            )
        except Exception:  # noqa: BLE001 - a template jinja cannot run: the caller falls back to the byte bound
            log.debug("chat template render failed; using the byte bound", exc_info=True)
            return None
        n = len(self.tokenizer.encode(prompt, add_special_tokens=False))
        # llama.cpp adds BOS unless the rendered text already starts with it.
        return n + (self.add_bos and not (self.bos and prompt.startswith(self.bos)))


def _template(source: str | None) -> Any:
    if not source:
        return None
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # What chat templates expect beyond plain jinja (as HF transformers and llama.cpp's minja provide).
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
    return env.from_string(source)


def load_counter(path: Path) -> PromptCounter | None:
    """The prompt counter of a GGUF model, or None when its tokenizer is not one we can rebuild
    (the gateway then bounds that model's prompts by their bytes). Takes ~1 s for a 150k vocabulary."""
    meta, _ = read_gguf_metadata(path, arrays=_VOCAB)
    kind = meta.get("tokenizer.ggml.model")
    if not meta.get("tokenizer.ggml.tokens"):
        return None
    if kind == "gpt2":
        tokenizer = _bpe(meta)
        add_bos_default, add_eos_default = False, False
    elif kind == "bert":
        tokenizer = _wordpiece(meta)
        add_bos_default, add_eos_default = True, True  # [CLS] ... [SEP]
    else:
        tokenizer = None
    if tokenizer is None:
        log.info("%s: no gateway tokenizer for %s/%s; prompts bounded by bytes", path.name, kind, meta.get("pre"))
        return None
    tokens: list[str] = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    add_eos = meta.get("tokenizer.ggml.add_eos_token")
    return PromptCounter(
        tokenizer=tokenizer,
        template=_template(meta.get("tokenizer.chat_template")),
        bos=token("bos"),
        eos=token("eos"),
        add_bos=add_bos_default if add_bos is None else bool(add_bos),
        add_eos=add_eos_default if add_eos is None else bool(add_eos),
    )
