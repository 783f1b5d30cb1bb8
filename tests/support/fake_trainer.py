"""A stand-in for `python -m yun.jobs.training` that speaks its event protocol (yun/jobs/training/events.py)
without torch: the job machinery's tests (events, checkpoints, cancel, crash and resume, billing) run in
seconds. It reads the spec the runner wrote, counts the examples, and steps through them:

- `FAKE_TRAINER_STEP_S` seconds per step (default 0.05; the spec's `fake_step_s` first, which reaches a
  trainer on a Ray node, whose environment is not the test's); 10 trained tokens per example stepped through;
- a checkpoint per epoch (a directory with a real llama.cpp LoRA adapter of the base: zero weights, so
  the fine-tuned model answers as its base does, and a replica loads it);
- restarted on the same output dir, it resumes after the newest checkpoint;
- SIGTERM: a `cancelled` event at the next step, exit code 1;
- `FAKE_TRAINER_FAIL_AT_STEP=N`: an `error` event at step N, exit code 1.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

TOKENS_PER_EXAMPLE = 10
_stop = False


def _on_term(_signum: int, _frame: Any) -> None:
    global _stop
    _stop = True


def _adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter of `base` (rank 1 on block 0's q projection) whose weights are all zero."""
    import numpy as np

    from yun.catalog.gguf_info import read_gguf_metadata
    from yun.jobs.training.adapter_gguf import write_lora_gguf

    meta, _ = read_gguf_metadata(base, arrays=frozenset())
    width = int(meta[f"{meta['general.architecture']}.embedding_length"])
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    weights = {
        f"{prefix}.lora_A.weight": np.zeros((1, width), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((width, 1), np.float32),
    }
    return write_lora_gguf(weights, base, 1.0, out)


def main() -> int:
    args = sys.argv[1:]
    spec = json.loads(Path(args[args.index("--spec") + 1]).read_text())
    events = Path(args[args.index("--events") + 1])
    log = events.open("a")

    def emit(kind: str, **fields: Any) -> None:
        log.write(json.dumps({"type": kind, "at": time.time(), **fields}) + "\n")
        log.flush()

    signal.signal(signal.SIGTERM, _on_term)
    examples = sum(1 for line in Path(spec["training_file"]).read_text().splitlines() if line.strip())
    batch, epochs = int(spec["batch_size"]), int(spec["n_epochs"])
    per_epoch = math.ceil(examples / batch)
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    done_epochs = [int(p.name.split("-")[1]) for p in out.glob("epoch-*")]
    first = max(done_epochs, default=0)
    step = first * per_epoch
    emit(
        "started",
        step=step,
        total_steps=per_epoch * epochs,
        n_epochs=epochs,
        examples=examples,
        tokens_per_epoch=examples * TOKENS_PER_EXAMPLE,
        resumed_from=first or None,
    )
    fail_at = int(os.environ.get("FAKE_TRAINER_FAIL_AT_STEP", "0"))
    pause = float(spec.get("fake_step_s") or os.environ.get("FAKE_TRAINER_STEP_S", "0.05"))
    for epoch in range(first + 1, epochs + 1):
        for i in range(per_epoch):
            if _stop:
                emit("cancelled", step=step)
                return 1
            time.sleep(pause)
            step += 1
            if step == fail_at:
                emit("error", message=f"fake failure at step {step}")
                return 1
            seen = min(examples, (i + 1) * batch) + (epoch - 1) * examples
            emit(
                "step",
                step=step,
                epoch=epoch,
                loss=2.0 / step,
                trained_tokens=seen * TOKENS_PER_EXAMPLE,
                tokens_per_s=100.0,
                total_steps=per_epoch * epochs,
            )
        emit("epoch", epoch=epoch, step=step, train_loss=2.0 / step, valid_loss=None)
        checkpoint = out / f"epoch-{epoch}"
        checkpoint.mkdir(exist_ok=True)
        adapter = _adapter(Path(spec["base_model"]), checkpoint / "adapter.gguf")
        files = sorted(p.name for p in checkpoint.iterdir() if p.is_file())
        emit("checkpoint", epoch=epoch, step=step, path=str(checkpoint), adapter=str(adapter), files=files)
    final = _adapter(Path(spec["base_model"]), out / "adapter.gguf")
    emit("done", step=step, trained_tokens=examples * epochs * TOKENS_PER_EXAMPLE, adapter=str(final), seconds=0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
