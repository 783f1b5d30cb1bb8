"""The request path: routing, relay, tool-call parsing, usage, metrics."""

from yun.gateway.metrics import Metrics
from yun.gateway.service import Gateway, UsageSink
from yun.gateway.usage import Usage

__all__ = ["Gateway", "Metrics", "Usage", "UsageSink"]
