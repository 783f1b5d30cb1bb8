"""What the engine serves, Yun serves (issue 12): several choices with exact usage, the legacy completions'
own logprobs and echo, llama.cpp's parameter extensions, and unknown parameters refused by name rather
than dropped. Official `openai` client against the real tiny-model replicas."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import openai
import pytest

from tests.integration.conftest import Harness
from tests.integration.tenants import NANO, client_for, expected_cost, new_org, org_get, priced, settled_records

pytestmark = pytest.mark.asyncio(loop_scope="session")

MSG: Any = [{"role": "user", "content": "Say something."}]
USAGE: Any = {"include_usage": True}


async def _records(yun: Harness, key: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = (await org_get(yun, key, "usage/records"))["data"]
    return records


# -- n > 1 ------------------------------------------------------------------------------------------
async def test_chat_n_choices_with_exact_usage_in_one_record(yun: Harness) -> None:
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        one = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=5, temperature=0)
        r = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=5, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert {c.message.content for c in r.choices} == {one.choices[0].message.content}  # greedy: the same text
    assert r.usage is not None and one.usage is not None
    # Every choice's output and prompt, as the engine counted them (llama.cpp's own n counts one choice).
    assert r.usage.completion_tokens == 15 and r.usage.prompt_tokens == 3 * one.usage.prompt_tokens
    records = await _records(yun, key)
    assert len(records) == 2
    mine = next(x for x in records if x["request_id"] == r.id)
    assert (mine["prompt_tokens"], mine["completion_tokens"], mine["status"]) == (r.usage.prompt_tokens, 15, "ok")


async def test_chat_n_choices_stream(yun: Harness) -> None:
    stream = await yun.client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=4, n=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    texts: dict[int, str] = {}
    finished: dict[int, str | None] = {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            finished[ch.index] = ch.finish_reason or finished.get(ch.index)
    assert set(texts) == {0, 1} and texts[0] == texts[1] != ""
    assert finished == {0: "length", 1: "length"}
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 8 and chunks[-1].choices == []


async def test_streamed_choices_are_generated_at_once(yun: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI interleaves the choices of a stream; run one after the other, every choice but the first
    would wait for the whole of the one before it. Usage still counts every choice exactly, in one record."""
    # Both choices take a slot at once: no headroom kept for the tenants of the tests just before.
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.0)
    _, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=MSG,
            max_tokens=64,
            n=2,
            stream=True,
            stream_options=USAGE,
            extra_body={"ignore_eos": True},  # both choices run the full 64 tokens
        )
        chunks = [c async for c in stream]
    seen = [(ch.index, ch.finish_reason) for c in chunks for ch in c.choices if ch.delta.content or ch.finish_reason]
    first_of_second = next(i for i, (index, _) in enumerate(seen) if index == 1)
    end_of_first = next(i for i, (index, finish) in enumerate(seen) if index == 0 and finish)
    assert first_of_second < end_of_first, "".join(str(i) for i, _ in seen)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 128
    (record,) = await _records(yun, key)
    assert (record["request_id"], record["completion_tokens"], record["status"]) == (chunks[0].id, 128, "ok")
    assert record["prompt_tokens"] == usage.prompt_tokens


