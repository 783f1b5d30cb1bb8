"""The Responses API (POST/GET/DELETE /v1/responses) through the official `openai` client and the
`openai-agents` SDK, against the tiny model's real replicas: answers, typed stream events, function
calls, JSON output, stored conversations, tenant isolation, and the usage billed for each response."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import Harness
from tests.integration.tenants import NANO, client_for, expected_cost, new_org, org_get, priced, settled_records

pytestmark = pytest.mark.asyncio(loop_scope="session")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


async def _record(yun: Harness, key: str, request_id: str) -> dict[str, Any]:
    records = (await org_get(yun, key, "usage/records"))["data"]
    mine = [r for r in records if r["request_id"] == request_id]
    assert len(mine) == 1, records
    return mine[0]


async def test_string_input_answers_and_bills_the_engine_count(yun: Harness) -> None:
    _, key = await new_org(yun, "5")
    async with client_for(yun, key) as client:
        r = await client.responses.create(model="tiny", input="Say something.", max_output_tokens=16, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "tiny"
    assert r.status in ("completed", "incomplete")
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text and r.output_text == r.output[0].content[0].text  # type: ignore[union-attr]
    u = r.usage
    assert u is not None and u.input_tokens > 0 and 0 < u.output_tokens <= 16
    assert u.total_tokens == u.input_tokens + u.output_tokens
    record = await _record(yun, key, r.id)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (u.input_tokens, u.output_tokens)
    assert record["endpoint"] == "responses" and record["status"] == "ok"
    if r.status == "incomplete":
        assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"


async def test_a_priced_response_is_charged_what_its_usage_says(yun: Harness) -> None:
    org, key = await new_org(yun, "5")
    async with priced(yun), client_for(yun, key) as client:
        answer = await client.responses.create(model="tiny", input="Say something.", max_output_tokens=16)
    u = answer.usage
    assert u is not None
    cost = expected_cost(u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens)
    assert cost > 0 and round(u.model_extra["cost"] * NANO) == cost  # type: ignore[index]
    record = await _record(yun, key, answer.id)
    assert record["cost_nanodollars"] == cost
    balance = await org_get(yun, key, "balance")
    assert balance["balance_nanodollars"] == 5 * NANO - cost and balance["held_nanodollars"] == 0
    assert yun.services.billing.money.ledger_sum(org) == balance["balance_nanodollars"]


async def test_item_input_and_instructions_reach_the_model(yun: Harness) -> None:
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "Say something."}]}]
    plain = await yun.client.responses.create(model="tiny", input=items, max_output_tokens=16, temperature=0)
    told = await yun.client.responses.create(
        model="tiny", input=items, instructions="Answer in one short sentence.", max_output_tokens=16, temperature=0
    )
    same = await yun.client.responses.create(model="tiny", input="Say something.", max_output_tokens=16, temperature=0)
    assert plain.usage and told.usage and same.usage
    # The same conversation counted the same, whichever way it was written.
    assert plain.usage.input_tokens == same.usage.input_tokens and plain.output_text == same.output_text
    # Instructions are the system message (Qwen's template puts its default one there otherwise).
    chat = await yun.client.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "Say something."},
        ],
        max_tokens=16,
        temperature=0,
    )
    assert chat.usage and told.usage.input_tokens == chat.usage.prompt_tokens != plain.usage.input_tokens
    assert told.output_text == chat.choices[0].message.content
    assert told.instructions == "Answer in one short sentence."


async def test_stream_sends_typed_events_in_openai_order(yun: Harness) -> None:
    _, key = await new_org(yun, "5")
    async with client_for(yun, key) as client:
        stream = await client.responses.create(
            model="tiny", input="Say something.", max_output_tokens=16, temperature=0, stream=True
        )
        events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    last = "response.incomplete" if types[-1] == "response.incomplete" else "response.completed"
    n = types.count("response.output_text.delta")
    assert types[4 + n :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        last,
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text and events[-4].text == text  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and final.id == events[0].response.id  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens == n
    record = await _record(yun, key, final.id)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (final.usage.input_tokens, n)
    # The same answer as without streaming (temperature 0).
    plain = await yun.client.responses.create(model="tiny", input="Say something.", max_output_tokens=16, temperature=0)
    assert plain.output_text == text


async def test_a_stream_the_client_leaves_is_billed_what_was_generated(yun: Harness) -> None:
    _, key = await new_org(yun, "5")
    async with openai.AsyncOpenAI(api_key=key, base_url=yun.base_url + "/v1", max_retries=0) as client:
        stream = await client.responses.create(model="tiny", input="Say something.", max_output_tokens=400, stream=True)
        response_id, got = "", 0
        async for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            got += event.type == "response.output_text.delta"
            if got == 5:
                break
        await stream.close()
    records = await settled_records(yun, key)
    assert [r["request_id"] for r in records] == [response_id]
    assert records[0]["status"] == "aborted" and 5 <= records[0]["completion_tokens"] < 400
    assert (await org_get(yun, key, "balance"))["held_nanodollars"] == 0
    # An answer never finished is not stored.
    r = await yun.http.get(f"/v1/responses/{response_id}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404


async def test_stream_wire_names_each_event(yun: Harness) -> None:
    body = {"model": "tiny", "input": "Hi", "max_output_tokens": 16, "stream": True}
    async with httpx.AsyncClient(base_url=yun.base_url, headers={"Authorization": f"Bearer {yun.key}"}) as http:
        async with http.stream("POST", "/v1/responses", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            raw = (await r.aread()).decode()
    blocks = [b for b in raw.split("\n\n") if b.strip()]
    for block in blocks:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[len("data: ") :])["type"] == event[len("event: ") :]
    assert "[DONE]" not in raw


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip(yun: Harness, stream: bool) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    kwargs: Any = {"model": "tiny", "tools": [WEATHER], "max_output_tokens": 64, "temperature": 0}
    first = await yun.client.responses.create(input=ask, tool_choice="required", **kwargs)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) >= 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")  # type: ignore[union-attr]
    assert "city" in json.loads(call.arguments)
    if stream:
        events = [
            e async for e in await yun.client.responses.create(input=ask, tool_choice="required", stream=True, **kwargs)
        ]
        types = [e.type for e in events]
        assert "response.function_call_arguments.delta" in types
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert done and done[0].arguments == call.arguments and done[0].name == "get_weather"  # type: ignore[union-attr]
        item = [e for e in events if e.type == "response.output_item.done"][0].item  # type: ignore[union-attr]
        assert item.type == "function_call" and item.call_id
    # The tool's result goes back with the call; the model answers (tool_choice none: no second call).
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    back: Any = [*ask, call.model_dump(exclude_none=True), result]
    answer = await yun.client.responses.create(input=back, tool_choice="none", **kwargs)
    assert [item.type for item in answer.output] == ["message"] and answer.output_text
    # The engine saw what chat sends for the same turn: the assistant's tool call, then the tool's message.
    tool_call = {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    chat = await yun.client.chat.completions.create(
        model="tiny",
        messages=[
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 21 C"},
        ],
        tools=[{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}],
        tool_choice="none",
        max_tokens=64,
        temperature=0,
    )
    assert answer.usage and chat.usage and answer.usage.input_tokens == chat.usage.prompt_tokens
    assert answer.output_text == chat.choices[0].message.content


async def test_text_format_json_schema(yun: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = await yun.client.responses.create(
        model="tiny",
        input="Say something.",
        max_output_tokens=60,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
    )
    data = json.loads(r.output_text)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_schema"
    j = await yun.client.responses.create(
        model="tiny",
        input="Say something.",
        max_output_tokens=40,
        temperature=0,
        text={"format": {"type": "json_object"}},
    )
    assert j.output_text.lstrip().startswith("{")


async def test_previous_response_id_continues_the_stored_conversation(yun: Harness) -> None:
    first = await yun.client.responses.create(model="tiny", input="Say something.", max_output_tokens=16, temperature=0)
    second = await yun.client.responses.create(
        model="tiny", input="And more?", previous_response_id=first.id, max_output_tokens=16, temperature=0
    )
    assert second.previous_response_id == first.id
    # The same conversation written out in full is the same prompt: the stored one was prepended.
    written: Any = [
        {"role": "user", "content": "Say something."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And more?"},
    ]
    full = await yun.client.responses.create(
        model="tiny", input=written, max_output_tokens=16, temperature=0, store=False
    )
    assert second.usage and full.usage and second.usage.input_tokens == full.usage.input_tokens
    assert second.output_text == full.output_text
    # A chain of three, and a response not stored cannot be continued nor read.
    third = await yun.client.responses.create(
        model="tiny", input="Go on.", previous_response_id=second.id, max_output_tokens=16, temperature=0
    )
    # Its prompt holds the second's whole conversation and answer (re-tokenized: not simply their sum).
    assert third.usage and third.usage.input_tokens > second.usage.input_tokens
    with pytest.raises(openai.NotFoundError) as e:
        await yun.client.responses.create(model="tiny", input="x", previous_response_id=full.id)
    assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await yun.client.responses.retrieve(full.id)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_stored_response_is_committed_with_its_settlement(yun: Harness, stream: bool) -> None:
    # Two commits per stored response: its hold, then its settlement and the response in one transaction
    # (it was a third commit of its own, after the settlement). Another test's background work (a job's
    # fake trainer, say) may commit in between: one of a few tries must see exactly two.
    writer = yun.services.billing.writer
    seen = []
    for _ in range(5):
        before = writer.commits
        if stream:
            events = await yun.client.responses.create(
                model="tiny", input="Say something.", max_output_tokens=16, stream=True
            )
            response_id = [e async for e in events][-1].response.id  # type: ignore[union-attr]
        else:
            response_id = (
                await yun.client.responses.create(model="tiny", input="Say something.", max_output_tokens=16)
            ).id
        seen.append(writer.commits - before)
        assert (await yun.client.responses.retrieve(response_id)).id == response_id  # committed before the answer
        if seen[-1] == 2:
            break
    assert seen[-1] == 2, f"commits per stored response: {seen}"


async def test_retrieve_list_input_items_and_delete(yun: Harness) -> None:
    r = await yun.client.responses.create(
        model="tiny", input="Say something.", max_output_tokens=16, metadata={"run": "7"}, temperature=0
    )
    got = await yun.client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.metadata == {"run": "7"}
    assert got.usage == r.usage
    items = await yun.client.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "Say something."  # type: ignore[union-attr]
    deleted = await yun.http.delete(f"/v1/responses/{r.id}")
    assert deleted.status_code == 200 and deleted.json() == {"id": r.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        await yun.client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await yun.client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await yun.client.responses.create(model="tiny", input="x", previous_response_id=r.id)


async def test_another_tenant_gets_404(yun: Harness) -> None:
    _, key_a = await new_org(yun, "5")
    _, key_b = await new_org(yun, "5")
    async with client_for(yun, key_a) as a, client_for(yun, key_b) as b:
        r = await a.responses.create(model="tiny", input="Say something.", max_output_tokens=16)
        for attempt in (
            b.responses.retrieve(r.id),
            b.responses.input_items.list(r.id),
            b.responses.delete(r.id),
            b.responses.create(model="tiny", input="x", previous_response_id=r.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await attempt
        assert (await a.responses.retrieve(r.id)).id == r.id  # B's delete touched nothing
    assert (await org_get(yun, key_b, "usage/records"))["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools.0.type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input.0.content.0"),
        ({"input": [{"role": "wizard", "content": "hi"}]}, "input.0"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input.0.call_id"),
        ({"input": "hi", "max_output_tokens": 4}, "max_output_tokens"),
        ({"input": "hi", "temperature": 3}, "temperature"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"input": "hi", "truncation": "auto"}, "truncation"),
        ({"input": "hi", "include": ["file_search_call.results"]}, "include"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": []}, "input"),
        ({}, "input"),
        ({"input": 5}, "input"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(yun: Harness, body: dict[str, Any], param: str) -> None:
    r = await yun.http.post("/v1/responses", json={"model": "tiny", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] is not None
    assert error["param"].startswith(param), error


async def test_unknown_model_and_unknown_response_are_404(yun: Harness) -> None:
    r = await yun.http.post("/v1/responses", json={"model": "nope", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = await yun.http.get("/v1/responses/resp_missing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("streamed", [False, True])
async def test_openai_agents_sdk_runs_a_tool_using_agent(yun: Harness, streamed: bool) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool

    class Forecast(BaseModel):
        sky: str = Field(max_length=8)

    _, key = await new_org(yun, "5")
    asked: list[str] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=12)]) -> str:  # bounded: random output must end
        """The weather in a city."""
        asked.append(city)
        return "Sunny, 21 C"

    client = openai.AsyncOpenAI(api_key=key, base_url=f"{yun.base_url}/v1", max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather; use the tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="tiny", openai_client=client),
        # The tiny model's output is random: force the first turn's call (the SDK resets the choice after it).
        model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=96),
        # A final answer in a JSON schema, whose grammar ends it (free text from this model never ends).
        output_type=Forecast,
    )
    config = RunConfig(tracing_disabled=True)
    question = "What is the weather in Paris?"
    try:
        if streamed:
            run = Runner.run_streamed(agent, question, run_config=config, max_turns=6)
            kinds = {e.type async for e in run.stream_events()}
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
            result: Any = run
        else:
            result = await Runner.run(agent, question, run_config=config, max_turns=6)
    finally:
        await client.close()
    assert len(asked) >= 1 and isinstance(result.final_output, Forecast)
    responses = result.raw_responses
    assert len(responses) >= 2
    # On the wire: the first answer's function call, sent back with its output on the next request.
    call = next(item for item in responses[0].output if item.type == "function_call")
    second = await _stored(yun, key, responses[1].response_id)
    sent = {(i["type"], i.get("call_id")) for i in second["input_items"]}
    assert ("function_call", call.call_id) in sent and ("function_call_output", call.call_id) in sent
    # One usage record per model call, with the engine's counts the SDK saw.
    for r in responses:
        record = await _record(yun, key, r.response_id)
        assert (record["prompt_tokens"], record["completion_tokens"]) == (r.usage.input_tokens, r.usage.output_tokens)


async def _stored(yun: Harness, key: str, response_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    items = await yun.http.get(f"/v1/responses/{response_id}/input_items?order=asc", headers=headers)
    assert items.status_code == 200, items.text
    return {"input_items": items.json()["data"]}
