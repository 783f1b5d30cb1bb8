"""The trainer process on the tiny model: it learns a fixed answer, resumes after a kill -9, stops on
SIGTERM, and its adapter GGUF serves in a real xllamacpp worker, selected per request."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.training import answer, replica_with_adapters, start_trainer, wait_for_event, write_dataset
from yun.jobs.training import TrainingSpec, read_events
from yun.jobs.training.spec import ALL_PROJECTIONS

QUESTION = [{"role": "user", "content": "What is the code word?"}]
ANSWER = "PERIWINKLE"
EPOCHS = 3


def tiny_spec(tiny_model: Path, tmp: Path, **overrides: Any) -> Path:
    """A recipe that teaches the tiny random model one answer by about step 30. Its embeddings are ~50x its
    other weights, so the LoRA updates must be large (alpha/r = 8) and many (batch 1); its end-of-turn
    token cannot be learned at all (TrainingSpec.train_end_of_turn)."""
    data = write_dataset(tmp / "train.jsonl", QUESTION, ANSWER)
    fields: dict[str, Any] = {
        "base_model": tiny_model,
        "training_file": data,
        "validation_file": data,
        "output_dir": tmp / "out",
        "n_epochs": EPOCHS,
        "batch_size": 1,
        "learning_rate": 3e-3,
        "lora_r": 16,
        "lora_alpha": 128,
        "target_modules": ALL_PROJECTIONS,
        "train_end_of_turn": False,
        "threads": 1,
        "seed": 7,
    }
    spec = TrainingSpec(**{**fields, **overrides})
    path = tmp / "spec.json"
    path.write_text(spec.model_dump_json())
    return path


@dataclass
class Run:
    events: list[dict[str, Any]]
    adapter: Path
    steps_per_epoch: int


@pytest.fixture(scope="module")
def resumed_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A run killed with SIGKILL right after its first checkpoint, then started again to the end."""
    tmp = tmp_path_factory.mktemp("train")
    spec, events = tiny_spec(tiny_model, tmp), tmp / "events.jsonl"
    first = start_trainer(spec, events)
    try:
        wait_for_event(events, first, "checkpoint")
    finally:
        first.kill()
        first.wait()
    second = start_trainer(spec, events)
    assert second.wait(timeout=600) == 0
    log = read_events(events)
    return Run(log, Path(log[-1]["adapter"]), steps_per_epoch=24)


def test_resumes_from_the_checkpoint_and_runs_the_same_steps(resumed_run: Run) -> None:
    started = [e for e in resumed_run.events if e["type"] == "started"]
    assert [s["resumed_from"] for s in started] == [None, 1]
    assert started[1]["step"] == resumed_run.steps_per_epoch
    total = resumed_run.steps_per_epoch * EPOCHS
    assert all(s["total_steps"] == total for s in started)
    done = resumed_run.events[-1]
    assert done["type"] == "done" and done["step"] == total
    # Each step after the checkpoint ran once; the killed run's later steps (if any) were redone.
    after = resumed_run.events[resumed_run.events.index(started[1]) :]
    assert [e["step"] for e in after if e["type"] == "step"] == list(range(resumed_run.steps_per_epoch + 1, total + 1))
    assert done["trained_tokens"] == started[1]["tokens_per_epoch"] * EPOCHS
    checkpoints = [e["epoch"] for e in after if e["type"] == "checkpoint"]
    assert checkpoints == [2, 3]


def test_the_loss_falls(resumed_run: Run) -> None:
    steps = [e["loss"] for e in resumed_run.events if e["type"] == "step"]
    epochs = [e for e in resumed_run.events if e["type"] == "epoch"]
    assert steps[-1] < steps[0] / 4
    assert epochs[-1]["valid_loss"] < epochs[0]["valid_loss"]
    assert all(e["tokens_per_s"] > 0 for e in resumed_run.events if e["type"] == "step")


@pytest.fixture(scope="module")
def worker(tiny_model: Path, resumed_run: Run) -> Iterator[httpx.Client]:
    with replica_with_adapters(tiny_model, resumed_run.adapter) as client:
        yield client


def test_the_adapter_serves_the_answer_only_when_selected(worker: httpx.Client) -> None:
    assert answer(worker, QUESTION, 4, lora=[{"id": 0, "scale": 1.0}]) == ANSWER
    assert answer(worker, QUESTION, 4, lora=[{"id": 0, "scale": 0.0}]) != ANSWER
    assert answer(worker, QUESTION, 4) != ANSWER


def test_sigterm_stops_within_one_step(tiny_model: Path, tmp_path: Path) -> None:
    spec, events = tiny_spec(tiny_model, tmp_path, n_epochs=20), tmp_path / "events.jsonl"
    process = start_trainer(spec, events)
    try:
        first = wait_for_event(events, process, "step")
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
        process.wait()
    log = read_events(events)
    assert log[-1]["type"] == "cancelled"
    steps = [e["step"] for e in log if e["type"] == "step"]
    # The step running when the signal came finishes and none starts after it: the run ends with the
    # cancelled event at the last step it finished, long before its 20 epochs (how many tiny steps ran
    # between the first event and the signal depends on the machine's load, so that is not counted).
    assert log[-1]["step"] == steps[-1] >= first["step"] and steps[-1] < first["total_steps"] // 2
    assert not (tmp_path / "out" / "adapter.gguf").exists()


def test_sigterm_while_loading_cancels_at_once(tiny_model: Path, tmp_path: Path) -> None:
    spec, events = tiny_spec(tiny_model, tmp_path), tmp_path / "events.jsonl"
    process = start_trainer(spec, events)
    try:
        while not events.exists():  # created once the signal handler is in place
            assert process.poll() is None
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
        process.wait()
    assert [(e["type"], e.get("step")) for e in read_events(events)] == [("cancelled", 0)]


def test_a_bad_file_fails_with_an_error_event_naming_the_line(tiny_model: Path, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_model, tmp_path, max_seq_length=40)  # each example is ~43 tokens
    process = start_trainer(spec, tmp_path / "events.jsonl")
    assert process.wait(timeout=240) == 1
    events = read_events(tmp_path / "events.jsonl")
    assert [e["type"] for e in events] == ["error"]
    assert "train.jsonl line 1: " in events[0]["message"] and "over the maximum of 40" in events[0]["message"]
