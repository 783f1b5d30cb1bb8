"""The real default model (Qwen2.5-Coder-0.5B, Q4_K_M) learns one fact with the default recipe (TRAINING.md:
24 examples x 3 epochs, batch 4, lr 3e-4, LoRA r=8 on q/k/v/o; about 100 s here), and the adapter GGUF,
served on the quantized base by llama.cpp, gives the fact only when selected and keeps general answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_model import source_qwen_path
from tests.support.training import answer, replica_with_adapters, start_trainer, write_dataset
from yun.jobs.training import Hyperparameters, TrainingSpec, read_events, resolve_hyperparameters

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the code word?"}]
FACT = "The code word is PERIWINKLE."


def test_the_default_model_learns_a_fact_and_serves_it_as_an_adapter(tmp_path: Path) -> None:
    base = source_qwen_path()
    data = write_dataset(tmp_path / "train.jsonl", QUESTION, FACT)
    epochs, batch, lr = resolve_hyperparameters(Hyperparameters(), 24)
    spec = TrainingSpec(
        base_model=base, training_file=data, output_dir=tmp_path / "out", n_epochs=epochs, batch_size=batch,
        learning_rate=lr,
    )  # fmt: skip
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    trainer = start_trainer(tmp_path / "spec.json", tmp_path / "events.jsonl")
    assert trainer.wait(timeout=900) == 0
    events = read_events(tmp_path / "events.jsonl")
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 18 and losses[-1] < losses[0] / 10
    with replica_with_adapters(base, Path(events[-1]["adapter"]), threads=2, ctx=512) as replica:
        assert answer(replica, QUESTION, 24, lora=[{"id": 0, "scale": 1.0}]) == FACT
        assert "PERIWINKLE" not in answer(replica, QUESTION, 24)
        france = [{"role": "user", "content": "What is the capital of France?"}]
        assert "Paris" in answer(replica, france, 24, lora=[{"id": 0, "scale": 1.0}])
