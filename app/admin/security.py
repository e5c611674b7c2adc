"""Sign-in, session and browser protections of the staff console.

- Only active staff accounts sign in, with the service's own users, password hashes
  and login rate limits (the API's RATE_LIMIT_LOGIN per account name and
  RATE_LIMIT_LOGIN_IP per address).
- The session is a signed cookie of its own (`admin_session`, path /admin,
  HttpOnly, SameSite=Lax, Secure with ADMIN_COOKIE_SECURE) under a key derived from
  SECRET_KEY, so it is worth nothing as an API token and vice versa.
- Every POST to the console carries the session's CSRF token; GET never changes data.
- Every console response forbids framing and loading anything from another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from sqladmin.authentication import AuthenticationBackend
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.admin import service
from app.auth.models import User
from app.auth.passwords import password_stamp
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.errors import InvalidCredentials, RateLimited
from app.core.ratelimit import client_ip, limiter_for
from app.core.security import same_origin_policy

SESSION_COOKIE = "admin_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = b"x-csrf-token"
_STAFF_STATE = "staff_member"

# The console's pages load only what this service serves (sqladmin's own statics).
CONTENT_SECURITY_POLICY = same_origin_policy("form-action 'self'", "base-uri 'self'")
_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def session_secret(settings: Settings) -> str:
    """The console's cookie key: derived from SECRET_KEY, never equal to the JWT key."""
    return hmac.new(
        settings.signing_key.encode(), b"event-booking-api/admin-session", hashlib.sha256
    ).hexdigest()


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); forms post it back as `csrf_token`."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def signed_in_staff(request: Request) -> User:
    """The staff member the console's authentication found for this request."""
    return getattr(request.state, _STAFF_STATE)


class StaffAuthentication(AuthenticationBackend):
    """SQLAdmin's sign-in over the service's users: staff only, the API's rate limits."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        # Not super().__init__: the session key is derived when the console first
        # serves a request, not when the application is made.
        self.middlewares = [
            Middleware(ConsoleSessionMiddleware, settings=settings),
            # Inside the session middleware: the CSRF check reads the session.
            Middleware(CsrfMiddleware),
        ]
        self._app = app
        self.console: Any = None  # the Admin, set once it is made (its templates)

    def _uow(self) -> UnitOfWork:
        return UnitOfWork(self._app.state.sessionmaker)

    async def login(self, request: Request) -> Response | bool:
        form = await request.form()
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        account, address = username.lower(), client_ip(request)
        limiter = limiter_for(self._app.state)
        try:
            # The API's login limits, counted the same way (the address before the hash).
            await limiter.reserve("login_ip", address)
            try:
                await limiter.hit("login", account)
            except RateLimited:
                await limiter.refund("login_ip", address)
                raise
        except RateLimited as exc:
            return await _login_page(
                self.console,
                request,
                "Too many sign-in attempts; try again later.",
                429,
                exc.headers,
            )
        try:
            user = await service.sign_in(self._uow(), username, password)
        except InvalidCredentials:
            return False  # the failure stays counted against the address
        except BaseException:
            await limiter.refund("login_ip", address)
            raise
        await limiter.refund("login_ip", address)
        await limiter.clear("login", account)
        request.session.clear()  # a fresh session (and CSRF token) for the signed-in user
        request.session.update({"user_id": user.id, "pwv": password_stamp(user)})
        return True

    async def logout(self, request: Request) -> Response | bool:
        request.session.clear()
        return False  # back to the sign-in page

    async def authenticate(self, request: Request) -> Response | bool:
        user_id, stamp = request.session.get("user_id"), request.session.get("pwv")
        if not isinstance(user_id, int) or not isinstance(stamp, int):
            return False
        user = await service.staff_member(self._uow(), user_id, stamp)
        if user is None:
            request.session.clear()
            return False
        setattr(request.state, _STAFF_STATE, user)
        return True


async def _login_page(
    console: Any, request: Request, error: str, status: int, headers: dict[str, str] | None
) -> Response:
    response = await console.templates.TemplateResponse(
        request, "sqladmin/login.html", {"error": error}, status_code=status
    )
    response.headers.update(headers or {})
    return response


class ConsoleSessionMiddleware(SessionMiddleware):
    """The console's signed session cookie: HttpOnly, SameSite=Lax, path /admin."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(
            app,
            secret_key=session_secret(settings),
            session_cookie=SESSION_COOKIE,
            max_age=settings.admin_session_minutes * 60,
            path="/admin",
            same_site="lax",
            https_only=settings.admin_cookie_secure,
        )


class CsrfMiddleware:
    """Refuse (403) a POST, PUT, PATCH or DELETE without the session's CSRF token.

    The token comes in the `X-CSRF-Token` header or the `csrf_token` field of a
    url-encoded form. The body is read here and replayed to the console unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        expected = scope.get("session", {}).get(CSRF_FIELD)
        sent = dict(scope["headers"]).get(CSRF_HEADER, b"").decode("latin-1")
        messages: list[Message] = []
        if not sent:
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            if content_type.split(b";")[0].strip() == b"application/x-www-form-urlencoded":
                body = b""
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break
                    body += message.get("body", b"")
                    if not message.get("more_body", False):
                        break
                fields = parse_qs(body.decode("latin-1"))
                sent = (fields.get(CSRF_FIELD) or [""])[0]
        if not expected or not sent or not hmac.compare_digest(expected, sent):
            response = HTMLResponse(
                "<h1>403 Forbidden</h1><p>The form has expired or did not come from this "
                "console: reload the page and try again.</p>",
                status_code=403,
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


class ConsoleHeadersMiddleware:
    """X-Frame-Options DENY, a same-origin Content-Security-Policy and no caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if "/statics/" not in scope["path"]:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middlewares() -> list[Any]:
    return [Middleware(ConsoleHeadersMiddleware)]
