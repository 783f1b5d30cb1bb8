"""Per-epoch checkpoints: enough to resume a killed trainer where its last finished epoch left it.

`<output_dir>/checkpoints/epoch-NNN/` holds the LoRA weights (`adapter_model.safetensors` and PEFT's
`adapter_config.json`), the same adapter as a llama.cpp GGUF (`adapter.gguf`), the optimizer and RNG
state (`state.pt`) and the position (`position.json`: epoch, step, trained tokens). A checkpoint is
written in a scratch directory and renamed into place, so one that exists is whole: a trainer killed
while writing leaves only scratch, which the next run removes.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Position", "checkpoint_dir", "newest_checkpoint", "publish", "scratch_dir"]

_NAME = re.compile(r"^epoch-(\d{3,})$")


@dataclass(frozen=True)
class Position:
    epoch: int
    """Epochs finished."""
    step: int
    """Optimizer steps taken."""
    trained_tokens: int


def _root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return _root(output_dir) / f"epoch-{epoch:03d}"


def scratch_dir(output_dir: Path, epoch: int) -> Path:
    """An empty directory to write epoch `epoch`'s checkpoint in before `publish`."""
    scratch = _root(output_dir) / f".epoch-{epoch:03d}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch


def publish(scratch: Path, output_dir: Path, position: Position) -> Path:
    (scratch / "position.json").write_text(json.dumps(position.__dict__))
    final = checkpoint_dir(output_dir, position.epoch)
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)
    return final


def newest_checkpoint(output_dir: Path) -> tuple[Path, Position] | None:
    """The newest whole checkpoint, if any; scratch left by a killed run is removed."""
    root = _root(output_dir)
    if not root.is_dir():
        return None
    best: tuple[Path, Position] | None = None
    for entry in root.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".partial"):
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if _NAME.match(entry.name) is None or not (entry / "position.json").is_file():
            continue
        position = Position(**json.loads((entry / "position.json").read_text()))
        if best is None or position.epoch > best[1].epoch:
            best = (entry, position)
    return best
