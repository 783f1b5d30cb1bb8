"""The tiny test model loads in llama.cpp, speaks Qwen's tokenizer and chat template, and is deterministic."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import xllamacpp

from tests.support.tiny_model import TINY_MODEL_NAME, build_tiny_qwen2, source_qwen_path, tiny_model_path

HI = [{"role": "user", "content": "Hi"}]

# What the real Qwen2.5 tokenizer and chat template make of HI (default system prompt included).
QWEN_HI_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_HI_TOKENS = [
    151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264,
    10950, 17847, 13, 151645, 198, 151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198,
]  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def model_path() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="module")
def client(model_path: Path) -> Iterator[httpx.Client]:
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = 2048
    params.n_parallel = 2
    params.cpuparams.n_threads = 2
    params.use_jinja = True
    params.verbosity = 0
    params.port = 0  # the server binds a free port and reports it in listening_address
    server = xllamacpp.Server(params)  # llama.cpp's HTTP server runs while this object lives
    with httpx.Client(base_url=server.listening_address, timeout=60) as http:
        yield http
    del server  # stops the server


def _chat(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    body = {"messages": HI, "temperature": 0, "max_tokens": 16, **extra}
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_cached_file_is_small(model_path: Path) -> None:
    assert model_path.name == TINY_MODEL_NAME
    assert 15_000_000 < model_path.stat().st_size < 40_000_000


def test_chat_is_deterministic_and_metered(client: httpx.Client) -> None:
    first = _chat(client)
    second = _chat(client)
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    for result in (first, second):
        usage = result["usage"]
        # Control-token embeddings are zero, so no end-of-generation token: runs to max_tokens.
        assert usage["completion_tokens"] == 16
        assert result["choices"][0]["finish_reason"] == "length"
        assert usage["prompt_tokens"] == len(QWEN_HI_TOKENS)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_real_qwen_template_and_tokenizer(client: httpx.Client) -> None:
    templated = client.post("/apply-template", json={"messages": HI})
    templated.raise_for_status()
    prompt = templated.json()["prompt"]
    assert "<|im_start|>" in prompt
    assert prompt == QWEN_HI_PROMPT
    tokens = client.post("/tokenize", json={"content": prompt, "add_special": True})
    tokens.raise_for_status()
    assert tokens.json()["tokens"] == QWEN_HI_TOKENS


def test_completions(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"prompt": "def hello", "temperature": 0, "max_tokens": 8})
    response.raise_for_status()
    result = response.json()
    assert isinstance(result["choices"][0]["text"], str)
    assert result["usage"]["prompt_tokens"] == 2  # "def", " hello"
    assert result["usage"]["completion_tokens"] == 8


def test_streaming_reports_usage(client: httpx.Client) -> None:
    body = {
        "messages": HI,
        "temperature": 0,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks: list[dict[str, Any]] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                break
            chunks.append(json.loads(data))
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["choices"] == []
    assert usage_chunks[0]["usage"]["completion_tokens"] == 8
    assert usage_chunks[0]["usage"]["prompt_tokens"] == len(QWEN_HI_TOKENS)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == _chat(client, max_tokens=8)["choices"][0]["message"]["content"]


def test_build_is_reproducible(model_path: Path, tmp_path: Path) -> None:
    # A fresh build must be byte-identical to the cached one; if not, the recipe changed without
    # bumping TINY_MODEL_VERSION (delete the cached file or bump the version).
    rebuilt = build_tiny_qwen2(source_qwen_path(), tmp_path / "tiny.gguf")
    assert _sha256(rebuilt) == _sha256(model_path)
    assert not list(tmp_path.glob("*.partial-*"))
