"""Parameters only some engines take: refused with a 400 naming them where the engine would not."""

from __future__ import annotations

from yun.errors import UnsupportedParameter
from yun.gateway import Gateway
from yun.tenancy import Principal

__all__ = ["require_llamacpp"]


def require_llamacpp(gateway: Gateway, principal: Principal, model: str, kind: str, params: list[str]) -> None:
    """llama.cpp's extensions (`top_k`, `grammar`, `echo` done by Yun, ...) go only to deployments whose
    engines speak llama.cpp; an external upstream or vLLM may ignore them silently, so they are refused."""
    if not params:
        return
    if not gateway.deployment(model, kind, principal).llamacpp:
        raise UnsupportedParameter(
            f"{params[0]!r} is a llama.cpp extension, and the engine serving '{model}' does not take it; "
            f"remove '{params[0]}'",
            param=params[0],
        )
