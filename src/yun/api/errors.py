"""The one place domain errors become error bodies: OpenAI's {"error": {"message", "type", "param", "code"}}
everywhere, except on the routes of another API whose clients expect that API's own error shape.

Every handler first states the error as a `Problem` (status, OpenAI type, message, param, code); the
request's path then picks the shape it is written in (`shape_for`). The shape is chosen by route, in this
one table, so no handler, middleware or stream writer decides it on its own: the Anthropic Messages
routes (/v1/messages...) answer {"type": "error", "error": {"type", "message"}} (api/anthropic/errors.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from yun.api.anthropic.errors import anthropic_error
from yun.api.openapi import document_errors
from yun.errors import (
    AuthenticationFailed,
    ClientDisconnected,
    ContextLengthExceeded,
    DatabaseUnavailable,
    EngineFailure,
    EngineUnavailable,
    InvalidRequest,
    ModelIntegrityError,
    ModelSourceMissing,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    StorageUnavailable,
    YunError,
)

__all__ = [
    "ERROR_RESPONSES",
    "ErrorResponse",
    "ErrorShape",
    "Problem",
    "error_body",
    "error_response",
    "install_error_handlers",
    "problem_of",
    "shape_for",
    "validation_message",
]

log = logging.getLogger("yun.api")

# Most specific first: the first isinstance match decides.
_STATUS: list[tuple[type[YunError], int, str]] = [
    (PayloadTooLarge, 413, "invalid_request_error"),
    (ContextLengthExceeded, 400, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
    (AuthenticationFailed, 401, "invalid_request_error"),
    (PermissionDenied, 403, "invalid_request_error"),
    (NotFound, 404, "invalid_request_error"),
    (PaymentRequired, 402, "insufficient_quota"),
    (QuotaExceeded, 429, "insufficient_quota"),
    (RateLimited, 429, "rate_limit_exceeded"),
    (ModelSourceMissing, 400, "invalid_request_error"),
    (EngineUnavailable, 503, "server_error"),
    (DatabaseUnavailable, 503, "server_error"),
    (StorageUnavailable, 503, "server_error"),
    (ClientDisconnected, 499, "invalid_request_error"),  # nginx's "client closed request"; nobody reads it
    (EngineFailure, 502, "server_error"),
    (ModelIntegrityError, 500, "server_error"),
]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body, the only shape an error ever has."""

    error: ErrorDetail


_DOCUMENTED = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "The key may not do this",
    404: "Unknown model or resource",
    413: "Request body over the limit",
    429: "Rate limited or out of credit",
    500: "Server error",
    502: "The engine failed",
    503: "No healthy replica",
}
# For `responses=` on routes: every error status, with its body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _DOCUMENTED.items()
}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True, slots=True)
class Problem:
    """An error as the API reports it, before it is written in a route's shape."""

    status: int
    type: str
    """OpenAI's error type (`invalid_request_error`, `insufficient_quota`, `server_error`, ...)."""
    message: str
    param: str | None = None
    code: str | None = None
    headers: Mapping[str, str] | None = None


ErrorShape = Callable[[Problem], tuple[int, dict[str, Any]]]
"""Writes a problem as one API's error: (HTTP status, body)."""


def openai_error(problem: Problem) -> tuple[int, dict[str, Any]]:
    return problem.status, error_body(problem.message, problem.type, problem.param, problem.code)


# Path prefixes whose clients speak another API, with that API's error shape; every other path is OpenAI's.
_SHAPES: tuple[tuple[str, ErrorShape], ...] = (("/v1/messages", anthropic_error),)


def shape_for(path: str) -> ErrorShape:
    for prefix, shape in _SHAPES:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return shape
    return openai_error


def problem_of(exc: YunError) -> Problem:
    status, type_ = 500, "server_error"
    for cls, s, t in _STATUS:
        if isinstance(exc, cls):
            status, type_ = s, t
            break
    headers: dict[str, str] | None = {"Retry-After": "1"} if status == 503 else None
    if status == 413:
        headers = {"Connection": "close"}  # the rest of the body was never read
    if isinstance(exc, RateLimited):
        headers = dict(exc.headers)
        if math.isfinite(exc.retry_after_s):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return Problem(status, type_, exc.message, exc.param, exc.code, headers)


def _respond(path: str, problem: Problem) -> JSONResponse:
    status, body = shape_for(path)(problem)
    return JSONResponse(body, status_code=status, headers=problem.headers)


def error_response(exc: YunError, path: str = "/") -> JSONResponse:
    return _respond(path, problem_of(exc))


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """Turn pydantic's error list into one readable sentence and OpenAI's dotted `param`."""
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]  # where the value was is clear from the request; `param` names the field
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request. (The body must be valid JSON.)", None
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    where = f"'{param}': " if param else ""
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"Invalid value for {where}{msg}{more}", param


def _validation_problem(errors: list[Any]) -> Problem:
    message, param = validation_message(errors)
    return Problem(400, "invalid_request_error", message, param, "invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    async def on_yun(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, YunError)
        return _respond(request.scope["path"], problem_of(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        return _respond(request.scope["path"], _validation_problem(list(errors)))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        problem = Problem(
            exc.status_code, "invalid_request_error", str(exc.detail), None, code, getattr(exc, "headers", None)
        )
        return _respond(request.scope["path"], problem)

    async def on_disconnect(_: Request, exc: Exception) -> Response:
        # The client left while sending its body: nobody reads this, and nothing was done or held.
        return Response(status_code=499)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a traceback to the client; the log has it (without the body: prompts stay private).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem(500, "server_error", "The server had an error while processing your request.")
        return _respond(request.scope["path"], problem)

    document_errors(app)
    app.add_exception_handler(YunError, on_yun)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
