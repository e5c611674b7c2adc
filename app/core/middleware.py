"""ASGI middleware: trailing-slash-insensitive routing."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


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
                scope = dict(scope)
                scope["original_path"] = path
                scope["path"] = path.rstrip("/") or "/"
                raw = scope.get("raw_path")
                if raw:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
