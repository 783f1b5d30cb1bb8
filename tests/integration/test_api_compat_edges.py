"""Issue 12, continued: embeddings as OpenAI takes them (token ids, base64, refusals), CORS for browser
clients, and the shape a tool-result round trip reaches the engine in. Official `openai` client against the
real replicas of the `yun` fixture."""

from __future__ import annotations

import base64
from array import array
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import Harness
from yun.api import create_app
from yun.engines import Engine
from yun.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _engine(yun: Harness, model: str) -> Engine:
    replica = yun.services.gateway.router.get(model).replicas[0]
    assert replica.engine is not None
    return replica.engine


# -- echo of token ids -----------------------------------------------------------------------------------
async def test_echo_of_a_prompt_given_as_token_ids_is_the_engines_text(yun: Harness) -> None:
    """The echoed prompt is the text llama.cpp's own detokenizer makes of the ids (special tokens and
    multi-byte characters included), before the answer, exactly as for the same prompt sent as text."""
    engine = _engine(yun, "tiny")
    text = "<|im_start|>user\nHéllo 你好, def f(x):\n\treturn x<|im_end|>"
    ids = (await engine.request("/tokenize", {"content": text, "parse_special": True}))["tokens"]
    spelled = (await engine.request("/detokenize", {"tokens": ids}))["content"]
    assert spelled == text  # the engine's round trip: what echo must give back
    plain = await yun.client.completions.create(model="tiny", prompt=ids, max_tokens=3, temperature=0)
    r = await yun.client.completions.create(
        model="tiny", prompt=[ids, "import os"], max_tokens=3, temperature=0, echo=True, n=2
    )
    assert [c.text for c in r.choices[:2]] == [spelled + plain.choices[0].text] * 2
    assert r.choices[2].text.startswith("import os") and r.choices[3].text == r.choices[2].text
    assert r.usage is not None and plain.usage is not None
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 2 * plain.usage.prompt_tokens
    stream = await yun.client.completions.create(
        model="tiny", prompt=ids, max_tokens=3, temperature=0, echo=True, stream=True
    )
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == r.choices[0].text
    # An id outside the vocabulary is the prompt's fault, named as such (not a 500, not a wrong text).
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.completions.create(model="tiny", prompt=[ids[0], 10**7], max_tokens=1, echo=True)
    assert info.value.param == "prompt" and "10000000" in info.value.message


# -- embeddings -----------------------------------------------------------------------------------------
async def test_embeddings_of_token_ids_match_the_text(yun: Harness) -> None:
    tokens = (await _engine(yun, "minilm").request("/tokenize", {"content": "a cat", "add_special": True}))["tokens"]
    assert len(tokens) == 4  # [CLS] a cat [SEP]
    text = await yun.client.embeddings.create(model="minilm", input="a cat", encoding_format="float")
    ids = await yun.client.embeddings.create(model="minilm", input=tokens, encoding_format="float")
    assert ids.data[0].embedding == pytest.approx(text.data[0].embedding, abs=1e-5)
    assert ids.usage.prompt_tokens == text.usage.prompt_tokens == 4
    both = await yun.client.embeddings.create(model="minilm", input=[tokens, tokens[:3]], encoding_format="float")
    assert [d.index for d in both.data] == [0, 1] and both.usage.prompt_tokens == 7
    assert both.data[0].embedding == pytest.approx(text.data[0].embedding, abs=1e-5)


async def test_embeddings_of_text_and_token_ids_mixed(yun: Harness) -> None:
    tokens = (await _engine(yun, "minilm").request("/tokenize", {"content": "a cat", "add_special": True}))["tokens"]
    mixed = await yun.client.embeddings.create(model="minilm", input=["a cat", tokens], encoding_format="float")  # type: ignore[list-item]
    assert mixed.data[1].embedding == pytest.approx(mixed.data[0].embedding, abs=1e-5)
    assert mixed.usage.prompt_tokens == 8


