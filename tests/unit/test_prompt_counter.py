"""The gateway's prompt counter (catalog/tokenizer.py) on the tiny model's real Qwen tokenizer and template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from yun.catalog.tokenizer import PromptCounter, load_counter


class _CountingTokenizer:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode(self, text: str, **kw: Any) -> Any:
        self.texts.append(text)
        return self.inner.encode(text, **kw)


@pytest.fixture(scope="module")
def counter(tiny_model: Path) -> PromptCounter:
    c = load_counter(tiny_model)
    assert c is not None and c.placeholder == "<|endoftext|>"
    return c


def test_a_resent_history_is_tokenized_once(counter: PromptCounter) -> None:
    history = [
        {"role": "system", "content": "You are terse. " * 30},
        {"role": "user", "content": "Explain this diff:\n" + "- old line\n+ new line\n" * 20},
    ]
    first = counter.chat({"messages": history})
    spy = _CountingTokenizer(counter.tokenizer)
    counter.tokenizer = spy
    try:
        turn = [*history, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]
        second = counter.chat({"messages": turn})
    finally:
        counter.tokenizer = spy.inner
    assert first is not None and second is not None and second > first
    # Only the rendered skeleton (placeholders + the short new messages) was tokenized again.
    assert len(spy.texts) == 1 and "You are terse." not in spy.texts[0] and "and?" in spy.texts[0]


def test_long_and_short_texts_count_the_same_either_way(counter: PromptCounter) -> None:
    long = "naïve café, 1234 " * 40
    assert counter.text(long) == counter.text(long) == len(counter.tokenizer.encode(long, add_special_tokens=False))
    assert counter.text("Hello world") == 2
