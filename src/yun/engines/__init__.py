"""Engines: the `Engine` protocol and its adapters."""

from yun.engines.base import JSON, Engine
from yun.engines.openai_http import OpenAIHTTPEngine
from yun.engines.urls import redact_url

__all__ = ["JSON", "Engine", "OpenAIHTTPEngine", "redact_url"]