async def test_a_client_leaving_streamed_choices_is_billed_every_choice_once(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each choice's engine stream keeps its own running count: the bill of a stream left mid-way is
    what all of them generated, settled once, and every engine stops."""
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.0)  # both choices run at once
    async with priced(yun):
        _, key = await new_org(yun, "100")
        # A real socket: the in-process transport cannot disconnect.
        async with openai.AsyncOpenAI(api_key=key, base_url=yun.base_url + "/v1", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="tiny", messages=MSG, max_tokens=400, n=2, stream=True, extra_body={"ignore_eos": True}
            )
            got = [0, 0]
            async for chunk in stream:
                for ch in chunk.choices:
                    got[ch.index] += bool(ch.delta.content)
                if min(got) >= 10:
                    break
            await stream.close()
        (record,) = await settled_records(yun, key)
        bal = await org_get(yun, key, "balance")
    assert record["status"] == "aborted"
    # Both choices' running counts (at least what reached the client), far less than the 800 asked for.
    assert sum(got) <= record["completion_tokens"] < 800
    assert record["cost_nanodollars"] == expected_cost(
        record["prompt_tokens"], record["cached_tokens"], record["completion_tokens"]
    )
    assert bal["held_nanodollars"] == 0 and bal["balance_nanodollars"] == 100 * NANO - record["cost_nanodollars"]


async def test_completions_n_times_prompts(yun: Harness) -> None:
    prompts = ["def hello", "import os"]
    single = [await yun.client.completions.create(model="tiny", prompt=p, max_tokens=3, temperature=0) for p in prompts]
    r = await yun.client.completions.create(model="tiny", prompt=prompts, max_tokens=3, temperature=0, n=2)
    # OpenAI's order: prompt i's j-th choice is choice i*n + j.
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [s.choices[0].text for s in single for _ in range(2)]
    assert r.usage is not None and r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == 2 * sum(s.usage.prompt_tokens for s in single if s.usage)
    stream = await yun.client.completions.create(
        model="tiny",
        prompt=prompts,
        max_tokens=3,
        temperature=0,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    texts: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
    assert [texts[i] for i in range(4)] == [c.text for c in r.choices]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


async def test_the_hold_covers_every_choice(yun: Harness) -> None:
    """n multiplies the hold: a balance that covers one choice's maximum is refused for eight."""
    async with priced(yun):
        _, key = await new_org(yun, "0.2")
        async with client_for(yun, key) as client:
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=10, n=8)
            assert info.value.code == "insufficient_quota"
            assert await _records(yun, key) == []
            ok = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=10, n=2)
        assert ok.usage is not None and ok.usage.completion_tokens == 20
        bal = await org_get(yun, key, "balance")
        (record,) = await _records(yun, key)
        assert bal["held_nanodollars"] == 0 and record["completion_tokens"] == 20
        assert bal["balance_nanodollars"] == 200_000_000 - record["cost_nanodollars"]


# -- legacy completions: logprobs, echo, system_fingerprint -------------------------------------------
def _check_logprobs(lp: Any, text: str, tokens: int, top: int) -> None:
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == tokens
    assert "".join(lp.tokens) == text
    offsets = [sum(len(t) for t in lp.tokens[:i]) for i in range(tokens)]
    assert lp.text_offset == offsets
    for token, logprob, alternatives in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and 1 <= len(alternatives) <= top
        assert token in alternatives  # greedy: the chosen token is the likeliest


async def test_completions_logprobs_in_the_completions_shape(yun: Harness) -> None:
    r = await yun.client.completions.create(model="tiny", prompt="def hello", max_tokens=4, temperature=0, logprobs=2)
    choice = r.choices[0]
    assert choice.logprobs is not None
    _check_logprobs(choice.logprobs, choice.text, 4, 2)
    stream = await yun.client.completions.create(
        model="tiny", prompt="def hello", max_tokens=4, temperature=0, logprobs=2, stream=True
    )
    chunks = [c async for c in stream if c.choices]
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []]
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset or []]
    assert tokens == choice.logprobs.tokens and offsets == choice.logprobs.text_offset  # offsets run on


