"""What /openapi.json says about errors: every route declares the error statuses it can answer, each
with OpenAI's error body, so "only documented statuses" (tests/api/test_fuzz.py) means something.

FastAPI documents a 422 for every route with parameters; Yun answers invalid input with 400 (OpenAI's
status, see api/errors.py), so the generated schema trades the one for the other.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

__all__ = ["ErrorBody", "document_errors", "error_responses"]

_DESCRIPTIONS = {
    400: "Invalid request: a field out of range or malformed (`param` names it)",
    401: "Missing, unknown, revoked or expired API key",
    403: "The key may not do this (role, platform admin, allowed models)",
    404: "Not found, or not the caller's",
    413: "Request body over the configured limit",
    429: "Rate limited, or the balance does not cover the request",
    499: "The client closed the connection while the request waited",
    502: "The engine failed",
    503: "No healthy replica right now; retry",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router that can answer these error statuses."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


def document_errors(app: FastAPI) -> None:
    """Build /openapi.json with 400 where FastAPI would say 422 (Yun never answers 422)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": _DESCRIPTIONS[400],
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                        }
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components.setdefault("ErrorBody", body)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
