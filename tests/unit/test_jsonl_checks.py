"""The JSONL checks on their own: lines split across chunks, each error naming its line, and the length
check the fine-tuning job runs with the model's token counter and context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from yun.catalog.tokenizer import load_counter
from yun.errors import InvalidRequest
from yun.jobs.files.validate import (
    MIN_EXAMPLES,
    BatchCheck,
    FineTuneCheck,
    check_fine_tune_file,
    model_token_counter,
)


def _line(content: str = "hi", answer: str = "hello") -> bytes:
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages}).encode() + b"\n"


def _words(messages: list[dict[str, Any]]) -> int:
    """A stand-in tokenizer: one token per word of every message."""
    return sum(len(str(m.get("content") or "").split()) for m in messages)


def test_lines_split_across_any_chunks_are_checked_whole() -> None:
    data = b"".join(_line(f"question {i}") for i in range(MIN_EXAMPLES)) + b"\r\n\n"
    for size in (1, 7, 64, len(data)):
        check = FineTuneCheck()
        for i in range(0, len(data), size):
            check.feed(data[i : i + size])
        check.finish()
        assert check.count == MIN_EXAMPLES


def test_the_last_line_needs_no_newline_and_a_bad_one_is_named() -> None:
    check = FineTuneCheck()
    check.feed(b"".join(_line() for _ in range(MIN_EXAMPLES)) + b'{"messages": 5}')
    with pytest.raises(InvalidRequest, match=r"line 11: 'messages' must be a non-empty list"):
        check.finish()


def test_invalid_utf8_is_named() -> None:
    with pytest.raises(InvalidRequest, match="line 2: not valid UTF-8"):
        FineTuneCheck().feed(_line() + b'{"messages": "\xff"}\n')


def test_an_assistant_turn_of_tool_calls_needs_no_content() -> None:
    call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}
    ok = {"messages": [{"role": "user", "content": "x"}, call, {"role": "tool", "content": "4"}]}
    check = FineTuneCheck()
    check.feed(json.dumps(ok).encode() + b"\n")
    assert check.count == 1
    with pytest.raises(InvalidRequest, match="content' must be a string or a list"):
        check.feed(b'{"messages": [{"role": "user", "content": 5}]}\n')


async def test_the_job_checks_length_against_the_models_context() -> None:
    lines = [_line("one two three") for _ in range(MIN_EXAMPLES)]
    report = await check_fine_tune_file(lines, count_tokens=_words, context_length=4)
    assert (report.examples, report.tokens) == (MIN_EXAMPLES, 4 * MIN_EXAMPLES)
    long = [*lines[:4], _line("one two three four five"), *lines[4:]]
    with pytest.raises(InvalidRequest, match="line 5: the example is 6 tokens, longer than the model's context of 4"):
        await check_fine_tune_file(long, count_tokens=_words, context_length=4)

    async def chunks() -> Any:
        for line in lines[:3]:
            yield line

    with pytest.raises(InvalidRequest, match="it has 3 example"):
        await check_fine_tune_file(chunks(), count_tokens=_words, context_length=4)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"method": "POST", "url": "/v1/chat/completions", "body": {}}, "'custom_id' must be a non-empty string"),
        ({"custom_id": "a", "method": "POST", "url": "/v1/models", "body": {}}, "'url' must be one of"),
        ({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": []}, "'body' must be a JSON object"),
    ],
)
def test_batch_lines(line: dict[str, Any], problem: str) -> None:
    good = {"custom_id": "z", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    check = BatchCheck()
    with pytest.raises(InvalidRequest, match=f"line 2: {problem}"):
        check.feed(json.dumps(good).encode() + b"\n" + json.dumps(line).encode() + b"\n")
    with pytest.raises(InvalidRequest, match="no requests"):
        BatchCheck().finish()


async def test_length_with_the_tiny_models_own_tokenizer(tiny_model: Path) -> None:
    """What the fine-tuning job does: the model's tokenizer and chat template count each example."""
    counter = load_counter(tiny_model)
    assert counter is not None
    count = model_token_counter(counter)
    short, long = _line("hi"), _line("word " * 400)
    tokens = count(json.loads(short)["messages"])
    assert 4 < tokens < 60  # the template's role markers and the two contents
    assert count(json.loads(long)["messages"]) > 400
    report = await check_fine_tune_file([short] * MIN_EXAMPLES, count_tokens=count, context_length=256)
    assert report.tokens == tokens * MIN_EXAMPLES
    with pytest.raises(
        InvalidRequest, match="line 3: the example is \\d+ tokens, longer than the model's context of 256"
    ):
        await check_fine_tune_file([short, short, long] + [short] * 9, count_tokens=count, context_length=256)
