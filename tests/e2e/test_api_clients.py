"""End to end, the other APIs clients speak (issue 12), on the real default model: Anthropic Messages with
the `anthropic` SDK, the Responses API with the official `openai` client, and an `openai-agents` run with
one tool. Each tool round trip must end with the model's answer, not a repeated call.

The default model (Qwen2.5-Coder 0.5B), greedy, answers a tool result by restating the call as text and
then the result (the prompt is exactly Qwen's template's: tests/integration/test_api_compat_edges.py);
a result given as JSON it answers and stops, so the tools here answer JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import CHAT
from tests.support.server import YunServer

pytestmark = pytest.mark.e2e

QUESTION = "What is the weather in Paris?"
RESULT = '{"temperature_c": 21}'
GREEDY = {"temperature": 0}  # current `anthropic` SDKs take no temperature argument on messages.stream
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
def claude(server: YunServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0, timeout=300) as c:
        yield c


# -- Anthropic Messages ----------------------------------------------------------------------------------
def test_messages_plain(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model=CHAT,
        max_tokens=10,
        messages=[{"role": "user", "content": "What is 2+2? Answer with the number only."}],
        extra_body=GREEDY,
    )
    assert m.type == "message" and m.role == "assistant" and m.stop_reason == "end_turn"
    assert "4" in "".join(b.text for b in m.content if b.type == "text")
    prompt = m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)
    assert prompt > 10 and 0 < m.usage.output_tokens <= 10


def test_messages_streamed(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=CHAT, max_tokens=40, messages=[{"role": "user", "content": "Count from 1 to 5."}], extra_body=GREEDY
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    text = "".join(b.text for b in final.content if b.type == "text")
    assert "3" in text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_messages_tool_use_round_trip_ends_with_an_answer(claude: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "get_weather", "description": "Get the current weather for a city", "input_schema": CITY}]
    asked: Any = [{"role": "user", "content": QUESTION}]
    first = claude.messages.create(model=CHAT, max_tokens=80, messages=asked, tools=tools, extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and str(use.input["city"]).lower() == "paris"  # type: ignore[index]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": RESULT}
    answer = claude.messages.create(
        model=CHAT,
        max_tokens=80,
        tools=tools,
        messages=[
            *asked,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [result]},
        ],
        extra_body=GREEDY,
    )
    assert answer.stop_reason == "end_turn", answer
    assert not [b for b in answer.content if b.type == "tool_use"]
    assert "21" in "".join(b.text for b in answer.content if b.type == "text")


# -- Responses -------------------------------------------------------------------------------------------
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": CITY,
}


def test_responses_function_call_round_trip_ends_with_an_answer(client: openai.OpenAI) -> None:
    first = client.responses.create(model=CHAT, input=QUESTION, tools=[WEATHER], temperature=0, max_output_tokens=80)
    assert first.status == "completed"
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"].lower() == "paris"
    # Continued from the stored response: only the call's output is sent.
    answer = client.responses.create(
        model=CHAT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": RESULT}],
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=80,
    )
    assert answer.status == "completed" and answer.incomplete_details is None, answer
    assert [item.type for item in answer.output] == ["message"]
    assert "21" in answer.output_text
    # The stored conversation is billed as input: more than the first request's.
    assert answer.usage is not None and first.usage is not None
    assert answer.usage.input_tokens > first.usage.input_tokens


# -- openai-agents -----------------------------------------------------------------------------------------
def test_openai_agents_runs_a_tool_using_agent(server: YunServer) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool

    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        asked.append(city)
        return RESULT

    async def run() -> Any:
        async with openai.AsyncOpenAI(api_key=server.admin_key, base_url=server.url + "/v1", max_retries=0) as c:
            agent = Agent(
                name="weather",
                instructions="Answer questions about the weather; use the tool.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model=CHAT, openai_client=c),
                model_settings=ModelSettings(temperature=0, max_tokens=80),
            )
            return await Runner.run(agent, QUESTION, run_config=RunConfig(tracing_disabled=True), max_turns=4)

    result = asyncio.run(run())
    assert [city.lower() for city in asked] == ["paris"]  # one call, then the answer
    assert len(result.raw_responses) == 2 and "21" in str(result.final_output)
