"""When a draining replica (rolling update, scale-down) may stop: the controller's rule."""

from __future__ import annotations

import pytest

from yun.cluster.controller import drain_done
from yun.engines.openai_http import requests_in_flight


@pytest.mark.parametrize(
    ("elapsed", "work", "done"),
    [
        (0.5, 0, False),  # gateways may still be sending it requests
        (1.6, 0, True),  # idle once they all saw it leave: stopped at once
        (1.6, 2, False),  # a long generation runs on
        (599.0, 2, False),
        (600.0, 2, True),  # ... until the bound for engines that report work
        (5.0, None, False),  # an engine that does not say: the plain drain time
        (10.0, None, True),
    ],
)
def test_a_draining_replica_stops_when_its_engine_is_idle(elapsed: float, work: int | None, done: bool) -> None:
    assert drain_done(elapsed, work, drain_s=10.0, drain_max_s=600.0) is done


def test_in_flight_is_read_from_llamacpp_and_vllm_metrics() -> None:
    llama = "# HELP llamacpp:requests_processing x\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 1\n"
    assert requests_in_flight(llama) == 3
    vllm = 'vllm:num_requests_running{model_name="m"} 1.0\nvllm:num_requests_waiting{model_name="m"} 0.0\n'
    assert requests_in_flight(vllm) == 1
    assert requests_in_flight("process_cpu_seconds_total 3.5\n") is None
    assert requests_in_flight("llamacpp:requests_processing oops\n") is None
