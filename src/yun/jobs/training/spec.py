"""What one training run is asked to do: the `TrainingSpec` the trainer process reads from a JSON file.

The spec is concrete (every number decided): a fine-tuning job resolves OpenAI's "auto" hyperparameters
and `learning_rate_multiplier` into it with `resolve_hyperparameters` before the trainer starts, so a
restarted trainer (resuming from its newest checkpoint) runs exactly the same recipe.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ALL_PROJECTIONS",
    "ATTENTION_PROJECTIONS",
    "BASE_LEARNING_RATE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "Hyperparameters",
    "TrainingSpec",
    "resolve_hyperparameters",
]

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_PROJECTIONS = (*ATTENTION_PROJECTIONS, "gate_proj", "up_proj", "down_proj")
"""The transformers module names LoRA may target; the adapter converter maps each to llama.cpp's tensor."""

# Measured (TRAINING.md): Qwen2.5-0.5B, r=8, alpha=16 on q/k/v/o learns one fact at lr 3e-4 by step 6 and
# keeps its general answers; lr 1e-3 overfits by step 18-24.
BASE_LEARNING_RATE = 3e-4
DEFAULT_EPOCHS = 3
# Batch 4 gave the best tokens/s on the 0.5B (128 x 4: ~70 tokens/s vs ~61 at 256 x 1).
DEFAULT_BATCH_SIZE = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hyperparameters(_Strict):
    """OpenAI's fine-tuning hyperparameters as a job is created with them."""

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Literal["auto"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"


def resolve_hyperparameters(h: Hyperparameters, n_examples: int) -> tuple[int, int, float]:
    """(n_epochs, batch_size, learning_rate) for a training file of `n_examples`: "auto" becomes the
    measured defaults, a batch never exceeds the file, and the learning rate is the base rate times the
    multiplier."""
    epochs = DEFAULT_EPOCHS if h.n_epochs == "auto" else h.n_epochs
    batch = DEFAULT_BATCH_SIZE if h.batch_size == "auto" else h.batch_size
    batch = max(1, min(batch, n_examples))
    multiplier = 1.0 if h.learning_rate_multiplier == "auto" else float(h.learning_rate_multiplier)
    return epochs, batch, BASE_LEARNING_RATE * multiplier


class TrainingSpec(_Strict):
    """One LoRA supervised fine-tuning run, with every value decided."""

    base_model: Path
    """The base model's GGUF file: the weights are dequantized from it, its tokenizer and chat template used."""
    training_file: Path
    """JSONL, one `{"messages": [...]}` chat per line."""
    validation_file: Path | None = None
    output_dir: Path
    """Checkpoints and the final adapter go here; a trainer restarted on the same directory resumes."""
    n_epochs: int = Field(default=DEFAULT_EPOCHS, ge=1, le=50)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=256)
    learning_rate: float = Field(default=BASE_LEARNING_RATE, gt=0, le=1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ATTENTION_PROJECTIONS
    max_seq_length: int = Field(default=1024, ge=16, le=131_072)
    """Tokens of one example (prompt and answer); a longer example is an error naming its line."""
    threads: int = Field(default=2, ge=1, le=512)
    adapter_dtype: Literal["f16", "f32"] = "f16"
    train_end_of_turn: bool = True
    """Train the end-of-turn token after each answer (how the fine-tune learns to stop). Off only for a base
    that cannot emit it at all, such as the tests' random model (its control tokens' embeddings are zero):
    there its loss stays ~30 nats and drowns the answer's."""

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(ALL_PROJECTIONS))
        if unknown or not v:
            raise ValueError(f"target_modules must be a non-empty subset of {list(ALL_PROJECTIONS)}; got {unknown}")
        return v

    def steps_per_epoch(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size)

    @classmethod
    def load(cls, path: Path) -> TrainingSpec:
        return cls.model_validate_json(path.read_text())
