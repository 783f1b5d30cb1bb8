"""End to end: `yun serve` as a subprocess with the real bundled models, driven by the official client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT, EMBED, serve_default
from tests.support.server import KEY_RE, YunServer

pytestmark = pytest.mark.e2e


def test_models_and_cards(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert ids == {CHAT, EMBED}
    card = client.models.retrieve(CHAT).model_extra["card"]  # type: ignore[index]
    assert card["family"] == "qwen2" and card["quantization"] == "Q4_K_M" and card["license"] == "apache-2.0"
    # What a request gets (engine.context_per_slot, 4,096 by default), not the GGUF's trained 32,768.
    assert card["context_length"] == 4096 and card["trained_context_length"] == 32768
    assert card["parameters"] == "0.5B"
    assert "sha256" in card["source"]


def test_real_model_answers(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "What is 2+2? Answer with the number only."}],
        max_tokens=10,
        temperature=0,
    )
    assert "4" in (r.choices[0].message.content or "")
    assert r.usage is not None and r.usage.prompt_tokens > 10 and 0 < r.usage.completion_tokens <= 10


def test_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
        max_tokens=30,
        temperature=0,  # sampled, the model sometimes answers with a program cut off before "3"
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "3" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(client: openai.OpenAI, stream: bool) -> None:
    kwargs = dict(
        model=CHAT,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        max_tokens=60,
        temperature=0,
    )
    if not stream:
        r = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls = choice.message.tool_calls
    else:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
        assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "{}")["city"].lower() == "paris"
    # The conversation continues with the tool's answer.
    follow = client.chat.completions.create(
        model=CHAT,
        max_tokens=40,
        temperature=0,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0].id or "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0].function.arguments or "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id or "call_1", "content": '{"temperature_c": 21}'},
        ],
    )
    # It answers with the result and stops; it does not call the tool again (issue 12: it did, until `length`).
    assert follow.choices[0].finish_reason == "stop" and not follow.choices[0].message.tool_calls
    assert "21" in (follow.choices[0].message.content or "")


TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "Get the current time", "parameters": {"type": "object"}},
}


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_tool_choice_forces_a_call(client: openai.OpenAI, choice: object) -> None:
    """A prompt that needs no tool still gets a parsed tool call when tool_choice demands one."""
    r = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hello to me, in Paris."}],
        tools=[TIME_TOOL, WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=choice,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0,
    )
    choice_ = r.choices[0]
    assert choice_.finish_reason == "tool_calls", choice_
    calls = choice_.message.tool_calls or []
    assert calls and calls[0].function is not None
    names = {"get_weather"} if isinstance(choice, dict) else {"get_weather", "get_time"}
    assert calls[0].function.name in names
    assert isinstance(json.loads(calls[0].function.arguments or "{}"), dict)


def test_json_mode(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    r = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert "paris" in json.loads(r.choices[0].message.content or "")["capital"].lower()


def test_embeddings_are_semantic(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model=EMBED, input=["a cat sits on the mat", "a kitten on a rug", "tax law"])
    a, b, c = (d.embedding for d in r.data)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert len(a) == 384 and dot(a, b) > dot(a, c) + 0.2
    assert r.usage.prompt_tokens > 0


def test_errors(client: openai.OpenAI, server: YunServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="yun-nope", base_url=server.url + "/v1", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello " * 6000}])
    assert info.value.code == "context_length_exceeded"
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"x" * (9 * 1024 * 1024),
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    assert r.status_code == 413
    r = httpx.post(
        server.url + "/v1/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {server.admin_key}"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'yun_replica_healthy{model="qwen2.5-coder-0.5b-instruct"' in metrics


def test_logs_hold_no_secrets_or_prompts(server: YunServer, client: openai.OpenAI) -> None:
    marker = "purple-elephant-7731"
    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": marker}], max_tokens=2)
    logs = server.stderr()
    for path in (server.data_dir / "logs").glob("*.log"):
        logs += path.read_text(errors="replace")
    assert server.admin_key is not None and server.admin_key not in logs
    assert marker not in logs


def test_restart_reuses_cache_and_prints_no_new_key(server: YunServer) -> None:
    # Stopped first: a second `yun serve` on a data dir in use is refused (tests/integration/test_serve_start.py).
    server.stop()
    second = serve_default(server.root, data_dir=server.data_dir, admin_key=server.admin_key)
    try:
        second.start()
        assert not KEY_RE.findall(second.stdout())
        r = httpx.get(second.url + "/v1/models", headers={"Authorization": f"Bearer {server.admin_key}"})
        assert r.status_code == 200 and len(r.json()["data"]) == 2
    finally:
        second.stop()
