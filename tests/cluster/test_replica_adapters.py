"""A Ray replica's fine-tune adapters on a node that does not see the controller's disk."""

from __future__ import annotations

from pathlib import Path

from yun.cluster.backends.ray_actor import with_adapters_here
from yun.cluster.base import EngineArgs, ReplicaOrder


def test_a_replica_on_a_node_without_the_adapters_gets_the_shipped_ones(tmp_path: Path) -> None:
    """A Ray replica's fine-tune adapters travel with its actor; the node writes those its disk lacks."""
    here = tmp_path / "shared.gguf"
    here.write_bytes(b"on a disk this node sees")
    paths = (str(here), "/controller/adapters/a.gguf", "/controller/adapters/b.gguf", "/controller/adapters/gone.gguf")
    order = ReplicaOrder("r", "d", "m", "chat", "llamacpp", "/m.gguf", "s", args=EngineArgs(lora=paths))
    shipped = {paths[0]: b"stale copy", paths[1]: b"adapter A", paths[2]: b"adapter A", paths[3]: b""}
    del shipped[paths[3]]
    node_dir = tmp_path / "node"
    placed = with_adapters_here(order, shipped, node_dir).args.lora
    assert placed[0] == str(here)  # the node sees it: used where it is
    assert placed[1] == placed[2] != paths[1]  # written once, named by its content
    assert Path(placed[1]).read_bytes() == b"adapter A" and Path(placed[1]).parent == node_dir
    assert placed[3] == paths[3]  # not shipped: the engine's start names it missing
    assert sorted(p.name for p in node_dir.iterdir()) == [Path(placed[1]).name]
