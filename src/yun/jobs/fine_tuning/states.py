"""A fine-tuning job's states and the moves between them (OpenAI's names).

validating_files -> queued -> running -> succeeded | failed | cancelled. A running job whose runner died
(a crash of Yun) goes back to queued and resumes from its last checkpoint, at most MAX_ATTEMPTS times.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "FAILED",
    "FINAL",
    "MAX_ATTEMPTS",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "VALIDATING",
    "may_move",
]

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

ACTIVE = (VALIDATING, QUEUED, RUNNING)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
MAX_ATTEMPTS = 3
"""Runs of one job (the first and its resumptions after crashes) before it is failed."""

_MOVES = {
    VALIDATING: (QUEUED, FAILED, CANCELLED),
    QUEUED: (RUNNING, FAILED, CANCELLED),
    RUNNING: (SUCCEEDED, FAILED, CANCELLED, QUEUED),
}


def may_move(to: str) -> tuple[str, ...]:
    """The states a job may move to `to` from."""
    return tuple(state for state, targets in _MOVES.items() if to in targets)
