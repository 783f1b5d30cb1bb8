"""Hyperparameters: what the client asked for, with "auto" resolved from the dataset.

The defaults come from the CPU recipe measured in TRAINING.md (LoRA r=8 on q/k/v/o and the MLP, batch 4,
3 epochs, learning rate 3e-4 for a 0.5B model); `learning_rate_multiplier` scales that base rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["BASE_LEARNING_RATE", "Hyperparameters", "resolve"]

BASE_LEARNING_RATE = 3e-4
DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 4

Auto = Literal["auto"]


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(
    examples: int,
    n_epochs: int | Auto | None,
    batch_size: int | Auto | None,
    learning_rate_multiplier: float | Auto | None,
) -> Hyperparameters:
    """Fill in "auto" (or absent) values for a dataset of `examples` examples."""
    epochs = DEFAULT_EPOCHS if n_epochs in (None, "auto") else int(n_epochs)
    batch = min(DEFAULT_BATCH, examples) if batch_size in (None, "auto") else int(batch_size)
    lr = 1.0 if learning_rate_multiplier in (None, "auto") else float(learning_rate_multiplier)
    return Hyperparameters(epochs, max(1, min(batch, examples)), lr)
