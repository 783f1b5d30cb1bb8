"""`python -m yun.jobs.training --spec SPEC.json --events EVENTS.jsonl`: one training run.

Run by the fine-tuning job runner as a process (`local` cluster) or inside a Ray task (`ray`). Events go
to the events file (appended: a resumed run continues the same log) and to stdout, one JSON object per
line (events.py). Exit status: 0 done, 1 failed (an `error` event says why), 143 cancelled by SIGTERM (a
`cancelled` event). Restarted on the same output directory, it resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from yun.errors import YunError
from yun.jobs.training.events import Cancelled, EventLog
from yun.jobs.training.spec import TrainingSpec

EXIT_DONE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 143


class _Run:
    """The run's state as the signal handler sees it: before the step loop a stop is immediate (nothing
    to finish cleanly: torch importing, the model or data loading); inside it, after the current step."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.trainer: object | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        if not getattr(self.trainer, "training", False):
            raise Cancelled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yun.jobs.training", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="TrainingSpec as JSON")
    parser.add_argument("--events", type=Path, required=True, help="JSON-lines event log (appended to)")
    args = parser.parse_args(argv)
    run = _Run()
    signal.signal(signal.SIGTERM, run.on_signal)
    signal.signal(signal.SIGINT, run.on_signal)
    events = EventLog(args.events)
    try:
        return _run(args.spec, events, run)
    except Cancelled:
        events.emit("cancelled", step=getattr(run.trainer, "step", 0))
        return EXIT_CANCELLED
    finally:
        events.close()


def _run(spec_path: Path, events: EventLog, run: _Run) -> int:
    try:
        spec = TrainingSpec.load(spec_path)
    except (OSError, ValidationError) as exc:
        events.emit("error", message=f"bad training spec {spec_path}: {exc}")
        return EXIT_FAILED
    # torch, transformers and peft load here, not at import: the job runner imports this package's
    # spec and data modules without them.
    try:
        from yun.jobs.training.trainer import Trainer
    except ImportError as exc:  # a serving-only install: say what to install, once (the runner fails the job)
        events.emit(
            "error",
            message=f"this machine cannot train ({exc}): install Yun with its train extra, "
            "pip install 'yun[train]' (torch, transformers, peft)",
        )
        return EXIT_FAILED

    run.trainer = trainer = Trainer(spec, events, run.stop)
    try:
        trainer.run()
    except YunError as exc:
        events.emit("error", message=exc.message)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with an event the job shows
        events.emit("error", message=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
