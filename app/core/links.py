"""Absolute links the API hands out (pagination, `Location`): on PUBLIC_BASE_URL when it is set,
else on the scheme and host the request came to."""

from __future__ import annotations

from fastapi import Request, Response


def public_url(request: Request, path: str) -> str:
    """`path` (starting with `/`) as an absolute URL a browser on another origin can follow."""
    base = request.app.state.settings.public_base_url
    if not base:
        base = f"{request.url.scheme}://{request.url.netloc}"
    return base.rstrip("/") + path


def created(request: Request, response: Response, path: str) -> None:
    """Point a 201's `Location` at the resource it created (the schema declares it on every 201)."""
    response.headers["Location"] = public_url(request, path)
