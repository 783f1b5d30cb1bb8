"""The OpenAI surface, through the official client, against real replicas."""

from __future__ import annotations

import json
import re

import openai
import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

MSG = [{"role": "user", "content": "Say something."}]


async def test_models_list_and_cards(yun: Harness) -> None:
    models = await yun.client.models.list()
    ids = {m.id for m in models.data}
    assert {"tiny", "minilm"} <= ids
    tiny = await yun.client.models.retrieve("tiny")
    card = tiny.model_extra["card"]  # type: ignore[index]
    assert card["family"] == "qwen2" and card["license"] == "apache-2.0"
    # The served context (the harness's 512-token slots), and apart from it the one the file was trained with.
    assert card["context_length"] == 512 and card["trained_context_length"] == 4096
    assert card["quantization"] in {"F16", "F32"}
    embedder = (await yun.client.models.retrieve("minilm")).model_extra["card"]  # type: ignore[index]
    assert embedder["context_length"] == 512
    assert "source" in card and tiny.model_extra["status"] == "ready"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as info:
        await yun.client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


async def test_chat_reports_the_engines_token_counts(yun: Harness) -> None:
    r = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=7, temperature=0)
    assert r.model == "tiny" and r.id.startswith("chatcmpl-")
    assert r.usage is not None
    # The tiny model never emits an end token, so it generates exactly max_tokens.
    assert r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    r2 = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=3, temperature=0)
    assert r2.usage is not None and r2.usage.completion_tokens == 3
    assert r2.usage.prompt_tokens == r.usage.prompt_tokens


async def test_seeded_sampling_is_reproducible(yun: Harness) -> None:
    kwargs = dict(
        model="tiny",
        messages=MSG,
        max_tokens=8,
        temperature=1.5,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    )
    a = await yun.client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    b = await yun.client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert a.choices[0].message.content == b.choices[0].message.content


async def test_stream_with_and_without_usage(yun: Harness) -> None:
    stream = await yun.client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    plain = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=5, stream=True)
    plain_chunks = [c async for c in plain]
    assert all(c.usage is None for c in plain_chunks)
    text = "".join(c.choices[0].delta.content or "" for c in plain_chunks if c.choices)
    assert text


async def test_json_schema_output_is_valid_json(yun: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = await yun.client.chat.completions.create(
        model="tiny",
        messages=MSG,
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    r2 = await yun.client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=40, temperature=0, response_format={"type": "json_object"}
    )
    assert (r2.choices[0].message.content or "").lstrip().startswith("{")


async def test_logit_bias_and_stop(yun: Harness) -> None:
    base = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=6, temperature=0)
    text = base.choices[0].message.content or ""
    assert text
    stopped = await yun.client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=6, temperature=0, stop=[text[:1]]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage is not None and stopped.usage.completion_tokens < 6


async def test_completions_string_and_list(yun: Harness) -> None:
    one = await yun.client.completions.create(model="tiny", prompt="def hello", max_tokens=4, temperature=0)
    assert one.usage is not None and one.usage.completion_tokens == 4
    both = await yun.client.completions.create(
        model="tiny", prompt=["def hello", "def hello"], max_tokens=4, temperature=0
    )
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[0].text == both.choices[1].text == one.choices[0].text
    assert both.usage is not None
    # Each prompt is counted, not just the first (llama.cpp's own batch answer under-counts).
    assert both.usage.completion_tokens == 8
    assert both.usage.prompt_tokens == 2 * one.usage.prompt_tokens
    stream = await yun.client.completions.create(
        model="tiny", prompt="def hello", max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert "".join(c.choices[0].text for c in chunks if c.choices) == one.choices[0].text


async def test_embeddings_float_and_base64(yun: Harness) -> None:
    floats = await yun.client.embeddings.create(model="minilm", input=["a cat", "a kitten"], encoding_format="float")
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    # The openai client asks for base64 by default and decodes it; it must give the same numbers.
    b64 = await yun.client.embeddings.create(model="minilm", input=["a cat", "a kitten"])
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    single = await yun.client.embeddings.create(model="minilm", input="a cat", dimensions=384)
    assert single.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.embeddings.create(model="minilm", input="a cat", dimensions=128)
    assert info.value.code == "unsupported_parameter" and info.value.param == "dimensions"


async def test_wrong_endpoint_for_model_kind(yun: Harness) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.embeddings.create(model="tiny", input="x")
    assert info.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError):
        await yun.client.chat.completions.create(model="minilm", messages=MSG)


async def test_prompt_longer_than_context(yun: Harness) -> None:
    long = [{"role": "user", "content": "hello " * 2000}]
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.chat.completions.create(model="tiny", messages=long, max_tokens=5)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.chat.completions.create(model="tiny", messages=long, max_tokens=5, stream=True)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.embeddings.create(model="minilm", input="word " * 2000)
    assert info.value.code == "context_length_exceeded"


async def test_authentication(yun: Harness) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer yun-" + "A" * 43},
    ):
        r = await yun.http.get("/v1/models", headers={"Authorization": ""} | headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_health_and_metrics(yun: Harness) -> None:
    await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2, stream=True)
    health = (await yun.http.get("/health")).json()
    assert health["models"]["tiny"]["healthy_replicas"] == 1
    text = (await yun.http.get("/metrics")).text
    for name in (
        "yun_requests_total",
        "yun_request_duration_seconds_bucket",
        "yun_time_to_first_token_seconds",
        "yun_tokens_total",
        "yun_replica_healthy",
    ):
        assert name in text
    assert re.search(r'yun_replica_healthy\{model="tiny",replica="tiny/[\w-]+"\} 1\.0', text)
