"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) through the official `anthropic` SDK,
against the real server (uvicorn on loopback) and real xllamacpp replicas of the tiny model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio

from tests.integration.conftest import Harness
from tests.integration.tenants import NANO, new_org, org_get, priced

TOKEN_PRICE = {"input": "1000", "output": "2000"}  # USD per 1M tokens, no cached price

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER = [{"role": "user", "content": "Say something."}]
# Sampling parameters are not arguments of this SDK's `create` any more; clients send them as extra body.
GREEDY = {"temperature": 0}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    # An enum keeps the forced call short on the tiny model (its grammar admits two strings only).
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def sdk(yun: Harness, key: str | None = None, **kwargs: Any) -> anthropic.AsyncAnthropic:
    """The SDK as a client would use it: the server's root as base_url, the key as x-api-key."""
    if "auth_token" not in kwargs:
        kwargs["api_key"] = key or yun.key
    return anthropic.AsyncAnthropic(base_url=yun.base_url, max_retries=0, **kwargs)


@pytest_asyncio.fixture(loop_scope="session")
async def client(yun: Harness) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk(yun) as c:
        yield c


async def record_of(yun: Harness, key: str, request_id: str) -> dict[str, Any]:
    """The settled usage record of one request (settlement is written off the request path)."""
    for _ in range(100):
        records = (await org_get(yun, key, "usage/records"))["data"]
        found = [r for r in records if r["request_id"] == request_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def billed_as(usage: Any, record: dict[str, Any]) -> None:
    """Anthropic's usage is the record's engine counts: input + cache reads = the prompt tokens billed."""
    assert usage.input_tokens + usage.cache_read_input_tokens == record["prompt_tokens"]
    assert usage.cache_read_input_tokens == record["cached_tokens"]
    assert usage.output_tokens == record["completion_tokens"]
    assert usage.cache_creation_input_tokens == 0


async def test_create_answers_a_message_billed_exactly(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    async with priced(yun, TOKEN_PRICE), sdk(yun, key) as c:
        m = await c.messages.create(model="tiny", max_tokens=7, messages=USER, extra_body=GREEDY)  # type: ignore[arg-type]
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == "tiny"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text  # type: ignore[union-attr]
    # The tiny model never ends its turn by itself: it writes exactly max_tokens.
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None and m.usage.output_tokens == 7
    record = await record_of(yun, key, m.id)
    assert record["endpoint"] == "messages" and record["status"] == "ok" and record["model_id"] == "tiny"
    billed_as(m.usage, record)
    cost = round(m.usage.model_extra["cost"] * NANO)  # type: ignore[index]
    assert cost == record["prompt_tokens"] * 1_000_000 + 7 * 2_000_000 > 0
    assert (await org_get(yun, key, "balance"))["balance_nanodollars"] == 10 * NANO - cost
    assert yun.services.billing.money.ledger_sum(org) == 10 * NANO - cost


async def test_stream_sends_anthropics_events_and_the_final_message(yun: Harness) -> None:
    _, key = await new_org(yun, "10")
    async with sdk(yun, key) as c:
        async with c.messages.stream(model="tiny", max_tokens=5, messages=USER, extra_body=GREEDY) as stream:  # type: ignore[arg-type]
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        plain = await c.messages.create(model="tiny", max_tokens=5, messages=USER, extra_body=GREEDY)  # type: ignore[arg-type]
    assert text and final.content[0].text == text == plain.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
    assert final.id.startswith("msg_")
    billed_as(final.usage, await record_of(yun, key, final.id))
    # The raw events, in Anthropic's order, each named by its `event:` line.
    async with (
        httpx.AsyncClient(base_url=yun.base_url, headers={"x-api-key": key}, timeout=30) as http,
        http.stream(
            "POST", "/v1/messages", json={"model": "tiny", "max_tokens": 3, "messages": USER, "stream": True}
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    events = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert [e["type"] for e in events] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert events[0]["message"]["id"] == events[0]["message"]["id"] and events[0]["message"]["content"] == []
    assert events[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == 3
    assert all(e["delta"]["type"] == "text_delta" for e in events[3:-3])


async def test_system_and_multi_turn_are_the_prompt_count_tokens_counts(client: anthropic.AsyncAnthropic) -> None:
    turns: Any = [
        {"role": "user", "content": "What is two and two?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Four."}]},
        {"role": "user", "content": [{"type": "text", "text": "And three"}, {"type": "text", "text": "and three?"}]},
    ]
    system = "You answer in numbers."
    as_string = await client.messages.count_tokens(model="tiny", messages=turns, system=system)
    as_blocks = await client.messages.count_tokens(
        model="tiny", messages=turns, system=[{"type": "text", "text": system}]
    )
    without = await client.messages.count_tokens(model="tiny", messages=turns)
    first_only = await client.messages.count_tokens(model="tiny", messages=turns[:1], system=system)
    # Without a system prompt, Qwen's template writes its own default one: a different prompt either way.
    assert as_string.input_tokens == as_blocks.input_tokens != without.input_tokens
    assert as_string.input_tokens > first_only.input_tokens
    m = await client.messages.create(
        model="tiny",
        max_tokens=3,
        messages=turns,
        system=system,
        extra_body={"top_p": 0.9, "top_k": 5, "temperature": 0.5},
        metadata={"user_id": "u-1"},
    )
    # count_tokens counts the engine's own prompt: Anthropic's input_tokens plus the prompt-cache reads.
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == as_string.input_tokens
    assert m.usage.output_tokens == 3


async def test_tool_use_round_trip(client: anthropic.AsyncAnthropic) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    m = await client.messages.create(
        model="tiny",
        max_tokens=200,
        messages=ask,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    )
    assert m.stop_reason == "tool_use"
    [call] = [b for b in m.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input["city"] in ("Paris", "Oslo")  # type: ignore[index]
    assert call.id.startswith("toolu_")
    # The same, streamed: the tool_use block's input arrives as input_json_delta and the SDK parses it.
    async with client.messages.stream(
        model="tiny",
        max_tokens=200,
        messages=ask,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    ) as stream:
        streamed = await stream.get_final_message()
    [streamed_call] = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and streamed_call.input == call.input  # type: ignore[union-attr]
    # The result goes back as a tool_result block; the model answers the next turn.
    result: Any = {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "Sunny"}]}
    turns: Any = [*ask, {"role": "assistant", "content": m.content}, {"role": "user", "content": [result]}]
    counted = await client.messages.count_tokens(model="tiny", messages=turns, tools=[WEATHER])  # type: ignore[list-item]
    answer = await client.messages.create(model="tiny", max_tokens=4, messages=turns, tools=[WEATHER])  # type: ignore[list-item]
    assert answer.usage.output_tokens <= 4 and answer.stop_reason in ("max_tokens", "end_turn", "tool_use")
    prompt = answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0)
    before = m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)
    assert prompt > before  # the call and its result are in the prompt
    assert abs(counted.input_tokens - prompt) <= 8  # tools and tool calls are rendered through JSON
    errored = await client.messages.create(
        model="tiny",
        max_tokens=1,
        messages=[*turns[:2], {"role": "user", "content": [{**result, "content": "no such city", "is_error": True}]}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert errored.usage.output_tokens == 1


async def test_output_config_format_constrains_the_text_to_the_schema(client: anthropic.AsyncAnthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    m = await client.messages.create(
        model="tiny",
        max_tokens=60,
        messages=USER,  # type: ignore[arg-type]
        output_config={"format": {"type": "json_schema", "schema": schema}},
        extra_body=GREEDY,
    )
    data = json.loads(m.content[0].text)  # type: ignore[union-attr]
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


async def test_stop_sequences_end_the_message_with_stop_sequence(client: anthropic.AsyncAnthropic) -> None:
    base = await client.messages.create(model="tiny", max_tokens=6, messages=USER, extra_body=GREEDY)  # type: ignore[arg-type]
    text = base.content[0].text  # type: ignore[union-attr]
    stop = text[:1]
    m = await client.messages.create(
        model="tiny", max_tokens=6, messages=USER, extra_body=GREEDY, stop_sequences=["never-written-here", stop]
    )  # type: ignore[arg-type]
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop and m.usage.output_tokens < 6
    async with client.messages.stream(
        model="tiny", max_tokens=6, messages=USER, extra_body=GREEDY, stop_sequences=[stop]
    ) as stream:  # type: ignore[arg-type]
        final = await stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    unmatched = await client.messages.create(
        model="tiny", max_tokens=6, messages=USER, extra_body=GREEDY, stop_sequences=["never-written-here"]
    )  # type: ignore[arg-type]
    assert unmatched.stop_reason == "max_tokens" and unmatched.stop_sequence is None


async def test_authentication_by_x_api_key_or_bearer(yun: Harness) -> None:
    async with sdk(yun, auth_token=yun.key) as bearer:  # Authorization: Bearer, as on the OpenAI routes
        m = await bearer.messages.create(model="tiny", max_tokens=1, messages=USER)  # type: ignore[arg-type]
    assert m.usage.output_tokens == 1
    async with sdk(yun, "yun-" + "A" * 43) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await wrong.messages.create(model="tiny", max_tokens=1, messages=USER)  # type: ignore[arg-type]
        assert info.value.status_code == 401 and info.value.type == "authentication_error"
        assert info.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
        }
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.count_tokens(model="tiny", messages=USER)  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=yun.base_url, timeout=30) as http:
        r = await http.post("/v1/messages", json={"model": "tiny", "max_tokens": 1, "messages": USER})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_errors_are_anthropic_shaped_on_these_routes_only(yun: Harness, client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        await client.messages.create(model="no-such-model", max_tokens=1, messages=USER)  # type: ignore[arg-type]
    assert nf.value.status_code == 404 and nf.value.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="no-such-model", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError) as image:
        await client.messages.create(
            model="tiny",
            max_tokens=1,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
                    ],
                }
            ],
        )
    assert image.value.type == "invalid_request_error" and "messages.0.content.1" in str(image.value.body)
    headers = {"x-api-key": yun.key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    cases: list[tuple[bytes, int, str, str]] = [
        (json.dumps({"model": "tiny", "messages": USER}).encode(), 400, "invalid_request_error", "max_tokens"),
        (b'{"model": "tiny", "max_tokens": 5, "messages": [', 400, "invalid_request_error", "JSON"),
        (
            json.dumps({"model": "tiny", "max_tokens": 0, "messages": USER}).encode(),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json.dumps({"model": "tiny", "max_tokens": 5, "messages": []}).encode(),
            400,
            "invalid_request_error",
            "messages",
        ),
        (
            json.dumps(
                {
                    "model": "tiny",
                    "max_tokens": 5,
                    "messages": USER,
                    "thinking": {"type": "enabled", "budget_tokens": 1024},
                }
            ).encode(),
            400,
            "invalid_request_error",
            "thinking",
        ),
        (
            json.dumps({"model": "tiny", "max_tokens": 5, "messages": USER, "tool_choice": {"type": "any"}}).encode(),
            400,
            "invalid_request_error",
            "tool_choice",
        ),
        (
            json.dumps(
                {
                    "model": "tiny",
                    "max_tokens": 5,
                    "messages": USER,
                    "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                }
            ).encode(),
            400,
            "invalid_request_error",
            "tools.0",
        ),
        (
            json.dumps({"model": "minilm", "max_tokens": 5, "messages": USER}).encode(),
            400,
            "invalid_request_error",
            "minilm",
        ),
        (b"x" * 200_001, 413, "request_too_large", "limit"),
    ]
    async with httpx.AsyncClient(base_url=yun.base_url, headers=headers, timeout=30) as http:
        for body, status, type_, mentions in cases:
            r = await http.post("/v1/messages", content=body)
            assert r.status_code == status, (body[:200], r.text)
            answer = r.json()
            assert answer["type"] == "error" and answer["error"]["type"] == type_, answer
            assert mentions in answer["error"]["message"], answer
        r = await http.post("/v1/messages/count_tokens", content=b"{")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await http.get("/v1/messages")
        assert r.status_code == 405 and r.json()["type"] == "error"
        # Every other route keeps OpenAI's shape.
        r = await http.post("/v1/chat/completions", json={"model": "tiny"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value" and "type" not in r.json()


async def test_out_of_credit_is_a_billing_error(yun: Harness) -> None:
    _, key = await new_org(yun, "0.00001")
    async with priced(yun, TOKEN_PRICE), sdk(yun, key) as c:
        with pytest.raises(anthropic.APIStatusError) as info:
            await c.messages.create(model="tiny", max_tokens=50, messages=USER)  # type: ignore[arg-type]
        # Counting is not billed: it works with no credit at all.
        counted = await c.messages.count_tokens(model="tiny", messages=USER)  # type: ignore[arg-type]
    assert info.value.status_code == 402 and info.value.type == "billing_error"
    assert counted.input_tokens > 5
    assert (await org_get(yun, key, "usage/records"))["data"] == []


async def test_an_engine_that_dies_mid_stream_ends_it_with_an_error_event(yun: Harness) -> None:
    """Output has reached the client, so the request cannot move to another replica: the stream ends
    with Anthropic's `event: error`, and the request is billed what the engine generated."""
    from tests.integration.test_replicas import _engine_pid, _until

    _, key = await new_org(yun, "100")
    address = yun.services.router.get("tiny").replicas[0].address
    deltas, error = 0, None
    body = {"model": "tiny", "max_tokens": 3000, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=yun.base_url, headers={"x-api-key": key}, timeout=60) as http,
        http.stream("POST", "/v1/messages", json=body) as r,
    ):
        assert r.status_code == 200
        name = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if name == "error":
                    error = event
                elif event["type"] == "content_block_delta":
                    deltas += 1
                    if deltas == 5:
                        os.kill(_engine_pid(address), signal.SIGKILL)
    assert error is not None and error["type"] == "error" and error["error"]["type"] == "api_error", error
    assert 5 <= deltas < 3000
    records = (await org_get(yun, key, "usage/records"))["data"]
    for _ in range(100):
        if records:
            break
        await asyncio.sleep(0.1)
        records = (await org_get(yun, key, "usage/records"))["data"]
    [record] = records
    assert record["endpoint"] == "messages" and record["completion_tokens"] == deltas
    await _until(
        lambda: bool(yun.services.router.get("tiny").replicas) and yun.services.router.get("tiny").replicas[0].healthy
    )
    # The replica may look healthy before its engine is back: later tests need one that answers.
    async with sdk(yun) as c:
        for _ in range(240):
            try:
                await c.messages.create(model="tiny", max_tokens=1, messages=USER)  # type: ignore[arg-type]
                break
            except anthropic.APIStatusError:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("the tiny replica did not come back")
