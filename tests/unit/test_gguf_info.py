from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from yun.catalog.gguf_info import read_gguf_card, read_gguf_metadata
from yun.errors import InvalidRequest, ModelSourceMissing


def test_fast_reader_agrees_with_the_gguf_library(minilm_gguf: Path) -> None:
    meta, params = read_gguf_metadata(minilm_gguf)
    reader = gguf.GGUFReader(str(minilm_gguf))
    assert params == sum(int(t.n_elements) for t in reader.tensors)
    for key in ("general.architecture", "bert.context_length", "bert.embedding_length", "bert.block_count"):
        assert meta[key] == reader.fields[key].contents()


def test_card_of_the_tiny_qwen(tiny_model: Path) -> None:
    card = read_gguf_card(tiny_model)
    assert card["family"] == "qwen2" and card["context_length"] == 4096
    assert card["quantization"] == "F16" and card["has_chat_template"] is True
    assert 9_000_000 < card["parameter_count"] < 11_000_000


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(InvalidRequest):
        read_gguf_card(bogus)
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(InvalidRequest):
        read_gguf_card(bogus)
    with pytest.raises(ModelSourceMissing):
        read_gguf_card(tmp_path / "missing.gguf")
