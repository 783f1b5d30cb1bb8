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

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
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
    from tokenizers import AddedToken, Tokenizer, decoders, models

    pre = _bpe_pre_tokenizer(str(meta.get("tokenizer.ggml.pre")))
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges: list[str] | None = meta.get("tokenizer.ggml.merges")
    if pre is None or not merges:
        return None
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [(a, b) for a, _, b in (m.partition(" ") for m in merges)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()  # token ids back to text (echo of a prompt given as ids)
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


class _Counts:
    """Token counts of long texts seen recently, keyed by a digest (the text itself is not kept: it is a
    tenant's data). Chats resend their whole history and a shared system prompt on every turn; with
    this, only the new text is tokenized. Used from the event loop and from worker threads."""

    def __init__(self, entries: int = 65_536) -> None:
        self._entries = entries
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16).digest()

    def known(self, text: str) -> bool:
        return self._key(text) in self._counts

    def get(self, text: str, count: Callable[[str], int]) -> int:
        key = self._key(text)
        with self._lock:
            n = self._counts.get(key)
            if n is not None:
                self._counts.move_to_end(key)
                return n
        n = count(text)
        with self._lock:
            self._counts[key] = n
            if len(self._counts) > self._entries:
                self._counts.popitem(last=False)
        return n


# Message contents at least this long are counted apart (and remembered); shorter ones are rendered in
# place, where the count is exactly the engine's.
_APART_CHARS = 256


@dataclass
class PromptCounter:
    """Counts the tokens the engine will see for a request to one model.

    `chat` renders the model's chat template the way llama.cpp does (jinja, `add_generation_prompt`) and
    tokenizes the rendered prompt, special tokens included: the count the engine reports as
    `prompt_tokens`, checked against the real engine in tests/integration/test_prompt_count.py. Where the
    render cannot be trusted (a template our jinja cannot run) it returns None and the caller keeps
    the byte bound.

    Long message contents are counted apart: the template is rendered with a one-token placeholder (a
    control token) in their place, and each content's own count replaces the placeholder's one. This is
    an upper bound on the whole prompt's count, never below it: a content's tokens are the same or fewer
    in place, because pre-tokenization splits at control tokens, and the template text around a content
    can only merge with it into fewer pieces, not more (Qwen's split: a content follows "role\n" and
    precedes <|im_end|>; checked equal to the engine's count in the tests).
    """

    tokenizer: Any
    template: Any
    bos: str | None
    eos: str | None
    add_bos: bool
    add_eos: bool
    placeholder: str | None = None
    """A control token that encodes as exactly one token; None: contents are always rendered in place."""
    counts: _Counts = field(default_factory=_Counts)

    def _encode(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def text(self, text: str) -> int:
        """Tokens of a completion prompt or an embedding input, with the BOS/EOS (CLS/SEP) the engine adds."""
        n = self._encode(text) if len(text) < _APART_CHARS else self.counts.get(text, self._encode)
        return n + self.add_bos + self.add_eos

    def detokenize(self, ids: list[int]) -> str | None:
        """The text of token ids, as llama.cpp's `/detokenize` gives it (special tokens as their text):
        the prompt a completion echoes when it was given as ids. None where this vocabulary has no
        decoder here (WordPiece); ValueError for an id outside the vocabulary."""
        if self.tokenizer.decoder is None:
            return None
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        bad = next((i for i in ids if not 0 <= i < size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is not in the model's vocabulary of {size} tokens")
        text: str = self.tokenizer.decode(ids, skip_special_tokens=False)
        return text

    def chat(self, body: dict[str, Any]) -> int | None:
        if self.template is None:
            return None
        apart: list[str] = []
        messages = body.get("messages") or []
        if self.placeholder is not None:
            messages = [self._set_apart(m, apart) for m in messages]
        try:
            prompt = self.render(messages, tools=body.get("tools"))
        except Exception:  # noqa: BLE001 - a template jinja cannot run: the caller falls back to the byte bound
            log.debug("chat template render failed; using the byte bound", exc_info=True)
            return None
        n = self._encode(prompt) - len(apart) + sum(self.counts.get(c, self._encode) for c in apart)
        # llama.cpp adds BOS unless the rendered text already starts with it.
        return n + (self.add_bos and not (self.bos and prompt.startswith(self.bos)))

    def render(self, messages: list[Any], *, tools: Any = None, add_generation_prompt: bool = True) -> str:
        """The chat template's text for `messages`, as llama.cpp renders it (the trainer renders its
        examples with this too, so a fine-tune sees the very prompts it is served with). Needs a template."""
        if self.template is None:
            raise ValueError("this model has no chat template")
        text: str = self.template.render(
            messages=messages,
            tools=tools or None,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos or "",
            eos_token=self.eos or "",
        )
        return text

    def new_chars(self, messages: list[Any]) -> int:
        """Characters of string contents that a count would tokenize anew (not remembered): what decides
        whether to count on the event loop or on a thread."""
        total = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str) and (
                self.placeholder is None or len(content) < _APART_CHARS or not self.counts.known(content)
            ):
                total += len(content)
        return total

    def _set_apart(self, message: Any, apart: list[str]) -> Any:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or len(content) < _APART_CHARS:
            return message
        apart.append(content)
        return {**message, "content": self.placeholder}


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
    types: list[int] = meta.get("tokenizer.ggml.token_type") or []
    control = [t for t, kind in zip(tokens, types, strict=False) if kind == _CONTROL]
    placeholder = next((t for t in control if len(tokenizer.encode(t, add_special_tokens=False)) == 1), None)
    return PromptCounter(
        tokenizer=tokenizer,
        template=_template(meta.get("tokenizer.chat_template")),
        bos=token("bos"),
        eos=token("eos"),
        add_bos=add_bos_default if add_bos is None else bool(add_bos),
        add_eos=add_eos_default if add_eos is None else bool(add_eos),
        placeholder=placeholder if kind == "gpt2" else None,
    )
