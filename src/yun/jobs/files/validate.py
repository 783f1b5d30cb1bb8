"""Checks of JSONL files: fine-tuning data (chat examples) and batch input (requests), each error naming
its line and the problem.

The checks run on a stream, a line at a time (`JsonlCheck.feed` takes the bytes as they arrive), so an
upload is checked while it is stored, never held whole. At upload, a fine-tuning file is checked for its
shape (everything but length: the model is not known yet); the fine-tuning job checks it again with the
model's tokenizer and context (`check_fine_tune_file`, with a `count_tokens` that renders the messages
through the model's chat template, as gateway/prompt.py counts a chat prompt).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from yun.catalog.tokenizer import PromptCounter
from yun.errors import InvalidRequest

__all__ = [
    "MAX_LINE_BYTES",
    "MIN_EXAMPLES",
    "BatchCheck",
    "FineTuneCheck",
    "FineTuneReport",
    "JsonlCheck",
    "TokenCounter",
    "check_fine_tune_file",
    "checker_for",
    "model_token_counter",
]

MIN_EXAMPLES = 10
"""OpenAI refuses a fine-tuning file of fewer examples; so does Yun."""
MAX_LINE_BYTES = 32 * 1024 * 1024
"""The longest line a check buffers: a line is held whole to parse it, so this bounds the memory."""
ROLES = frozenset({"system", "user", "assistant", "tool"})
_BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")

TokenCounter = Callable[[list[dict[str, Any]]], int]
"""Tokens of one example's messages as the model sees them (rendered through its chat template)."""


