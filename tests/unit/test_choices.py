"""Several choices per request (gateway/choices.py): one engine body per choice, and the legacy
completions' shape of the engine's choices."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from yun.errors import EngineFailure
from yun.gateway.choices import TextChoices, choice_bodies, fan_out


def test_one_choice_is_the_body_itself() -> None:
    body = {"prompt": "x"}
    assert choice_bodies(body, 1) == [body] and choice_bodies(body, 1)[0] is body


def test_seeded_choices_differ_and_repeat() -> None:
    bodies = choice_bodies({"seed": 2**32 - 2, "x": 1}, 3)
    assert [b["seed"] for b in bodies] == [2**32 - 2, 2**32 - 1, 0]  # llama.cpp's seeds are 32-bit
    assert bodies == choice_bodies({"seed": 2**32 - 2, "x": 1}, 3)
    assert [b.get("seed") for b in choice_bodies({"x": 1}, 2)] == [None, None]  # unseeded: sampled apart


def _engine_choice(index: int, tokens: list[str]) -> dict[str, Any]:
    content = [
        {"token": t, "logprob": -0.5, "top_logprobs": [{"token": t, "logprob": -0.5}, {"token": "?", "logprob": -3.0}]}
        for t in tokens
    ]
    return {"index": index, "text": "".join(tokens), "logprobs": {"content": content}}


def test_logprobs_in_the_completions_shape_run_across_chunks() -> None:
    shape = TextChoices(None)
    first, second, other = _engine_choice(0, ["de", "f"]), _engine_choice(0, [" x"]), _engine_choice(1, ["ab"])
    for c in (first, other, second):
        shape.choice(c)
    assert first["logprobs"] == {
        "tokens": ["de", "f"],
        "token_logprobs": [-0.5, -0.5],
        "top_logprobs": [{"de": -0.5, "?": -3.0}, {"f": -0.5, "?": -3.0}],
        "text_offset": [0, 2],
    }
    assert second["logprobs"]["text_offset"] == [3]  # after "def", in choice 0's own text
    assert other["logprobs"]["text_offset"] == [0]


def test_echo_goes_before_each_choices_first_text_only() -> None:
    shape = TextChoices(["p0", "p1"])
    chunks = [{"index": 1, "text": "a"}, {"index": 0, "text": "b"}, {"index": 1, "text": "c"}]
    for c in chunks:
        shape.choice(c)
    assert [c["text"] for c in chunks] == ["p1a", "p0b", "c"]
    passthrough = {"index": 0, "text": "t", "logprobs": {"tokens": ["t"]}}  # already OpenAI's shape (upstream)
    TextChoices(None).choice(passthrough)
    assert passthrough["logprobs"] == {"tokens": ["t"]}


async def test_fan_out_keeps_order_and_raises_the_first_error_itself() -> None:
    async def call(body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01 * (3 - body["i"]))
        return {"i": body["i"]}

    assert await fan_out(call, [{"i": i} for i in range(3)]) == [{"i": 0}, {"i": 1}, {"i": 2}]
    cancelled: list[int] = []

    async def failing(body: dict[str, Any]) -> dict[str, Any]:
        if body["i"] == 1:
            raise EngineFailure("engine x failed")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(body["i"])
            raise
        return body

    with pytest.raises(EngineFailure):  # the domain error, not an ExceptionGroup the API cannot map
        await fan_out(failing, [{"i": i} for i in range(3)])
    assert sorted(cancelled) == [0, 2]