async def test_completions_echo(yun: Harness) -> None:
    plain = await yun.client.completions.create(model="tiny", prompt="def hello", max_tokens=3, temperature=0)
    echoed = await yun.client.completions.create(
        model="tiny", prompt="def hello", max_tokens=3, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "def hello" + plain.choices[0].text
    assert echoed.usage is not None and plain.usage is not None
    assert (echoed.usage.prompt_tokens, echoed.usage.completion_tokens) == (plain.usage.prompt_tokens, 3)
    stream = await yun.client.completions.create(
        model="tiny", prompt=["def hello", "import os"], max_tokens=3, temperature=0, echo=True, stream=True
    )
    texts: dict[int, str] = {}
    async for c in stream:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
    assert texts[0] == echoed.choices[0].text and texts[1].startswith("import os")
    # lm-eval-harness's loglikelihood asks for the prompt's own logprobs: llama.cpp computes none.
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.completions.create(model="tiny", prompt="def hello", max_tokens=1, echo=True, logprobs=1)
    assert info.value.param == "echo" and "llama.cpp" in info.value.message
    # A prompt given as token ids: test_api_compat_edges.py.


async def test_system_fingerprint_is_the_engines_on_both_endpoints(yun: Harness) -> None:
    chat = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1)
    text = await yun.client.completions.create(model="tiny", prompt="x", max_tokens=1)
    assert chat.system_fingerprint and text.system_fingerprint == chat.system_fingerprint


# -- llama.cpp's extensions ------------------------------------------------------------------------------
YES_NO = 'root ::= "yes" | "no"'
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def _schema_shaped(text: str) -> bool:
    """Output the schema's grammar admits: the random tiny model may spend its tokens on the whitespace
    JSON allows, so what it wrote is checked as a prefix of an admitted object (unconstrained, it writes
    no braces at all)."""
    compact = re.sub(r"\s", "", text)
    return compact.startswith("{") and any(o.startswith(compact) for o in ('{"ok":true}', '{"ok":false}'))


async def test_grammar_and_schemas_constrain_both_endpoints(yun: Harness) -> None:
    chat = await yun.client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=5, extra_body={"grammar": YES_NO}
    )
    assert chat.choices[0].message.content in {"yes", "no"}
    text = await yun.client.completions.create(model="tiny", prompt="x", max_tokens=5, extra_body={"grammar": YES_NO})
    assert text.choices[0].text in {"yes", "no"}
    for extra in ({"json_schema": SCHEMA}, {"response_format": {"type": "json_object", "schema": SCHEMA}}):
        chat = await yun.client.chat.completions.create(
            model="tiny", messages=MSG, max_tokens=100, temperature=0, extra_body=extra
        )
        assert _schema_shaped(chat.choices[0].message.content or ""), extra
        text = await yun.client.completions.create(
            model="tiny", prompt="x", max_tokens=100, temperature=0, extra_body=extra
        )
        assert _schema_shaped(text.choices[0].text), extra


SAMPLING = {
    "top_k": 40,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "dry_multiplier": 0.0,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_penalty_last_n": 64,
    "dry_sequence_breakers": ["\n"],
    "xtc_probability": 0.0,
    "xtc_threshold": 0.1,
    "n_probs": 1,
    "seed": 7,
}


async def test_sampling_extensions_reach_the_engine(yun: Harness, caplog: pytest.LogCaptureFixture) -> None:
    gateway = yun.services.gateway
    gateway.log_prompts = True  # the body each engine gets, in the log
    try:
        with caplog.at_level(logging.INFO, logger="yun.gateway"):
            await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2, extra_body=SAMPLING)
            await yun.client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body=SAMPLING)
    finally:
        gateway.log_prompts = False
    sent = [json.loads(r.getMessage().split(": ", 1)[1]) for r in caplog.records if "request to tiny" in r.message]
    assert len(sent) == 2 and all(body.items() >= SAMPLING.items() for body in sent)
    # And the engine acts on them: post_sampling_probs turns chat logprobs into probabilities.
    r = await yun.http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MSG, "max_tokens": 2, "logprobs": True, "post_sampling_probs": True},
    )
    assert r.status_code == 200, r.text
    assert "prob" in r.json()["choices"][0]["logprobs"]["content"][0]


