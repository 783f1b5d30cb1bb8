"""Deployments and replicas: the `Cluster` seam and its backends, the controller that places replicas
through it, and the gateway's router over the replica registry."""

from yun.cluster.endpoint import Endpoint, Slots
from yun.cluster.router import ClientGone, Pool, Route, Router
from yun.cluster.spec import ReplicaSpec

__all__ = ["ClientGone", "Endpoint", "Pool", "ReplicaSpec", "Route", "Router", "Slots"]
