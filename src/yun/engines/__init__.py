"""Engines: the `Engine` protocol and its adapters."""

from yun.engines.base import JSON, Engine
from yun.engines.openai_http import OpenAIHTTPEngine

__all__ = ["JSON", "Engine", "OpenAIHTTPEngine"]
