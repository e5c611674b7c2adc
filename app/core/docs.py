"""Swagger UI and ReDoc served with their own assets (from fastapi-offline): no CDN needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from app.core.security import same_origin_policy

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_PREFIX = "/api/docs"
ASSETS_PATH = f"{DOCS_PREFIX}/assets"

SWAGGER_UI_PARAMETERS = {
    # The token pasted into Authorize is not written to localStorage, where any script
    # of the origin could read it long after: a reload asks for it again.
    "persistAuthorization": False,
    "displayRequestDuration": True,
    "filter": True,
    "tryItOutEnabled": False,
}


# The pages may only load what this service serves: the ReDoc bundle links a logo on
# a CDN, which the browser then does not even request.
CONTENT_SECURITY_POLICY = same_origin_policy("worker-src 'self' blob:")


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    assert app.openapi_url is not None

    def serve(path: str, name: str, render: Callable[[str, str], HTMLResponse]) -> None:
        """GET ``path``: the page ``render(openapi_url, assets_url)`` makes, with URLs below
        the root path the service is mounted at, under the Content-Security-Policy."""

        async def page(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            html = render(f"{root}{app.openapi_url}", f"{root}{ASSETS_PATH}")
            html.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            return html

        app.add_api_route(path, page, methods=["GET"], name=name, include_in_schema=False)

    serve(
        f"{DOCS_PREFIX}/swagger",
        "swagger_ui",
        lambda openapi_url, assets: get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        ),
    )
    serve(
        f"{DOCS_PREFIX}/redoc",
        "redoc",
        lambda openapi_url, assets: get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        ),
    )
