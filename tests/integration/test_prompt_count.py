"""Prompt tokens counted in the gateway, with the model's own tokenizer, against the real engine's count:
the default max_tokens, holds near the real cost, context_length_exceeded before rate limits, TPM on
real counts. The harness serves the tiny model with 512-token slots (conftest.CONTEXT_PER_SLOT)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.integration.conftest import CONTEXT_PER_SLOT, Harness
from tests.integration.tenants import client_for, new_org, org_get, priced

pytestmark = pytest.mark.asyncio(loop_scope="session")
NANO = 1_000_000_000
# USD per 1M tokens: one input token costs $0.001, one output token $0.002.
PRICE = {"input": "1000", "output": "2000"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city (°C)",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CHATS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hello there"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Héllo  wörld 12345 \n\n  code:\n```py\nprint('x')\n```"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": " 你好, 世界!  <|im_end|> not a control token from a user"},
        ]
    },
    {"messages": [{"role": "user", "content": "What's the weather in Paris?"}], "tools": TOOLS},
    {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": TOOLS,
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]}
        ]
    },
    {  # long contents are counted apart from the template (and remembered)
        "messages": [
            {"role": "system", "content": "You review code. " * 20},
            {"role": "user", "content": "\n\n  def f(x):\n    return x * 2  # naïve\n" * 8},
            {"role": "assistant", "content": " Looks fine; 1234 tests pass.\t" * 10},
            {"role": "user", "content": "Short question?"},
        ]
    },
]


def cost(prompt: int, completion: int) -> int:
    return prompt * 1_000_000 + completion * 2_000_000


@pytest.fixture(scope="module", autouse=True)
async def priced_here(yun: Harness) -> AsyncIterator[None]:
    async with priced(yun, PRICE):
        yield


@pytest.fixture(scope="module")
async def funded(yun: Harness) -> dict[str, str]:
    _, key = await new_org(yun, "1000")
    return {"Authorization": f"Bearer {key}"}


async def gateway_count(yun: Harness, body: dict[str, Any]) -> tuple[int, bool]:
    spec = yun.services.router.get("tiny").spec
    count = await yun.services.gateway.prompts.chat(spec, body)
    return count.tokens, count.exact


@pytest.mark.parametrize(
    "body", CHATS, ids=["plain", "system-unicode", "turns", "tools", "tool-call", "parts", "long-turns"]
)
async def test_chat_count_matches_the_engine(yun: Harness, funded: dict[str, str], body: dict[str, Any]) -> None:
    r = await yun.http.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 1, **body}, headers=funded)
    assert r.status_code == 200, r.text
    real = r.json()["usage"]["prompt_tokens"]
    counted, exact = await gateway_count(yun, body)
    assert exact
    if "tools" in body or any(not isinstance(m.get("content"), str) for m in body["messages"]):
        # Rendered through JSON: an upper bound with a small margin, never below the engine's count.
        assert real <= counted <= real + real // 50 + 16
    else:
        # Long contents are counted apart: one token more where the template's newline before a content
        # would have merged with the content's own leading newlines; never less than the engine's count.
        apart = sum(len(m["content"]) >= 256 for m in body["messages"])
        assert real <= counted <= real + apart
        if not apart:
            assert counted == real


async def test_completion_and_embedding_counts_match_the_engine(yun: Harness, funded: dict[str, str]) -> None:
    prompts: list[Any] = ["Hello world", "  leading spaces, 123456 numbers\n\n", "你好", [9707, 1879, 0]]
    tiny = yun.services.router.get("tiny").spec
    counted = await yun.services.gateway.prompts.inputs(tiny, prompts)
    for prompt, count in zip(prompts, counted, strict=True):
        r = await yun.http.post(
            "/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 1}, headers=funded
        )
        assert r.status_code == 200, r.text
        assert count.exact and count.tokens == r.json()["usage"]["prompt_tokens"], prompt
    minilm = yun.services.router.get("minilm").spec
    texts = ["hello", "The Quick brown fox, unaffable and naïve!", "x" * 300]
    for text, count in zip(texts, await yun.services.gateway.prompts.inputs(minilm, texts), strict=True):
        e = await yun.client.embeddings.create(model="minilm", input=text)
        assert count.exact and count.tokens == e.usage.prompt_tokens, text


async def test_default_max_tokens_is_the_context_left_after_the_prompt(yun: Harness, funded: dict[str, str]) -> None:
    """(a) Without max_tokens, a prompt of many bytes (but few tokens) used to get 16 output tokens."""
    messages = [{"role": "user", "content": "word " * 150}]  # 750 bytes: more than the 512-token context
    r = await yun.http.post("/v1/chat/completions", json={"model": "tiny", "messages": messages}, headers=funded)
    assert r.status_code == 200, r.text
    usage, choice = r.json()["usage"], r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    # The tiny model never ends on its own: it writes until the slot's context is full.
    assert usage["prompt_tokens"] + usage["completion_tokens"] == CONTEXT_PER_SLOT
    assert usage["completion_tokens"] > 16


async def test_credit_for_the_real_cost_is_enough(yun: Harness) -> None:
    """(b) Holds are near the real cost: credit for exactly (real prompt + max_tokens) is served."""
    messages = [{"role": "user", "content": "word " * 80}]
    body = {"messages": messages}
    prompt, exact = await gateway_count(yun, body)
    assert exact
    need = cost(prompt, 5)
    org, key = await new_org(yun, f"{need / NANO:.9f}")
    async with client_for(yun, key) as client:
        r = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.prompt_tokens == prompt and r.usage.completion_tokens == 5
    bal = await org_get(yun, key, "balance")
    assert bal["balance_nanodollars"] == 0 and bal["held_nanodollars"] == 0
    assert yun.services.billing.money.ledger_sum(org) == 0


async def test_tpm_limit_judges_the_real_count(yun: Harness) -> None:
    """(c) A prompt of many bytes but few tokens fits a TPM limit its real count fits."""
    _, key = await new_org(yun, "10", tpm_limit=400)
    messages = [{"role": "user", "content": "word " * 300}]  # 1,500 bytes, ~330 tokens
    async with client_for(yun, key) as client:
        r = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.prompt_tokens + 5 <= 400


async def test_a_request_larger_than_the_tpm_limit_is_not_retried(yun: Harness) -> None:
    """Refused with the real count, and with `x-should-retry: false`, which the OpenAI SDKs obey."""
    _, key = await new_org(yun, "10", tpm_limit=100)
    messages = [{"role": "user", "content": "word " * 90}]
    prompt, _ = await gateway_count(yun, {"messages": messages})
    body = {"model": "tiny", "messages": messages, "max_tokens": 20}
    r = await yun.http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 429, r.text
    assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers
    assert f"it may use up to {prompt + 20} tokens" in r.json()["error"]["message"]


LONG = "hello " * 600  # ~600 tokens: longer than the 512-token slot


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": LONG}]}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": LONG}]},
            "messages",
        ),
        ("/v1/completions", {"model": "tiny", "prompt": LONG}, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": ["short", LONG]}, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": [15339] * 600}, "prompt"),
        ("/v1/embeddings", {"model": "minilm", "input": LONG}, "input"),
        ("/v1/embeddings", {"model": "minilm", "input": ["short", LONG]}, "input"),
    ],
    ids=["chat", "chat-stream", "completion", "completion-list", "completion-ids", "embedding", "embedding-list"],
)
async def test_too_long_is_a_400_before_any_rate_limit(
    yun: Harness, path: str, body: dict[str, Any], param: str
) -> None:
    """Refused as OpenAI does (400 context_length_exceeded, not retried by the SDK) even on a key whose
    TPM limit the prompt also exceeds: the context check comes first, and nothing is held or billed."""
    _, key = await new_org(yun, "10", tpm_limit=100)
    r = await yun.http.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert "maximum context length is 512 tokens" in err["message"]
    assert "resulted in 6" in err["message"]  # the prompt's own count (600-odd tokens)
    assert (await org_get(yun, key, "usage/records"))["data"] == []
    async with client_for(yun, key) as client:
        with pytest.raises(openai.BadRequestError):  # the SDK raises at once, it does not retry a 400
            await client.with_options(max_retries=2).completions.create(model="tiny", prompt=LONG)


async def test_insufficient_quota_says_what_was_needed_and_how_to_need_less(yun: Harness) -> None:
    """Issue 10 item 7: the refusal states the balance available, the hold needed and how to lower it."""
    messages = [{"role": "user", "content": "word " * 20}]
    prompt, _ = await gateway_count(yun, {"messages": messages})
    _, key = await new_org(yun, "0.0068")
    async with client_for(yun, key) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="tiny", messages=messages, max_tokens=100)  # type: ignore[arg-type]
    err = info.value
    assert err.status_code == 429 and err.code == "insufficient_quota" and err.type == "insufficient_quota"
    needed = cost(prompt, 100)
    message = err.message
    assert f"needs a hold of ${needed / NANO:g}" in message  # $0.2x: prompt + 100 output tokens
    assert f"{prompt} prompt tokens + max_tokens 100" in message
    assert "$0.0068 available" in message
    assert "smaller max_tokens" in message and "shorten the prompt" in message
    bal = await org_get(yun, key, "balance")
    assert bal["held_nanodollars"] == 0
