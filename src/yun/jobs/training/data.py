"""Training examples: each chat rendered with the base model's own chat template, tokenized with its own
vocabulary, and masked so that the loss falls on the assistant's tokens only.

The template and tokenizer are the gateway's (catalog/tokenizer.py: the GGUF's template rendered as
llama.cpp renders it, the GGUF's vocabulary in HF `tokenizers`), so a fine-tune is trained on exactly the
prompts it will be served with, default system prompt included.

How the mask is found: for each assistant turn, the text of the chat up to it with the generation prompt
(`<|im_start|>assistant\\n`) is a prefix of the text with that turn; what the turn adds (its content and
end-of-turn token, trailing whitespace left out) is the trained span. The whole chat is tokenized once and
a token is trained when it starts inside a trained span. A template that rewrites earlier turns when a
later one is added (so the prefixes do not hold) is refused rather than trained wrongly.

No torch here: the job runner validates and counts a file with this module before any trainer starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yun.catalog.tokenizer import PromptCounter, load_counter
from yun.errors import InvalidRequest
from yun.gateway.prompt import as_engine_renders

__all__ = ["ChatTokenizer", "Example", "TrainingDataError", "load_examples"]


class TrainingDataError(InvalidRequest):
    """A training or validation file the trainer cannot use; the message names the line."""

    code = "invalid_training_file"


@dataclass(frozen=True)
class Example:
    line: int
    """1-based line of the JSONL file it came from."""
    ids: tuple[int, ...]
    trained: tuple[bool, ...]
    """Per token: whether the loss counts it (the assistant's tokens)."""

    @property
    def trained_count(self) -> int:
        return sum(self.trained)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


class ChatTokenizer:
    """Renders and tokenizes chats for one base model (its GGUF's template and vocabulary)."""

    def __init__(self, counter: PromptCounter, *, train_end_of_turn: bool = True) -> None:
        if counter.template is None:
            raise TrainingDataError("the base model has no chat template to render training chats with")
        self.counter = counter
        # Control tokens (`<|im_end|>`, ...) inside an answer's span: the end of the turn, normally trained
        # so the fine-tune learns where to stop.
        self._untrained: frozenset[int] = (
            frozenset() if train_end_of_turn else frozenset(counter.tokenizer.get_added_tokens_decoder())
        )
        self._bos_id = counter.tokenizer.token_to_id(counter.bos) if counter.bos else None

    @classmethod
    def from_gguf(cls, path: Path, *, train_end_of_turn: bool = True) -> ChatTokenizer:
        counter = load_counter(path)
        if counter is None:
            raise TrainingDataError(f"{path.name}: no tokenizer can be rebuilt from this model's GGUF")
        return cls(counter, train_end_of_turn=train_end_of_turn)

    def prompt_ids(self, messages: list[Any], tools: Any = None) -> list[int]:
        """The token ids llama.cpp serves `messages` with (generation prompt included)."""
        text = self.counter.render(as_engine_renders(messages)[0], tools=tools)
        return self._ids(text)[0]

    def _ids(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self.counter.tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = list(encoding.ids), list(encoding.offsets)
        # llama.cpp adds BOS unless the rendered text already starts with it.
        if self.counter.add_bos and self._bos_id is not None and not text.startswith(self.counter.bos or ""):
            ids, offsets = [self._bos_id, *ids], [(0, 0), *offsets]
        return ids, offsets

    def example(self, chat: dict[str, Any], line: int = 0) -> Example:
        """One chat as token ids and its trained mask. Assistant turns with `"weight": 0` are not trained
        (as in OpenAI's format)."""
        messages, _ = as_engine_renders(chat["messages"])
        tools = chat.get("tools")
        full = self.counter.render(messages, tools=tools, add_generation_prompt=False)
        spans = list(self._assistant_spans(messages, tools, full, line))
        ids, offsets = self._ids(full)
        trained = tuple(
            end > start and i not in self._untrained and any(s.start <= start < s.end for s in spans)
            for i, (start, end) in zip(ids, offsets, strict=True)
        )
        return Example(line=line, ids=tuple(ids), trained=trained)

    def _assistant_spans(self, messages: list[Any], tools: Any, full: str, line: int) -> Iterator[_Span]:
        render = self.counter.render
        for i, message in enumerate(messages):
            if message.get("role") != "assistant" or message.get("weight", 1) == 0:
                continue
            before = render(messages[:i], tools=tools, add_generation_prompt=True)
            through = render(messages[: i + 1], tools=tools, add_generation_prompt=False)
            if not (through.startswith(before) and full.startswith(through)):
                raise TrainingDataError(
                    f"line {line}: the base model's chat template renders earlier turns differently once a later "
                    "turn is added, so the assistant's tokens cannot be told apart; train on one answer per chat"
                )
            end = len(through.rstrip())
            if end > len(before):
                yield _Span(len(before), end)


def _chats(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                chat = json.loads(raw)
            except ValueError as exc:
                raise TrainingDataError(f"{path.name} line {number}: not JSON ({exc})") from exc
            messages = chat.get("messages") if isinstance(chat, dict) else None
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise TrainingDataError(f"{path.name} line {number}: expected an object with a `messages` list")
            yield number, chat


def load_examples(path: Path, tokenizer: ChatTokenizer, max_seq_length: int) -> list[Example]:
    """Every chat of a JSONL file as an `Example`. An example longer than `max_seq_length` tokens, or
    with no assistant token to train on, is an error naming its line."""
    examples = []
    for number, chat in _chats(path):
        example = tokenizer.example(chat, number)
        if len(example.ids) > max_seq_length:
            raise TrainingDataError(
                f"{path.name} line {number}: {len(example.ids)} tokens, over the maximum of {max_seq_length} "
                "for one training example"
            )
        if not example.trained_count:
            raise TrainingDataError(f"{path.name} line {number}: no assistant answer to train on")
        examples.append(example)
    if not examples:
        raise TrainingDataError(f"{path.name}: no training examples")
    return examples
