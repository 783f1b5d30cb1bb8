"""Prometheus metrics, one registry per app (no module globals, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "yun_requests", "Requests answered", ["endpoint", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "yun_request_duration_seconds",
            "Time from request to last byte",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "yun_time_to_first_token_seconds",
            "Time from request to the first streamed token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "yun_tokens", "Tokens processed, as counted by the engine", ["model", "kind"], registry=self.registry
        )
        self.replica_healthy = Gauge(
            "yun_replica_healthy",
            "1 if the replica answers its health probe",
            ["model", "replica"],
            registry=self.registry,
        )
        self.replica_outstanding = Gauge(
            "yun_replica_outstanding",
            "Requests in flight on the replica",
            ["model", "replica"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "yun_queued_requests",
            "Requests waiting for a free slot of the model's replicas",
            ["model"],
            registry=self.registry,
        )
        self.replica_restarts = Gauge(
            "yun_replica_restarts",
            "Times the supervisor restarted the replica",
            ["model", "replica"],
            registry=self.registry,
        )

        # Cluster-wide views of each deployment (the same on every gateway that is scraped): the count its
        # record asks for, the replicas the registry has ready, the requests every gateway has queued.
        self.deployment_desired = Gauge(
            "yun_deployment_desired_replicas",
            "Replicas the deployment asks for (set by operators and the autoscaler)",
            ["deployment", "model"],
            registry=self.registry,
        )
        self.deployment_ready = Gauge(
            "yun_deployment_ready_replicas",
            "Replicas of the deployment ready to serve",
            ["deployment", "model"],
            registry=self.registry,
        )
        self.deployment_queued = Gauge(
            "yun_deployment_queued",
            "Requests waiting for a replica of the deployment, over every gateway (as published for the autoscaler)",
            ["deployment", "model"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
