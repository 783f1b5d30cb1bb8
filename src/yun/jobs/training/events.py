"""The trainer's progress as JSON lines, one event per line, to a file and to stdout.

The job runner follows the file (or the stdout of the process or Ray task) to record events, bill the
steps that ran and mark the job's state. Every event has `type` and `at` (Unix seconds). Types:

- `started`: `step` (0, or where a resumed run picks up), `total_steps`, `n_epochs`, `examples`,
  `tokens_per_epoch`, `resumed_from` (the checkpoint's epoch, or null);
- `step`: `step`, `epoch` (1-based), `loss` (mean over the step's trained tokens), `trained_tokens`
  (all tokens of the examples stepped through so far, the billed measure), `tokens_per_s`;
- `epoch`: `epoch`, `step`, `train_loss` (mean over the epoch's steps), `valid_loss` (null without a
  validation file);
- `checkpoint`: `epoch`, `step`, `path` (the checkpoint directory), `adapter` (its llama.cpp GGUF), `files` (the
  names of its files, which the runner copies to the FileStore so a run started elsewhere resumes from them);
- `done`: `step`, `trained_tokens`, `adapter`, `seconds`;
- `cancelled`: `step` (the steps finished when a SIGTERM stopped the run);
- `error`: `message`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Cancelled", "EventLog", "read_events"]


class Cancelled(BaseException):  # noqa: N818 - a state, not a failure
    """A SIGTERM asked the run to stop: raised between steps, or from the signal handler before the step
    loop. A BaseException (like KeyboardInterrupt) so that no library's `except Exception` swallows it."""


class EventLog:
    """Appends events to `path` (a resumed run adds to the same log) and echoes them to `echo`."""

    def __init__(self, path: Path, echo: TextIO | None = sys.stdout) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._echo = echo

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "at": round(time.time(), 3), **fields}
        line = json.dumps(event, separators=(",", ":"))
        self._file.write(line + "\n")
        self._file.flush()
        if self._echo is not None:
            self._echo.write(line + "\n")
            self._echo.flush()
        return event

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every whole event in a log (a line cut short by a killed trainer is skipped)."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
