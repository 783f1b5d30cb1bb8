"""Read a model card's facts (family, parameters, context, quantization, license) out of a GGUF header.

`gguf.GGUFReader` materialises every metadata array (150k tokenizer entries for Qwen) and takes ~10 s
on these machines; registering a model should not. This reader walks the header once with `struct`,
skipping arrays it does not need, and reads in well under a second.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf

from yun.errors import InvalidRequest, ModelSourceMissing

__all__ = ["gguf_writer", "read_gguf_card", "read_gguf_metadata", "write_without_arrays"]

# GGUF value types -> struct format of the scalar (8 = string, 9 = array are handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("string runs past the end of the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_arrays: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("<I"), self.unpack("<Q")
            if itype in _SCALARS and not keep_arrays:
                self.pos += struct.calcsize(_SCALARS[itype]) * count
                return None
            items = [self.value(itype, keep_arrays) for _ in range(count)]
            return items if keep_arrays else None
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf_metadata(path: Path, arrays: frozenset[str] = frozenset()) -> tuple[dict[str, Any], int]:
    """Scalar and string metadata of a GGUF file, and its total parameter count. Arrays are skipped
    (None) unless their key is in `arrays` (for example the tokenizer's vocabulary)."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        version = cur.unpack("<4xI")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            meta[key] = cur.value(cur.unpack("<I"), keep_arrays=key in arrays)
        params = 0
        for _ in range(n_tensors):
            cur.string()
            dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
            cur.pos += 4 + 8  # tensor type, data offset
            count = 1
            for d in dims:
                count *= d
            params += count
        return meta, params


def _align(n: int, to: int) -> int:
    return n + (-n % to)


def write_without_arrays(source: Path, target: Path) -> Path:
    """A copy of the GGUF `source` without its metadata arrays (the tokenizer's vocabulary, token types
    and merges), with `<arch>.vocab_size` set to the vocabulary's length, written atomically to `target`.

    For loaders that materialise every array (gguf's `GGUFReader`, so transformers' `gguf_file=`, which
    reads a file twice: ~13 s each for a 151,936-token vocabulary on a busy 2-core machine): the scalars,
    strings and tensors they need are byte for byte the same. The tensor data is copied as it is; tensor
    offsets are relative to the data section, so they hold once the section is re-aligned."""
    with source.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        version = cur.unpack("<4xI")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        kept: list[bytes] = []
        meta: dict[str, Any] = {}
        vocab = None
        for _ in range(n_kv):
            start = cur.pos
            key = cur.string()
            vtype = cur.unpack("<I")
            if vtype == _ARRAY and key == "tokenizer.ggml.tokens":
                vocab = struct.unpack_from("<Q", buf, cur.pos + 4)[0]
            meta[key] = cur.value(vtype, keep_arrays=False)
            if vtype != _ARRAY:
                kept.append(buf[start : cur.pos])
        arch = str(meta["general.architecture"])
        if vocab is not None and f"{arch}.vocab_size" not in meta:
            name = f"{arch}.vocab_size".encode()
            kept.append(struct.pack("<Q", len(name)) + name + struct.pack("<II", 4, vocab))  # 4: uint32
        infos = cur.pos
        for _ in range(n_tensors):
            cur.string()
            n_dims = cur.unpack("<I")
            cur.pos += 8 * n_dims + 4 + 8  # dims, tensor type, data offset
        alignment = int(meta.get("general.alignment") or 32)
        head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kept)) + b"".join(kept) + buf[infos : cur.pos]
        data = _align(cur.pos, alignment)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as out:
                out.write(head + b"\0" * (_align(len(head), alignment) - len(head)))
                f.seek(data)
                shutil.copyfileobj(f, out, 16 << 20)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return target


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
        meta, n_params = read_gguf_metadata(path)
    except (ValueError, OSError, struct.error) as exc:
        raise InvalidRequest(f"{path.name} is not a readable GGUF file: {exc}", param="path") from exc
    arch = meta.get("general.architecture")
    return {
        "name": meta.get("general.name") or path.stem,
        "family": arch,
        "parameters": meta.get("general.size_label") or _human_count(n_params),
        "parameter_count": n_params,
        "context_length": meta.get(f"{arch}.context_length") if arch else None,
        "embedding_length": meta.get(f"{arch}.embedding_length") if arch else None,
        "quantization": _quantization(meta.get("general.file_type")),
        "license": meta.get("general.license"),
        "format": "gguf",
        "file_size": path.stat().st_size,
        "has_chat_template": "tokenizer.chat_template" in meta,
    }


@contextlib.contextmanager
def gguf_writer(out_path: Path, arch: str) -> Iterator[gguf.GGUFWriter]:
    """A GGUF writer whose file appears at `out_path` whole or not at all: the caller adds keys and tensors
    inside the block; on leaving it the file is written under a temporary name and renamed into place (an
    error inside the block leaves nothing)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, arch)  # opens nothing until the header is written
    try:
        yield writer
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(out_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