async def test_extensions_are_refused_where_the_engine_would_drop_them(yun: Harness) -> None:
    from yun.api.lifespan import sync_deployments

    yun.services.catalog.add_external("ext-compat", "http://127.0.0.1:9")
    await sync_deployments(yun.services)
    try:
        for extra in ({"top_k": 5}, {"grammar": YES_NO}, {"json_schema": SCHEMA}):
            with pytest.raises(openai.BadRequestError) as info:
                await yun.client.chat.completions.create(model="ext-compat", messages=MSG, extra_body=extra)
            assert info.value.param == next(iter(extra)) and info.value.code == "unsupported_parameter"
        with pytest.raises(openai.BadRequestError) as info:
            await yun.client.completions.create(
                model="ext-compat", prompt="x", extra_body={"response_format": {"type": "json_object"}}
            )
        assert info.value.param == "response_format"
    finally:
        yun.services.catalog.remove("ext-compat")
        await sync_deployments(yun.services)


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "some_future_field", 1),
        ("/v1/chat/completions", "functions", [{"name": "f"}]),
        ("/v1/chat/completions", "modalities", ["text", "audio"]),
        ("/v1/completions", "chat_template_kwargs", {"x": 1}),
        ("/v1/embeddings", "truncate", True),
    ],
)
async def test_unknown_parameters_are_refused_by_name(yun: Harness, path: str, field: str, value: Any) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": {"model": "tiny", "messages": MSG, "max_tokens": 1},
        "/v1/completions": {"model": "tiny", "prompt": "x", "max_tokens": 1},
        "/v1/embeddings": {"model": "minilm", "input": "x"},
    }
    body = {**bodies[path], field: value}
    r = await yun.http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]


async def test_harmless_metadata_is_accepted(yun: Harness) -> None:
    r = await yun.client.chat.completions.create(
        model="tiny",
        messages=MSG,
        max_tokens=1,
        metadata={"a": "b"},
        store=False,
        extra_body={"modalities": ["text"], "service_tier": "auto", "prompt_cache_key": "k", "functions": None},
    )
    assert r.usage is not None and r.usage.completion_tokens == 1


async def test_llamacpp_spellings_the_engine_takes(yun: Harness) -> None:
    """What the bare engine accepts, Yun does: `n_predict` for max_tokens, prompts mixing text and token
    ids, a json_schema response format without OpenAI's mandatory name, generation extensions."""
    r = await yun.client.completions.create(model="tiny", prompt="x", extra_body={"n_predict": 3})
    assert r.usage is not None and r.usage.completion_tokens == 3
    chat = await yun.client.chat.completions.create(model="tiny", messages=MSG, extra_body={"n_predict": 2})
    assert chat.usage is not None and chat.usage.completion_tokens == 2
    mixed = await yun.client.completions.create(
        model="tiny",
        prompt=["def hello", [750, 23811]],
        max_tokens=2,
        temperature=0,  # type: ignore[list-item]
    )
    assert [c.index for c in mixed.choices] == [0, 1] and mixed.usage is not None
    assert mixed.usage.completion_tokens == 4
    fmt = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    shaped = await yun.client.chat.completions.create(
        model="tiny",
        messages=MSG,
        max_tokens=100,
        temperature=0,
        response_format=fmt,  # type: ignore[arg-type]
    )
    assert _schema_shaped(shaped.choices[0].message.content or "")
    r = await yun.client.completions.create(
        model="tiny", prompt="x", max_tokens=3, extra_body={"n_keep": -1, "n_indent": 0, "return_tokens": True}
    )
    assert r.usage is not None and r.usage.completion_tokens == 3


async def test_llamacpp_timings_when_asked(yun: Harness) -> None:
    for asked in (True, False):
        extra = {"timings_per_token": True} if asked else {}
        r = await yun.http.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": MSG, "max_tokens": 3, "stream": True, **extra},
        )
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        timed = [e for e in events if "timings" in e]
        assert (len(timed) >= 3) if asked else not timed, r.text
        if asked:
            assert timed[-1]["timings"]["predicted_n"] == 3
        r = await yun.http.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 2, **extra}
        )
        assert ("timings" in r.json()) is asked
