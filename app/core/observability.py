"""Request ids, request metrics and /metrics: pure ASGI, a few microseconds per request."""

from __future__ import annotations

import random
import re
import time

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.logging import log_access, request_id_var
from app.core.openapi import route_contexts

REQUEST_ID_HEADER = b"x-request-id"
# On every response, errors included: browsers must not guess a type from the content.
NOSNIFF = (b"x-content-type-options", b"nosniff")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane (≤ 128 of [A-Za-z0-9._-]), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Unique, not secret: the Mersenne Twister (seeded per process from os.urandom) is
    # ~30x cheaper than uuid4 here, and a request id protects nothing.
    return f"{random.getrandbits(128):032x}"


class ObservabilityMiddleware:
    """Sets the request id (header, `request.state.request_id`, log lines), counts requests
    and writes the access log line.

    It wraps the whole application, error handlers included, so that 500 responses
    carry the id too. Metrics are labelled with the route template, never the raw
    path (unbounded label values would exhaust Prometheus).
    """

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self._fastapi_app = fastapi_app
        self._routes: RouteTable | None = None  # built on first use: routes are final then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, NOSNIFF]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            metrics.record_request(scope["method"], self._template(scope), status, elapsed)
            log_access(scope, status, request_id)
            request_id_var.reset(token)

    def _template(self, scope: Scope) -> str:
        table = self._routes
        if table is None:
            table = self._routes = RouteTable(self._fastapi_app)
        return table.template(scope)


class RouteTable:
    """Route templates for metric labels, taken from the route the router matched.

    The router records that route in the scope; routes of included routers are known by
    their full template here, routes of a mounted app by the mount's prefix and their own.
    """

    def __init__(self, app: FastAPI) -> None:
        self._by_route: dict[int, str] = {}
        for context in route_contexts(app):
            template = getattr(context, "path_format", None)
            if template is not None:
                self._by_route[id(getattr(context, "original_route", context))] = template

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return metrics.UNMATCHED_ROUTE
        template = self._by_route.get(id(route))
        if template is not None:
            return template
        own = getattr(route, "path_format", None)
        if own is None:
            return metrics.UNMATCHED_ROUTE
        return f"{scope.get('root_path', '')}{own}"


def install_observability(app: FastAPI) -> None:
    """Wrap the whole middleware stack (outside Starlette's error middleware) and add /metrics."""
    app.router.routes.append(
        Route(
            "/metrics",
            metrics.metrics_endpoint(
                metrics.app_registry(app.state), token=app.state.settings.metrics_token
            ),
            methods=["GET"],
            include_in_schema=False,
        )
    )
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return ObservabilityMiddleware(build_stack(), app)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
