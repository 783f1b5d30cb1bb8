"""Read a model card's facts (family, parameters, context, quantization, license) out of a GGUF header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from yun.errors import InvalidRequest, ModelSourceMissing

__all__ = ["read_gguf_card"]


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (ValueError, IndexError, TypeError):
        return None


def _human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}".rstrip("0").rstrip(".") + unit
    return str(n)


def _quantization(file_type: Any) -> str | None:
    if file_type is None:
        return None
    try:
        name: str = gguf.LlamaFileType(int(file_type)).name
    except ValueError:
        return f"type-{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_gguf_card(path: Path) -> dict[str, Any]:
    """Facts about the model in `path`; raises InvalidRequest if it is not a GGUF file."""
    if not path.is_file():
        raise ModelSourceMissing(f"no such file: {path}")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except (ValueError, OSError, KeyError) as exc:
        raise InvalidRequest(f"{path.name} is not a readable GGUF file: {exc}", param="path") from exc
    arch = _field(reader, "general.architecture")
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    card: dict[str, Any] = {
        "name": _field(reader, "general.name") or path.stem,
        "family": arch,
        "parameters": _field(reader, "general.size_label") or _human_count(n_params),
        "parameter_count": n_params,
        "context_length": _field(reader, f"{arch}.context_length") if arch else None,
        "embedding_length": _field(reader, f"{arch}.embedding_length") if arch else None,
        "quantization": _quantization(_field(reader, "general.file_type")),
        "license": _field(reader, "general.license"),
        "format": "gguf",
        "file_size": path.stat().st_size,
        "has_chat_template": "tokenizer.chat_template" in reader.fields,
    }
    return card
