"""Deployments and replicas. Backend `local` runs engine processes on this machine."""

from yun.cluster.local import ClientGone, Deployment, LocalCluster
from yun.cluster.replica import Replica
from yun.cluster.spec import EngineTuning, ReplicaSpec

__all__ = ["ClientGone", "Deployment", "EngineTuning", "LocalCluster", "Replica", "ReplicaSpec"]
