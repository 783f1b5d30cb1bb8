"""The LoRA trainer, run in its own process (`python -m yun.jobs.training`): the only code that imports torch.

A plain loop, no `Trainer` framework: the base model's weights are dequantized from the GGUF it is served
from (transformers' `gguf_file=`), PEFT adds LoRA matrices to the chosen projections, and AdamW steps on
batches of examples shuffled anew each epoch by a generator seeded from (seed, epoch), so a run resumed
from a checkpoint sees the same batches the killed one would have.

The loss is the mean cross-entropy over the assistant's tokens only. Logits are computed only at those
positions: the vocabulary projection (151,936 columns for Qwen) over every position was most of the
memory of a step (TRAINING.md), and the prompt's logits never enter the loss.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from yun.catalog.gguf_info import write_without_arrays
from yun.jobs.training.adapter_gguf import write_lora_gguf
from yun.jobs.training.checkpoint import Position, newest_checkpoint, publish, scratch_dir
from yun.jobs.training.data import ChatTokenizer, Example, load_examples
from yun.jobs.training.events import Cancelled, EventLog
from yun.jobs.training.spec import TrainingSpec

__all__ = ["Trainer", "load_base"]

_ADAPTER_FILE = "adapter_model.safetensors"


def load_base(path: Path, scratch: Path) -> PreTrainedModel:
    """The base model in fp32, dequantized from its GGUF, without the GGUF `quantization_config` (the
    weights are plain tensors now; left in place, PEFT and saving treat the model as quantized).

    transformers reads the file through a copy without the tokenizer's arrays, written in `scratch` and
    removed once loaded: it parses a GGUF twice and every array in full, which took ~25 s of the ~35 s
    load of Qwen2.5-0.5B under load; the weights and the config are the same."""
    scratch.mkdir(parents=True, exist_ok=True)
    weights = write_without_arrays(path, scratch / ".base-weights.gguf")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(scratch), gguf_file=weights.name, dtype=torch.float32)
    finally:
        weights.unlink(missing_ok=True)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _batch(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and the trained mask of each example."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    trained = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids, dtype=torch.long)
        attention[row, :n] = 1
        trained[row, :n] = torch.tensor(e.trained, dtype=torch.bool)
    return ids, attention, trained


def _loss(model: PeftModel, examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the trained tokens, and how many there were. Position t predicts token t+1."""
    device = model.device
    ids, attention, trained = (t.to(device) for t in _batch(examples, pad_id))
    causal: Any = model.get_base_model()
    hidden = causal.get_decoder()(input_ids=ids, attention_mask=attention).last_hidden_state
    targets = trained[:, 1:]
    logits = causal.get_output_embeddings()(hidden[:, :-1][targets]).float()
    return F.cross_entropy(logits, ids[:, 1:][targets]), int(targets.sum())


