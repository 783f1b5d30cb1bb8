"""The autoscaler's decisions (cluster/autoscale.py) on a clock the test moves: windows, bounds, idle."""

from __future__ import annotations

import dataclasses

import pytest

from yun.cluster.autoscale import Autoscaler, Policy, Scaling
from yun.cluster.load import Load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy(target_in_flight=2, up_after_s=5, down_after_s=60)


def _run(scaler: Autoscaler, clock: Clock, d: Scaling, loads: list[Load], step_s: float = 1.0) -> list[int]:
    """Feed one load per step, applying each decision as the controller would; the counts it went through."""
    counts = []
    for load in loads:
        d = dataclasses.replace(d, desired=scaler.decide(d, load))
        counts.append(d.desired)
        clock.now += step_s
    return counts


def test_policy_parses_with_defaults_and_refuses_what_it_does_not_know() -> None:
    assert Policy.parse({}, slots=4) is None
    assert Policy.parse({"up_after_s": 1}, slots=4) == Policy(target_in_flight=4, up_after_s=1, down_after_s=60)
    assert Policy.parse({"target_in_flight": 2, "down_after_s": 0}, slots=4) == Policy(2, 5, 0)
    for bad in ({"target_inflight": 4}, {"target_in_flight": 0}, {"up_after_s": -1}, {"down_after_s": "60"}):
        with pytest.raises(ValueError):
            Policy.parse(bad, slots=4)


def test_scales_up_only_after_the_load_stays_high_and_to_the_lowest_count_it_asked_for() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=1, min=1, max=4, policy=POLICY)
    # 8 requests want 4 replicas, 6 want 3: after 5 s above 1 the count goes to the lowest asked meanwhile.
    counts = _run(scaler, clock, d, [Load(6, 2)] * 3 + [Load(4, 2)] * 3)
    assert counts == [1, 1, 1, 1, 1, 3]


def test_a_burst_shorter_than_the_up_window_starts_nothing() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=1, min=1, max=4, policy=POLICY)
    burst = [Load(8, 2)] * 4 + [Load(0, 2)]  # back to what one replica carries before 5 s
    assert _run(scaler, clock, d, burst * 4) == [1] * 20


def test_scales_down_slowly_to_the_highest_count_the_window_asked_for_and_never_flaps() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=4, min=1, max=4, policy=POLICY)
    # Load that swings between wanting 1 and 3 replicas: it never goes below 3 within a minute, so 4 -> 3.
    swinging = [Load(0, 1), Load(3, 2)] * 40
    counts = _run(scaler, clock, d, swinging)
    assert counts[:59] == [4] * 59 and counts[-1] == 3 and set(counts) == {4, 3}
    assert counts.index(3) == 60  # one move, after the 60 s window, and none back up while the load swings


def test_bounds_hold_and_the_policy_never_goes_to_zero() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=2, min=0, max=3, policy=Policy(1, up_after_s=0, down_after_s=0))
    assert _run(scaler, clock, d, [Load(50, 50)]) == [3]
    assert _run(scaler, clock, dataclasses.replace(d, desired=3), [Load()] * 3) == [1, 1, 1]
    floor = dataclasses.replace(d, min=2, desired=3)
    assert _run(scaler, clock, floor, [Load()] * 3) == [2, 2, 2]


def test_idle_timeout_scales_to_zero_only_with_min_zero_and_the_first_waiting_request_wakes_it() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=1, min=0, max=2, idle_timeout_s=10)
    counts = _run(scaler, clock, d, [Load(0, 1)] * 5 + [Load()] * 11)
    assert counts == [1] * 14 + [0, 0]  # work last seen in the 5th second: zero 10 s after it
    asleep = dataclasses.replace(d, desired=0)
    assert _run(scaler, clock, asleep, [Load()] * 3) == [0, 0, 0]
    assert _run(scaler, clock, asleep, [Load(queued=1)]) == [1]  # at once: a client is waiting
    with_policy = dataclasses.replace(asleep, policy=Policy(1, up_after_s=30))
    assert _run(scaler, clock, with_policy, [Load(queued=5)]) == [2]  # to what the load asks, within max
    # With min 1 the idle timeout does nothing; without a policy or a timeout nothing moves at all.
    assert _run(scaler, clock, dataclasses.replace(d, min=1), [Load()] * 30)[-1] == 1
    fixed = Scaling("f", desired=0, min=0, max=2)
    assert _run(scaler, clock, fixed, [Load(queued=3)]) == [0]
    # Nor does a deployment whose record says why it is not running (failed starts, no credit), nor
    # requests still in flight on a replica draining away: only a waiting request wakes one.
    assert _run(scaler, clock, dataclasses.replace(asleep, blocked=True), [Load(queued=3)]) == [0]
    assert _run(scaler, clock, asleep, [Load(in_flight=2)]) == [0]


def test_the_idle_clock_restarts_with_any_work() -> None:
    clock = Clock()
    scaler = Autoscaler(clock)
    d = Scaling("d", desired=1, min=0, max=1, idle_timeout_s=10)
    pattern = [Load()] * 9 + [Load(in_flight=1)]
    assert _run(scaler, clock, d, pattern * 5) == [1] * 50