async def test_embeddings_base64_on_the_wire(yun: Harness) -> None:
    floats = await yun.client.embeddings.create(model="minilm", input="a cat", encoding_format="float")
    r = await yun.http.post("/v1/embeddings", json={"model": "minilm", "input": "a cat", "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(array("f", raw)) == pytest.approx(floats.data[0].embedding, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "param"),
    [("", "input"), (["a", ""], "input"), ([[]], "input"), ([[1, 2], []], "input"), ([-1], "input")],
)
async def test_embeddings_refuse_empty_input(yun: Harness, value: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.embeddings.create(model="minilm", input=value)
    assert (info.value.param or "").startswith(param)


async def test_embedding_input_longer_than_the_context(yun: Harness) -> None:
    for value in ("word " * 600, [2000] * 600, [[2000] * 3, [2000] * 600]):
        with pytest.raises(openai.BadRequestError) as info:
            await yun.client.embeddings.create(model="minilm", input=value)  # type: ignore[arg-type]
        assert info.value.code == "context_length_exceeded"
        assert "maximum context length is 512 tokens" in info.value.message
        assert "batch" not in info.value.message


async def test_embeddings_dimensions(yun: Harness) -> None:
    r = await yun.client.embeddings.create(model="minilm", input="a cat", dimensions=384)
    assert len(r.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.embeddings.create(model="minilm", input="a cat", dimensions=128)
    assert info.value.param == "dimensions"


# -- CORS -------------------------------------------------------------------------------------------------
ORIGIN = "https://app.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_off_by_default(yun: Harness) -> None:
    r = await yun.http.options("/v1/chat/completions", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in r.headers
    r = await yun.http.get("/v1/models", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_cors_for_configured_origins(yun: Harness, tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, server={"cors_origins": [ORIGIN]})
    app = create_app(settings, yun.services)  # the fixture's running services, another front door
    auth = {"Authorization": f"Bearer {yun.key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://yun") as http:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models"):
            r = await http.options(path, headers=PREFLIGHT)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["access-control-allow-origin"] == ORIGIN
            assert "POST" in r.headers["access-control-allow-methods"]
            assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await http.options("/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        r = await http.post("/v1/chat/completions", json=body, headers={**auth, "Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        r = await http.post("/v1/chat/completions", json=body, headers={"Origin": ORIGIN})  # no key: still readable
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN


# -- tool results ---------------------------------------------------------------------------------------------
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ROUND_TRIP: Any = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21}'},
]


async def test_a_tool_result_reaches_the_engine_as_qwens_template_expects(yun: Harness) -> None:
    """What Qwen2.5's template makes of the round trip (the engine's own rendering of OpenAI's messages):
    the call in the assistant turn as `<tool_call>` with the arguments as an object, the result in a
    `<tool_response>` of a user turn, then the assistant's turn. Through Yun the engine counts exactly
    those tokens, whichever way the client spells the assistant message."""
    engine = _engine(yun, "tiny")
    prompt = (await engine.request("/apply-template", {"messages": ROUND_TRIP, "tools": [WEATHER]}))["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in prompt
    assert prompt.endswith(
        '<|im_start|>user\n<tool_response>\n{"temperature_c": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )
    tokens = await engine.request("/tokenize", {"content": prompt, "add_special": True, "parse_special": True})
    spellings = [ROUND_TRIP, [ROUND_TRIP[0], {**ROUND_TRIP[1], "content": ""}, ROUND_TRIP[2]]]
    for messages in spellings:
        r = await yun.client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=1)
        assert r.usage is not None and r.usage.prompt_tokens == len(tokens["tokens"])


async def test_content_parts_are_joined_as_the_engine_joins_them(yun: Harness) -> None:
    """Text parts (as agent SDKs send tool results) render as llama.cpp renders them: one per line."""
    parts = [{"type": "text", "text": "aa"}, {"type": "text", "text": "bb"}]
    usage = []
    for content in (parts, "aa\nbb"):
        messages: Any = [*ROUND_TRIP[:2], {"role": "tool", "tool_call_id": "call_1", "content": content}]
        r = await yun.client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=1)
        usage.append(r.usage.prompt_tokens if r.usage else None)
    assert usage[0] == usage[1] is not None


async def test_parallel_tool_calls_is_taken(yun: Harness) -> None:
    """Passed on to the engine (which accepts it) and honoured by the gateway's own tool-call parser
    (tests/unit/test_tools.py: only the first call)."""
    r = await yun.client.chat.completions.create(
        model="tiny", messages=ROUND_TRIP[:1], tools=[WEATHER], parallel_tool_calls=False, max_tokens=2
    )
    assert r.usage is not None and r.usage.completion_tokens == 2