class Trainer:
    """One run of `spec`, reporting to `events`; `stop` set (by SIGTERM) ends it before the next step."""

    def __init__(self, spec: TrainingSpec, events: EventLog, stop: threading.Event) -> None:
        self.spec = spec
        self.events = events
        self.stop = stop
        self.training = False
        """Whether the step loop runs (a stop is then honoured between steps; before, at once)."""
        self.step = 0
        """Optimizer steps finished (resumed ones included)."""

    def run(self) -> None:
        spec = self.spec
        began = time.monotonic()
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        tokenizer = ChatTokenizer.from_gguf(spec.base_model, train_end_of_turn=spec.train_end_of_turn)
        train = load_examples(spec.training_file, tokenizer, spec.max_seq_length)
        valid = load_examples(spec.validation_file, tokenizer, spec.max_seq_length) if spec.validation_file else []
        eos = tokenizer.counter.eos
        pad_id = tokenizer.counter.tokenizer.token_to_id(eos) if eos else 0
        config = LoraConfig(
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=list(spec.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        model: PeftModel = get_peft_model(load_base(spec.base_model, spec.output_dir), config)
        if torch.cuda.is_available():  # CPU here; a GPU node trains on its GPU, in fp32 all the same
            model.to("cuda")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate)
        position = Position(epoch=0, step=0, trained_tokens=0)
        newest = newest_checkpoint(spec.output_dir)
        if newest is not None:
            position = self._restore(model, optimizer, newest[0], newest[1])
        self.step = position.step
        per_epoch = spec.steps_per_epoch(len(train))
        total = per_epoch * spec.n_epochs
        self.events.emit(
            "started",
            step=position.step,
            total_steps=total,
            n_epochs=spec.n_epochs,
            examples=len(train),
            tokens_per_epoch=sum(len(e.ids) for e in train),
            resumed_from=position.epoch if newest is not None else None,
        )
        self.training = True
        for epoch in range(position.epoch + 1, spec.n_epochs + 1):
            position = self._epoch(model, optimizer, train, valid, pad_id, epoch, position, total)
        final = self._write_adapter(model, spec.output_dir)
        self.events.emit(
            "done",
            step=position.step,
            trained_tokens=position.trained_tokens,
            adapter=str(final),
            seconds=round(time.monotonic() - began, 3),
        )

    def _epoch(
        self,
        model: PeftModel,
        optimizer: torch.optim.Optimizer,
        train: list[Example],
        valid: list[Example],
        pad_id: int,
        epoch: int,
        position: Position,
        total: int,
    ) -> Position:
        spec = self.spec
        model.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch))
        step, tokens, losses = position.step, position.trained_tokens, []
        for start in range(0, len(train), spec.batch_size):
            if self.stop.is_set():
                raise Cancelled
            batch = [train[int(i)] for i in order[start : start + spec.batch_size]]
            t0 = time.monotonic()
            loss, _ = _loss(model, batch, pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            seconds = time.monotonic() - t0
            step += 1
            self.step = step
            batch_tokens = sum(len(e.ids) for e in batch)
            tokens += batch_tokens
            losses.append(float(loss.detach()))
            self.events.emit(
                "step",
                step=step,
                total_steps=total,
                epoch=epoch,
                loss=round(losses[-1], 6),
                trained_tokens=tokens,
                tokens_per_s=round(batch_tokens / seconds, 2) if seconds > 0 else None,
            )
        valid_loss = self._validate(model, valid, pad_id) if valid else None
        self.events.emit(
            "epoch", epoch=epoch, step=step, train_loss=round(sum(losses) / len(losses), 6), valid_loss=valid_loss
        )
        position = Position(epoch=epoch, step=step, trained_tokens=tokens)
        path = self._checkpoint(model, optimizer, position)
        files = sorted(p.name for p in path.iterdir() if p.is_file())  # what the runner keeps to resume from
        self.events.emit(
            "checkpoint", epoch=epoch, step=step, path=str(path), adapter=str(path / "adapter.gguf"), files=files
        )
        return position

    @torch.no_grad()
    def _validate(self, model: PeftModel, valid: list[Example], pad_id: int) -> float:
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(valid), self.spec.batch_size):
            loss, n = _loss(model, valid[start : start + self.spec.batch_size], pad_id)
            total, count = total + float(loss) * n, count + n
        model.train()
        return round(total / count, 6)  # every example has trained tokens (load_examples): count > 0

    def _write_adapter(self, model: PeftModel, directory: Path) -> Path:
        """The adapter as PEFT saves it and as llama.cpp loads it (GGUF), into `directory`."""
        weights = get_peft_model_state_dict(model, save_embedding_layers=False)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(directory / _ADAPTER_FILE))
        config = model.peft_config["default"].to_dict()
        (directory / "adapter_config.json").write_text(json.dumps(config, default=list, indent=1))
        arrays = {k: v.detach().float().numpy() for k, v in weights.items()}
        return write_lora_gguf(
            arrays, self.spec.base_model, self.spec.lora_alpha, directory / "adapter.gguf", self.spec.adapter_dtype
        )

    def _checkpoint(self, model: PeftModel, optimizer: torch.optim.Optimizer, position: Position) -> Path:
        scratch = scratch_dir(self.spec.output_dir, position.epoch)
        self._write_adapter(model, scratch)
        torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, scratch / "state.pt")
        return publish(scratch, self.spec.output_dir, position)

    def _restore(self, model: PeftModel, optimizer: torch.optim.Optimizer, path: Path, position: Position) -> Position:
        set_peft_model_state_dict(model, load_file(str(path / _ADAPTER_FILE)))
        state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        return position
