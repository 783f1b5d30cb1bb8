"""Anthropic's error shape, for the Messages routes: {"type": "error", "error": {"type", "message"}}.

api/errors.py states every error once, in OpenAI's terms (a `Problem`), and picks this shape for the
/v1/messages routes. The statuses are Anthropic's where its API has its own: an organization out of
credit is 402 `billing_error` (OpenAI says 429 `insufficient_quota`), no replica free to take the
request is 529 `overloaded_error` (OpenAI: 503). The anthropic SDK retries 429 and 5xx (529 included)
and raises its own class per status.

Imported by api/errors.py, so it imports nothing of the API's own (no cycle); `problem` is duck-typed.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["anthropic_error", "anthropic_error_body", "anthropic_type"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _Problem(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def param(self) -> str | None: ...


def anthropic_type(status: int, openai_type: str) -> tuple[int, str]:
    """Anthropic's (status, error type) for an error Yun states with an OpenAI status and type."""
    if openai_type == "insufficient_quota":
        status = 402
    elif status == 503:
        status = 529
    type_ = _TYPES.get(status)
    if type_ is None:
        type_ = "api_error" if status >= 500 else "invalid_request_error"
    return status, type_


def anthropic_error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def anthropic_error(problem: _Problem) -> tuple[int, dict[str, Any]]:
    """Anthropic's error has no `param`: the field is named at the start of the message, as Anthropic does."""
    status, type_ = anthropic_type(problem.status, problem.type)
    message, param = problem.message, problem.param
    if param and param not in message:
        message = f"{param}: {message}"
    return status, anthropic_error_body(type_, message)
