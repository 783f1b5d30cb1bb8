"""The autoscaler: each deployment's desired replica count from the load its gateways publish.

A deployment's `autoscale` policy (JSON, all fields optional; `{}`: no autoscaling, `desired` stays as set):

    {"target_in_flight": 2, "up_after_s": 5, "down_after_s": 60}

- `target_in_flight`: requests (queued + in flight, over every gateway) one replica should carry; the
  wanted count is ceil(load / target) within [max(min, 1), max]. Default: the replica's slots
  (`parallel`), i.e. scale up once requests queue.
- `up_after_s` (default 5): the wanted count must stay above `desired` this long before scaling up, to
  the lowest count wanted meanwhile (a burst shorter than this starts nothing).
- `down_after_s` (default 60): the wanted count must stay below `desired` this long before scaling down,
  to the highest count wanted meanwhile. Up fast, down slow: load that comes and goes within
  `down_after_s` keeps its replicas, so the count never flaps.

The policy never goes below one replica. Zero is the idle timeout's (`idle_timeout_s`, with min 0): no
queued or in-flight work for that long scales to zero, with or without a policy. A deployment at zero
that has either (a policy or an idle timeout) is woken at once by the first request that waits for it
(its queued count): to the policy's wanted count, or to one. One whose record says why it is not running
(its replicas failed to start, or its owner has no credit for it) is not woken: gateways refuse its
requests at once, and only an operator's scale starts it again.

Decisions are the controller's alone (one is active) and are written through the deployment record,
which stays the truth: operators see the count move, and a count they set is the autoscaler's next
starting point. Its windows live in the controller's memory: a controller that takes over starts them
afresh (its idle clock starts when it does), which only ever delays a change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yun.store.loads import Load

__all__ = ["Autoscaler", "Policy", "Scaling"]

_FIELDS = {"target_in_flight", "up_after_s", "down_after_s"}


@dataclass(frozen=True)
class Policy:
    target_in_flight: float
    up_after_s: float = 5.0
    down_after_s: float = 60.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any], slots: int) -> Policy | None:
        """The policy a deployment's `autoscale` JSON says (None for `{}`); ValueError if it is not one."""
        if not raw:
            return None
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown autoscale field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
        values: dict[str, float] = {}
        for name in _FIELDS & set(raw):
            value = raw[name]
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"autoscale {name} must be a number, not {value!r}")
            if value < 0 or (name == "target_in_flight" and value == 0):
                raise ValueError(f"autoscale {name} must be {'over' if name == 'target_in_flight' else 'at least'} 0")
            values[name] = float(value)
        values.setdefault("target_in_flight", float(max(1, slots)))
        return cls(**values)


@dataclass(frozen=True)
class Scaling:
    """What the autoscaler needs of one deployment."""

    deployment_id: str
    desired: int
    min: int
    max: int
    policy: Policy | None = None
    idle_timeout_s: float | None = None
    blocked: bool = False
    """Its record says why it is not running (failed starts, no credit): never woken from zero."""

    @property
    def scaled(self) -> bool:
        """Whether the autoscaler moves it at all."""
        return self.policy is not None or self.idle_timeout_s is not None


@dataclass
class _Window:
    """Since when the wanted count has stayed on one side of `desired`, and its extreme meanwhile."""

    since: float
    bound: int


@dataclass
class _Track:
    busy_at: float
    up: _Window | None = None
    down: _Window | None = None


def _hold(
    window: _Window | None, now: float, wanted: int, keep: Callable[[int, int], int], after_s: float
) -> tuple[_Window | None, int | None]:
    """One more reading inside a window where the wanted count stays on one side of `desired`: `keep` (min
    going up, max going down) folds it into the count to move to. Once the window has lasted `after_s`
    it closes and that count is returned."""
    if window is None:
        window = _Window(now, wanted)
    window.bound = keep(window.bound, wanted)
    if now - window.since >= after_s:
        return None, window.bound
    return window, None


class Autoscaler:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the windows of deployments that are gone."""
        kept = set(keep)
        for deployment_id in list(self._tracks):
            if deployment_id not in kept:
                del self._tracks[deployment_id]

    def decide(self, d: Scaling, load: Load) -> int:
        """The replica count `d` should have now, given the load over every gateway."""
        now = self._clock()
        track = self._tracks.setdefault(d.deployment_id, _Track(busy_at=now))
        if load.busy:
            track.busy_at = now
        if not d.scaled:
            return d.desired
        if d.desired == 0:
            track.up = track.down = None
            # Woken by the first request that waits: someone is waiting for a cold start, so no window.
            # (Requests still in flight at zero are a drained replica's last ones: no reason to start one.)
            return self._wanted(d, load) if load.queued > 0 and not d.blocked else 0
        if d.idle_timeout_s is not None and d.min == 0 and now - track.busy_at >= d.idle_timeout_s:
            track.up = track.down = None
            return 0
        if d.policy is None:
            return d.desired
        wanted = self._wanted(d, load)
        moved = None
        if wanted > d.desired:
            track.down = None
            track.up, moved = _hold(track.up, now, wanted, min, d.policy.up_after_s)
        elif wanted < d.desired:
            track.up = None
            track.down, moved = _hold(track.down, now, wanted, max, d.policy.down_after_s)
        else:
            track.up = track.down = None
        return d.desired if moved is None else moved

    @staticmethod
    def _wanted(d: Scaling, load: Load) -> int:
        """ceil(load / target) within [max(min, 1), max] (one replica without a policy)."""
        work = load.queued + load.in_flight
        n = 1 if d.policy is None else math.ceil(work / d.policy.target_in_flight)
        return max(max(d.min, 1), min(d.max, n))
