"""The exception handlers that answer every error as problem+json.

Kept apart from ``app.core.errors`` (the error classes) so that the classes import nothing
of the app: metrics and the database-error translation both depend on them, and these
handlers depend on all three.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.db_errors import translate_db_error
from app.core.errors import STATUS_CODES, AppError, problem_response, validation_errors
from app.core.metrics import record_conflict

logger = logging.getLogger("app.errors")


async def _app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    record_conflict(exc.code, exc.status)
    return problem_response(
        exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers
    )


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3]) or "Invalid request."
    return problem_response(422, "validation_error", detail, errors=errors)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 400:
        # The framework's "error parsing the body" (not UTF-8, say): the contract answers
        # every undecodable body like invalid JSON, 422.
        message = "The body is not valid JSON in UTF-8."
        errors = [{"field": "body", "message": message}]
        return problem_response(422, "validation_error", f"body: {message}", errors=errors)
    code = STATUS_CODES.get(status, "error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = "No resource at this path."
    if status == 405 and detail == "Method Not Allowed":
        detail = f"Method {request.method} is not allowed here."
    return problem_response(status, code, detail, headers=getattr(exc, "headers", None))


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    translated = translate_db_error(exc)
    if translated is not None:
        logger.warning(
            "database error answered %s %s: %s: %s",
            translated.status,
            translated.code,
            type(exc).__name__,
            exc,
        )
        return await _app_error_handler(request, translated)
    request_id = request.headers.get("x-request-id") or getattr(request.state, "request_id", "-")
    logger.exception("unhandled error (request id %s)", request_id)
    return problem_response(
        500, "internal_error", f"An unexpected error occurred. Request id: {request_id}."
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    # Database errors are handled inside the app (not re-raised to the server) so that a
    # refused connection or lock timeout is one clean 503; anything else is a 500.
    for db_error in (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        app.add_exception_handler(db_error, _unhandled_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
