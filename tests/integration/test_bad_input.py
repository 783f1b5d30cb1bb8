"""Every endpoint, fed malformed bodies, wrong types, absurd values and unknown fields:
OpenAI-shaped 4xx answers, never a 500, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
EMBD = "/v1/embeddings"
M = [{"role": "user", "content": "hi"}]

CASES: list[tuple[str, Any, int, str | None]] = [
    # (path, body (bytes = raw), status, expected param)
    (CHAT, b"", 400, None),
    (CHAT, b"{not json", 400, None),
    (CHAT, b"[1, 2, 3]", 400, None),
    (CHAT, b'"just a string"', 400, None),
    (CHAT, b"\xff\xfe\x00garbage", 400, None),
    (CHAT, {"messages": M}, 400, "model"),
    (CHAT, {"model": "tiny"}, 400, "messages"),
    (CHAT, {"model": "tiny", "messages": []}, 400, "messages"),
    (CHAT, {"model": "tiny", "messages": "hi"}, 400, "messages"),
    (CHAT, {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    (CHAT, {"model": "tiny", "messages": [{"role": "user"}]}, 400, "messages.0.content"),
    (CHAT, {"model": "tiny", "messages": [{"role": "user", "content": 42}]}, 400, "messages.0.content"),
    (CHAT, {"model": 7, "messages": M}, 400, "model"),
    (CHAT, {"model": "tiny", "messages": M, "max_tokens": "5"}, 400, "max_tokens"),
    (CHAT, {"model": "tiny", "messages": M, "max_tokens": -1}, 400, "max_tokens"),
    (CHAT, {"model": "tiny", "messages": M, "max_tokens": 10**30}, 400, "max_tokens"),
    (CHAT, {"model": "tiny", "messages": M, "max_tokens": 1.5}, 400, "max_tokens"),
    (CHAT, {"model": "tiny", "messages": M, "temperature": 99}, 400, "temperature"),
    (CHAT, {"model": "tiny", "messages": M, "temperature": "hot"}, 400, "temperature"),
    (CHAT, {"model": "tiny", "messages": M, "top_p": -0.1}, 400, "top_p"),
    (CHAT, {"model": "tiny", "messages": M, "stream": "yes"}, 400, "stream"),
    (CHAT, {"model": "tiny", "messages": M, "stream_options": {"include_usage": True}}, 400, None),
    (CHAT, {"model": "tiny", "messages": M, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (CHAT, {"model": "tiny", "messages": M, "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    (CHAT, {"model": "tiny", "messages": M, "logit_bias": {"5": 1000}}, 400, "logit_bias"),
    (CHAT, {"model": "tiny", "messages": M, "n": 0}, 400, "n"),
    (CHAT, {"model": "tiny", "messages": M, "response_format": {"type": "xml"}}, 400, "response_format.type"),
    (
        CHAT,
        {"model": "tiny", "messages": M, "response_format": {"type": "json_schema"}},
        400,
        "response_format.json_schema",
    ),
    (
        CHAT,
        {"model": "tiny", "messages": M, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        400,
        "tools.0.function.name",
    ),
    (CHAT, {"model": "tiny", "messages": M, "tool_choice": "required"}, 400, "tool_choice"),
    (
        CHAT,
        {
            "model": "tiny",
            "messages": M,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        400,
        "tool_choice",
    ),
    (
        CHAT,
        {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages.0.content",
    ),
    (CHAT, {"model": "nope", "messages": M}, 404, "model"),
    (CHAT, {"model": "x" * 10_000, "messages": M}, 400, "model"),
    (CMPL, {"model": "tiny"}, 400, "prompt"),
    (CMPL, {"model": "tiny", "prompt": []}, 400, "prompt"),
    (CMPL, {"model": "tiny", "prompt": {"a": 1}}, 400, "prompt"),
    (CMPL, {"model": "tiny", "prompt": "x", "echo": True, "logprobs": 1}, 400, "echo"),
    (CMPL, {"model": "tiny", "prompt": ["x"] * 64, "n": 3}, 400, "n"),
    (CMPL, {"model": "tiny", "prompt": "x", "top_k": -1}, 400, "top_k"),
    (CMPL, {"model": "tiny", "prompt": "x", "grammar": 5}, 400, "grammar"),
    (CHAT, {"model": "tiny", "messages": M, "mirostat": 3}, 400, "mirostat"),
    (CHAT, {"model": "tiny", "messages": M, "min_p": 1.5}, 400, "min_p"),
    (CHAT, {"model": "tiny", "messages": M, "some_future_field": 1}, 400, "some_future_field"),
    (CMPL, {"model": "tiny", "prompt": "x", "best_of": 3}, 400, "best_of"),
    (CMPL, {"model": "tiny", "prompt": "x", "suffix": "y"}, 400, "suffix"),
    (CMPL, {"model": "tiny", "prompt": [-5]}, 400, "prompt"),
    (CMPL, {"model": "minilm", "prompt": "x"}, 400, "model"),
    (EMBD, {"model": "minilm"}, 400, "input"),
    (EMBD, {"model": "minilm", "input": ""}, 400, "input"),
    (EMBD, {"model": "minilm", "input": []}, 400, "input"),
    (EMBD, {"model": "minilm", "input": [1.5]}, 400, "input"),
    (EMBD, {"model": "minilm", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    (EMBD, {"model": "minilm", "input": "x", "dimensions": 0}, 400, "dimensions"),
    (EMBD, {"model": "minilm", "input": ["x"] * 3000}, 400, "input"),
    (EMBD, {"model": "nope", "input": "x"}, 404, "model"),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), CASES)
async def test_bad_input_gets_a_clear_4xx(yun: Harness, path: str, body: Any, status: int, param: str | None) -> None:
    if isinstance(body, bytes):
        r = await yun.http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = await yun.http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]
    assert "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] == param or (err["param"] or "").startswith(param), err


async def test_harmless_unknown_fields_are_accepted(yun: Harness) -> None:
    r = await yun.http.post(
        CHAT,
        json={"model": "tiny", "messages": M, "max_tokens": 2, "metadata": {"a": "b"}, "store": False, "user": None},
    )
    assert r.status_code == 200, r.text


async def test_oversized_body_is_413(yun: Harness) -> None:
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 300_000}]}
    r = await yun.http.post(CHAT, json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"

    async def chunked() -> Any:
        for _ in range(30):
            yield b"x" * 10_000

    r = await yun.http.post(CHAT, content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


async def test_unknown_route_and_method(yun: Harness) -> None:
    r = await yun.http.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = await yun.http.get(CHAT)
    assert r.status_code == 405 and "error" in r.json()


async def test_still_serving_after_the_abuse(yun: Harness) -> None:
    r = await yun.client.chat.completions.create(model="tiny", messages=M, max_tokens=2)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 2
