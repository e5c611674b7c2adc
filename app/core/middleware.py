"""ASGI middleware: trailing-slash-insensitive routing, body size limit, trusted proxies."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response


class StripTrailingSlashMiddleware:
    """Serve every path with and without its trailing slash, without a redirect.

    Routes are declared without the slash; a request for `/api/events/` is routed
    as `/api/events` (a 307 would break POST clients and CORS preflights). The
    path as sent is kept in the scope for links. Paths under ``keep`` (an app mounted
    with routes of its own, such as the staff console) are passed on as sent.
    """

    def __init__(self, app: ASGIApp, keep: tuple[str, ...] = ()) -> None:
        self.app = app
        self.keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/") and not path.startswith(self.keep):
                # In place, not a copy: the router then records the matched route in the
                # scope every outer middleware sees (metrics label requests by its template).
                scope["original_path"] = path
                scope["path"] = path.rstrip("/") or "/"
                raw = scope.get("raw_path")
                if raw:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over MAX_BODY_BYTES with 413 `payload_too_large`.

    A declared Content-Length over the limit is answered before anything is read; a
    body without one (chunked) is counted as it arrives and refused at the first
    chunk past the limit, so no request makes the service buffer more than that.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem_response(413, "payload_too_large", self._detail())
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the error
                    # handlers render it as problem+json with the code of 413.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)


class TrustedProxyMiddleware:
    """Take the client address from X-Forwarded-For, but only when the peer is trusted.

    The header is read right to left, skipping the trusted proxies' own entries: the
    first address that is not a trusted proxy is the client (entries further left
    were written by the client itself and prove nothing). From any other peer the
    header is ignored, so nobody picks their own rate-limit key.
    """

    def __init__(self, app: ASGIApp, networks: Sequence[IPv4Network | IPv6Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def _client_from(self, forwarded: str) -> str | None:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ip_address(hop)
            except ValueError:
                return None  # garbage in the chain: keep the peer
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self._trusted(client[0]):
            forwarded = b",".join(
                value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"
            )
            address = self._client_from(forwarded.decode("latin-1")) if forwarded else None
            if address is not None:
                scope = dict(scope)
                scope["client"] = (address, 0)
        await self.app(scope, receive, send)