def _bad(line: int, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid file: line {line}: {problem}", param="file", code="invalid_file")


class JsonlCheck:
    """Splits a byte stream into lines and checks each JSON object (`check_object`); blank lines are
    skipped. `feed` the bytes as they arrive, then `finish`; both raise InvalidRequest naming the line."""

    def __init__(self) -> None:
        self.line = 0
        self.count = 0
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if self._partial:
                self._partial += chunk[start:end]
                self._one(bytes(self._partial))
                self._partial.clear()
            else:
                self._one(chunk[start:end])
            start = end + 1
        self._partial += chunk[start:]
        if len(self._partial) > MAX_LINE_BYTES:
            raise _bad(self.line + 1, f"the line is longer than {MAX_LINE_BYTES} bytes.")

    def finish(self) -> None:
        if self._partial:
            self._one(bytes(self._partial))
            self._partial.clear()
        self.check_total()

    def _one(self, raw: bytes) -> None:
        self.line += 1
        if not raw.strip():
            return
        try:
            value = json.loads(raw)
        except UnicodeDecodeError:
            raise _bad(self.line, "not valid UTF-8.") from None
        except ValueError as exc:
            raise _bad(self.line, f"not valid JSON ({exc}).") from None
        if not isinstance(value, dict):
            raise _bad(self.line, f"expected a JSON object, got {type(value).__name__}.")
        self.count += 1
        self.check_object(self.line, value)

    def check_object(self, line: int, value: dict[str, Any]) -> None:
        """Check one object of the file (line `line`)."""

    def check_total(self) -> None:
        """Check the file as a whole, once all its lines passed."""


class FineTuneCheck(JsonlCheck):
    """Chat fine-tuning examples: `{"messages": [{"role", "content"}, ...]}` with an assistant turn; at
    least MIN_EXAMPLES of them; with `count_tokens` and `context_length`, none longer than the context."""

    def __init__(self, count_tokens: TokenCounter | None = None, context_length: int | None = None) -> None:
        super().__init__()
        if (count_tokens is None) != (context_length is None):
            raise ValueError("count_tokens and context_length go together")
        self.count_tokens = count_tokens
        self.context_length = context_length
        self.tokens = 0
        """Tokens of all the examples (with `count_tokens`): what one epoch trains on."""

    def check_object(self, line: int, value: dict[str, Any]) -> None:
        messages = value.get("messages")
        if messages is None:
            raise _bad(line, "missing 'messages'.")
        if not isinstance(messages, list) or not messages:
            raise _bad(line, "'messages' must be a non-empty list.")
        for i, message in enumerate(messages):
            _check_message(line, i, message)
        if not any(m["role"] == "assistant" for m in messages):
            raise _bad(line, "no assistant message: each example needs at least one assistant turn to learn from.")
        if self.count_tokens is not None and self.context_length is not None:
            tokens = self.count_tokens(messages)
            if tokens > self.context_length:
                raise _bad(
                    line, f"the example is {tokens} tokens, longer than the model's context of {self.context_length}."
                )
            self.tokens += tokens

    def check_total(self) -> None:
        if self.count < MIN_EXAMPLES:
            raise InvalidRequest(
                f"Invalid file: it has {self.count} example(s); fine-tuning needs at least {MIN_EXAMPLES}.",
                param="file",
                code="invalid_file",
            )


def _check_message(line: int, index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _bad(line, f"{where} must be an object with 'role' and 'content'.")
    role = message.get("role")
    if role not in ROLES:
        raise _bad(line, f"{where} has role {role!r}; it must be one of {', '.join(sorted(ROLES))}.")
    content = message.get("content")
    calls = role == "assistant" and (message.get("tool_calls") or message.get("function_call"))
    if content is None and not calls:
        raise _bad(line, f"{where} ({role}) has no 'content'.")
    if content is not None and not isinstance(content, str | list):
        raise _bad(line, f"{where} ({role}): 'content' must be a string or a list of content parts.")


class BatchCheck(JsonlCheck):
    """Batch input: one request per line, `{"custom_id", "method": "POST", "url", "body"}`, custom ids unique."""

    def __init__(self) -> None:
        super().__init__()
        self._ids: dict[str, int] = {}

    def check_object(self, line: int, value: dict[str, Any]) -> None:
        custom_id = value.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise _bad(line, "'custom_id' must be a non-empty string.")
        if custom_id in self._ids:
            raise _bad(line, f"custom_id {custom_id!r} is already used on line {self._ids[custom_id]}.")
        self._ids[custom_id] = line
        if value.get("method") != "POST":
            raise _bad(line, "'method' must be \"POST\".")
        url = value.get("url")
        if url not in _BATCH_URLS:
            raise _bad(line, f"'url' must be one of {', '.join(_BATCH_URLS)}; got {url!r}.")
        if not isinstance(value.get("body"), dict):
            raise _bad(line, "'body' must be a JSON object (the request).")

    def check_total(self) -> None:
        if self.count == 0:
            raise InvalidRequest("Invalid file: it has no requests.", param="file", code="invalid_file")


def model_token_counter(counter: PromptCounter) -> TokenCounter:
    """A TokenCounter from a model's own tokenizer and chat template (`catalog.tokenizer.load_counter` of
    its GGUF), counting an example as the gateway counts a chat prompt. Where the template cannot be
    rendered here, the example's JSON text is counted instead (longer than the rendered messages)."""

    def count(messages: list[dict[str, Any]]) -> int:
        rendered = counter.chat({"messages": messages})
        return rendered if rendered is not None else counter.text(json.dumps(messages, ensure_ascii=False))

    return count


@dataclass(frozen=True)
class FineTuneReport:
    examples: int
    tokens: int
    """Tokens of one epoch (0 without a token counter)."""


async def check_fine_tune_file(
    chunks: AsyncIterable[bytes] | Iterable[bytes],
    *,
    count_tokens: TokenCounter | None = None,
    context_length: int | None = None,
) -> FineTuneReport:
    """Check a whole fine-tuning file as the job reads it (e.g. `await store.open(key)`), with the model's
    token counter and context; InvalidRequest naming the first bad line, else how many examples and tokens."""
    check = FineTuneCheck(count_tokens, context_length)
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            check.feed(chunk)
    else:
        for chunk in chunks:
            check.feed(chunk)
    check.finish()
    return FineTuneReport(check.count, check.tokens)


def checker_for(purpose: str) -> JsonlCheck:
    """The upload-time check of a file of this purpose (no length check: the model is not known yet)."""
    return BatchCheck() if purpose == "batch" else FineTuneCheck()
