"""The staff console: SQLAdmin mounted at /admin over the service's own database and users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqladmin import Admin
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse

from app.admin.security import StaffAuthentication, csrf_token, middlewares
from app.admin.views import VIEWS
from app.core.config import Settings

TEMPLATES_DIR = Path(__file__).parent / "templates"
PREFIX = "/admin"


class _AppSessions:
    """The application's sessionmaker, looked up when used.

    The engine is made in the lifespan, after the console is mounted; SQLAdmin only
    needs something that makes AsyncSessions.
    """

    class_ = AsyncSession

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def configure(self, **options: Any) -> None:
        """SQLAdmin's autoflush/autocommit options: the application's sessions have them."""

    def __call__(self, **options: Any) -> AsyncSession:
        return self._app.state.sessionmaker(**options)


def install_console(app: FastAPI, settings: Settings) -> Admin:
    authentication = StaffAuthentication(app, settings)
    console = Admin(
        app,
        session_maker=_AppSessions(app),  # type: ignore[arg-type]
        base_url=PREFIX,
        title="Event Booking console",
        templates_dir=str(TEMPLATES_DIR),
        middlewares=middlewares(),
        authentication_backend=authentication,
    )
    console.templates.env.globals["csrf_token"] = csrf_token
    authentication.console = console
    app.state.console = console
    for view in VIEWS:
        console.add_view(view)

    @app.get(PREFIX, include_in_schema=False)
    async def console_root(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=302)

    return console
