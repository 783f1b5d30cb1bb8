"""The inference lane: POST /v1/chat/completions, /v1/completions and /v1/embeddings without the framework.

These three endpoints are nearly all of a gateway's traffic. Through FastAPI every request crossed six
middleware layers, the router and the dependency solver, which cost about a third of the gateway's CPU
per request (py-spy, bench/gateway_overhead.py). Here the app hands them straight to a handler that does
what those layers did for them, no more: bound the body (413), authenticate the key and check its role,
parse the JSON strictly, map every error to OpenAI's shape through the one error map, never a traceback.
Everything else (admin, organization, models, ops, the docs) stays on FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from yun.api.errors import error_body, error_response, validation_response
from yun.api.services import Services
from yun.errors import PayloadTooLarge, YunError
from yun.gateway import Gateway
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["Call", "Handler", "InferenceLane", "parse"]

log = logging.getLogger("yun.api")

M = TypeVar("M", bound=BaseModel)


class Call:
    """What a handler gets: the raw body, the authenticated caller, the gateway."""

    __slots__ = ("_receive", "body", "gateway", "principal")

    def __init__(self, body: bytes, principal: Principal, gateway: Gateway, receive: Receive) -> None:
        self.body = body
        self.principal = principal
        self.gateway = gateway
        self._receive = receive

    async def client_gone(self) -> None:
        """Returns once the client has disconnected (the body has been read: nothing else can arrive)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


Handler = Callable[[Call], Awaitable[Response]]


def parse(call: Call, model: type[M]) -> M:
    """Parse the JSON body strictly (wrong types are errors, not coercions); errors become 400s."""
    return model.model_validate_json(call.body, strict=True)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class InferenceLane:
    def __init__(self, services: Services, routes: dict[str, Handler], max_body_bytes: int) -> None:
        self.services = services
        self.routes = routes
        self.max_body_bytes = max_body_bytes

    def handler(self, scope: Scope) -> Handler | None:
        if scope["type"] != "http":
            return None
        return self.routes.get(scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send, handler: Handler) -> None:
        try:
            if scope["method"] != "POST":
                response: Response = JSONResponse(
                    error_body("Method Not Allowed", "invalid_request_error", None, "method_not_allowed"),
                    status_code=405,
                    headers={"Allow": "POST"},
                )
            else:
                body = await self._body(scope, receive)
                principal = await self.services.keys.verified(_bearer(scope))
                require_role(principal, INFERENCE_ROLES, "call models")
                response = await handler(Call(body, principal, self.services.gateway, receive))
        except YunError as exc:
            response = error_response(exc)
        except ValidationError as exc:
            response = validation_response(exc.errors())
        except ClientDisconnect:
            return  # gone while sending the body: nobody to answer, nothing was held
        except Exception:  # noqa: BLE001 - never a traceback to the client; the log has it (not the body)
            log.exception("unhandled error on POST %s", scope["path"])
            response = JSONResponse(
                error_body("The server had an error while processing your request.", "server_error"), status_code=500
            )
        try:
            await response(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass  # the client left mid-answer; the gateway has billed what the engine generated

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:  # chunked bodies have no length up front
                    raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)
