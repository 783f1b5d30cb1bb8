"""Which node the `ray` backend prefers for a new replica (the choice Ray's own SPREAD leaves to chance)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.cluster.helpers import vllm_order
from yun.cluster.base import Resources

pytest.importorskip("ray", reason="ray is not installed (scripts/install.sh installs it)")

from yun.cluster.backends.ray import spread_node  # noqa: E402


def node(node_id: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": alive, "Resources": {"CPU": 1.0, "memory": 8 * 2**30, **resources}}


def test_the_node_with_fewest_replicas_of_the_deployment_then_of_all() -> None:
    order = vllm_order()  # deployment "fake"
    nodes = [node("a"), node("b"), node("c")]
    assert spread_node(nodes, [("fake", "a"), ("other", "b")], order) == "c"
    assert spread_node(nodes, [("fake", "a"), ("other", "b"), ("other", "c"), ("other", "c")], order) == "b"
    assert spread_node(nodes, [("fake", "a"), ("fake", "b"), ("fake", "c"), ("fake", "b")], order) == "a"


def test_only_live_nodes_with_the_resources() -> None:
    gpu = dataclasses.replace(vllm_order(), resources=Resources(cpus=1, gpus=1, memory_mb=1024))
    nodes = [node("dead", alive=False, GPU=1), node("cpu"), node("gpu", GPU=1)]
    assert spread_node(nodes, [("fake", "gpu")], gpu) == "gpu"
    assert spread_node([node("cpu")], [], gpu) is None
