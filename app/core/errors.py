"""Domain errors and the one renderer that turns every error into RFC 9457 problem+json."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

logger = logging.getLogger("app.errors")

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    """Base of every error the API reports on purpose; subclasses fix status and code."""

    status: int = 400
    code: str = "bad_request"
    detail: str = "The request could not be processed."
    headers: dict[str, str] | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or type(self).detail
        self.errors = errors
        if headers is not None:
            self.headers = headers
        super().__init__(self.detail)


class ValidationFailed(AppError):
    status, code, detail = 422, "validation_error", "The request is not valid."

    def __init__(self, detail: str | None = None, *, field: str | None = None, **kw: Any) -> None:
        errors = kw.pop("errors", None)
        if errors is None:
            # A validation problem always names its fields (the schema requires `errors`).
            errors = [{"field": field or "body", "message": detail or self.detail}]
        super().__init__(detail, errors=errors, **kw)


class NotAuthenticated(AppError):
    status, code, detail = 401, "not_authenticated", "Authentication credentials were not provided."
    headers = {"WWW-Authenticate": "Bearer"}


class InvalidToken(AppError):
    status, code, detail = 401, "invalid_token", "The token is invalid or expired."
    headers = {"WWW-Authenticate": "Bearer"}


class InvalidCredentials(AppError):
    """A failed login: not `invalid_token`, so a client's refresh-and-retry never fires on it."""

    status, code, detail = (
        401,
        "invalid_credentials",
        "No active account found with the given credentials.",
    )
    headers = {"WWW-Authenticate": "Bearer"}


class PermissionDenied(AppError):
    status, code, detail = 403, "permission_denied", "You do not have permission to do this."


class NotFound(AppError):
    status, code, detail = 404, "not_found", "Not found."


class Conflict(AppError):
    status, code, detail = 409, "conflict", "The request conflicts with the current state."


class UsernameTaken(Conflict):
    code, detail = "username_taken", "A user with that username already exists."


class EmailTaken(Conflict):
    code, detail = "email_taken", "A user with that email already exists."


class TicketTypeNameTaken(Conflict):
    code, detail = "ticket_type_name_taken", "A ticket type with that name already exists."


class WrongPassword(AppError):
    status, code, detail = 422, "wrong_password", "The old password is not correct."


class InvalidResetLink(AppError):
    status, code, detail = 422, "invalid_reset_link", "The reset link is invalid or has expired."


class SoldOut(Conflict):
    code, detail = "sold_out", "Not enough tickets left."


class CapacityExceeded(Conflict):
    code, detail = "capacity_exceeded", "The event's total capacity would be exceeded."


class TicketTypeInactive(Conflict):
    code, detail = "ticket_type_inactive", "This ticket type is not on sale."


class EventNotBookable(Conflict):
    code, detail = "event_not_bookable", "The event is cancelled, has started or is over."


class AlreadyCancelled(Conflict):
    code, detail = "already_cancelled", "The booking is already cancelled."


class EventHasBookings(Conflict):
    code, detail = "event_has_bookings", "The event has confirmed bookings."


class CapacityBelowSold(Conflict):
    code, detail = "capacity_below_sold", "The capacity cannot be lower than what is sold."


class IdempotencyKeyReused(AppError):
    status, code = 422, "idempotency_key_reused"
    detail = "This Idempotency-Key was used with a different request body."


class IdempotencyKeyInUse(Conflict):
    code, detail = "idempotency_key_in_use", "A request with this Idempotency-Key is in progress."


class HoldExists(Conflict):
    code, detail = "hold_exists", "You already have an active hold for this event."


class HoldExpired(Conflict):
    code, detail = "hold_expired", "The hold has expired; its tickets are back on sale."


class HoldNotActive(Conflict):
    code, detail = "hold_not_active", "The hold was already checked out or released."


class TicketsAvailable(Conflict):
    code, detail = "tickets_available", "Enough tickets are on sale: book them instead."


class AlreadyWaiting(Conflict):
    code, detail = "already_waiting", "You are already on the waiting list for this ticket type."


class PayloadTooLarge(AppError):
    status, code, detail = 413, "payload_too_large", "The request body is too large."


class RateLimited(AppError):
    status, code, detail = 429, "rate_limited", "Too many requests; retry later."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class Busy(AppError):
    status, code, detail = 503, "busy", "The service is busy; nothing was written. Retry shortly."
    headers = {"Retry-After": "1"}


class ServiceUnavailable(AppError):
    status, code, detail = 503, "service_unavailable", "A dependency is not available."
    headers = {"Retry-After": "2"}


STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        # Pydantic reports `body.field.<type tag>` for unions and the JSON decoder
        # reports `body.<offset>`: keep the path a client can map onto its form.
        if err.get("type") == "json_invalid":
            loc = ["body"]
        message = err.get("msg", "Invalid value.")
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        out.append({"field": _field_path(loc), "message": message})
    return out
