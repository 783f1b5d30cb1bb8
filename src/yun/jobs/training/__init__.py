"""LoRA fine-tuning on Yun's own compute: the spec of a run, its data, and the trainer process.

Importing this package never imports torch: only `trainer.py`, run as `python -m yun.jobs.training`, does.
"""

from yun.jobs.training.data import ChatTokenizer, Example, TrainingDataError, load_examples
from yun.jobs.training.events import EventLog, read_events
from yun.jobs.training.spec import Hyperparameters, TrainingSpec, resolve_hyperparameters

__all__ = [
    "ChatTokenizer",
    "EventLog",
    "Example",
    "Hyperparameters",
    "TrainingDataError",
    "TrainingSpec",
    "load_examples",
    "read_events",
    "resolve_hyperparameters",
]
