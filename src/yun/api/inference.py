"""The inference endpoints' route class: ordinary FastAPI routes with a lean handler.

POST /v1/chat/completions, /v1/completions and /v1/embeddings are nearly all of a gateway's traffic. They
are FastAPI routes like every other: they enter the same app, pass the same middleware (the body limit
and anything added with `app.add_middleware`), are routed by the same router (404, 405), raise into the
same error handlers (api/errors.py: OpenAI's error shape, never a traceback) and are documented in
/openapi.json from their signatures. Only the handler is leaner: FastAPI's own (dependency solver, lax
body parsing, per-request exit stacks) costs ~17 µs more per request than the work itself, measured
in-process. `InferenceRoute` does for an endpoint `(req: SomeRequest, call: CallDep)` exactly what
FastAPI would do for that signature, and no more: read the body, build the `Call` with the same
`inference_call` the `CallDep` dependency names, parse the body model (strictly: wrong types are
errors, not coercions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, get_type_hints

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from yun.api.deps import authenticate
from yun.api.services import Services
from yun.gateway import Gateway
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["Call", "CallDep", "InferenceRoute", "inference_call"]


class Call:
    """What an inference endpoint gets besides its body: the authenticated caller and the gateway."""

    __slots__ = ("_request", "gateway", "principal")

    def __init__(self, principal: Principal, gateway: Gateway, request: Request) -> None:
        self.principal = principal
        self.gateway = gateway
        self._request = request

    @property
    def services(self) -> Services:
        """The app's services, for the rare endpoint that needs more than the gateway (stored responses)."""
        services: Services = self._request.app.state.services
        return services

    async def client_gone(self) -> None:
        """Returns once the client has disconnected (the body has been read: nothing else can arrive)."""
        while (await self._request.receive())["type"] != "http.disconnect":
            pass


async def inference_call(request: Request) -> Call:
    principal = await authenticate(request)
    require_role(principal, INFERENCE_ROLES, "call models")
    services: Services = request.app.state.services
    return Call(principal, services.gateway, request)


CallDep = Annotated[Call, Depends(inference_call)]


class InferenceRoute(APIRoute):
    """A route for an endpoint `async def f(req: SomeRequest, call: CallDep) -> Response`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handle = self.get_route_handler()

        # What Starlette's request_response does, minus FastAPI's two per-request exit stacks (this
        # handler opens nothing to close) and the route-level exception wrapper: an exception goes to the
        # app's ExceptionMiddleware, whose handlers are the same ones (api/errors.py).
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[BaseModel, Call], Awaitable[Response]] = self.endpoint
        hints = get_type_hints(endpoint)
        models = [t for n, t in hints.items() if n != "return" and isinstance(t, type) and issubclass(t, BaseModel)]
        if len(models) != 1:
            raise TypeError(f"{endpoint.__qualname__} must take exactly one request model and a CallDep")
        model = models[0]

        async def handle(request: Request) -> Response:
            body = await _body(request.receive)
            call = await inference_call(request)
            return await endpoint(model.model_validate_json(body, strict=True), call)

        return handle


async def _body(receive: Receive) -> bytes:
    """The whole request body (Starlette's `request.body()` without its generator). Its size is already
    bounded: the app's BodyLimit refused it otherwise."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        parts.append(message.get("body", b""))
    return b"".join(parts)
