from __future__ import annotations

import json

import pytest

from yun.gateway.tools import ToolStreamBuffer, parse_tool_calls

NAMES = ["get_weather", "search"]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}  ',
    ],
)
def test_qwen_tool_call_forms_parse(text: str) -> None:
    calls = parse_tool_calls(text, NAMES)
    assert calls is not None and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_several_calls_in_one_answer() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "A"}}\n{"name": "search", "arguments": {"q": "b"}}'
    calls = parse_tool_calls(text, NAMES)
    assert calls is not None and [c["function"]["name"] for c in calls] == ["get_weather", "search"]
    assert len({c["id"] for c in calls}) == 2


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "The weather is nice.",
        '{"name": "unknown_tool", "arguments": {}}',
        '{"city": "Paris"}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}} and then some prose',
        '{"name": "get_weather", "arguments": {"city": ',
    ],
)
def test_non_calls_stay_text(text: str | None) -> None:
    assert parse_tool_calls(text, NAMES) is None


def test_stream_buffer_passes_prose_through_at_once() -> None:
    buf = ToolStreamBuffer(NAMES)
    assert buf.feed("Hel") == "Hel"
    assert buf.feed("lo") == "lo"
    assert buf.finish() == ("", None)


def test_stream_buffer_holds_a_call_and_releases_it_as_tool_calls() -> None:
    buf = ToolStreamBuffer(NAMES)
    out = "".join(buf.feed(p) for p in ['{"name": "get_', 'weather", "arguments": ', '{"city": "Paris"}}'])
    assert out == ""
    rest, calls = buf.finish()
    assert rest == "" and calls is not None and calls[0]["function"]["name"] == "get_weather"


def test_stream_buffer_releases_json_that_is_not_a_call() -> None:
    buf = ToolStreamBuffer(NAMES)
    assert buf.feed('{"answer": 42}') == ""
    assert buf.finish() == ('{"answer": 42}', None)


def test_stream_buffer_waits_on_a_partial_opener() -> None:
    buf = ToolStreamBuffer(NAMES)
    assert buf.feed("<tool") == ""
    assert buf.feed("_call>") == ""
    assert buf.feed('{"name": "search", "arguments": {"q": "x"}}</tool_call>') == ""
    assert buf.finish()[1] is not None


def test_forced_tool_choice_becomes_a_schema_of_one_permitted_call() -> None:
    from yun.engines.forced_tools import force_tool_call

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    clock = {"type": "function", "function": {"name": "get_time"}}
    body = {"messages": [], "tools": [weather, clock]}
    assert force_tool_call({**body, "tool_choice": "auto"}) == {**body, "tool_choice": "auto"}
    assert force_tool_call(body) == body

    required = force_tool_call({**body, "tool_choice": "required"})
    assert required["tool_choice"] == "auto" and required["tools"] == [weather, clock]
    options = required["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [o["properties"]["name"]["const"] for o in options] == ["get_weather", "get_time"]
    assert options[1]["properties"]["arguments"] == {"type": "object"}  # no parameters: any object

    named = force_tool_call({**body, "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    schema = named["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "get_time"} and schema["additionalProperties"] is False


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "A"}}\n{"name": "search", "arguments": {"q": "b"}}'
    calls = parse_tool_calls(text, NAMES, single=True)
    assert calls is not None and [c["function"]["name"] for c in calls] == ["get_weather"]
    buffer = ToolStreamBuffer(NAMES, single=True)
    assert buffer.feed(text) == ""
    rest, streamed = buffer.finish()
    assert rest == "" and streamed is not None and len(streamed) == 1
