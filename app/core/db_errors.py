"""Database errors that mean something to a client, translated into domain errors."""

from __future__ import annotations

from app.core.errors import AppError, Busy, ServiceUnavailable, ValidationFailed

# SQLSTATEs: lock_not_available (lock_timeout), deadlock_detected,
# serialization_failure, query_canceled (statement_timeout), too_many_connections.
_BUSY_SQLSTATES = {"55P03", "40P01", "40001", "57014", "53300"}
# The server is starting, shutting down, or the connection broke.
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, raw (asyncpg) or wrapped by SQLAlchemy."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str):
            return code
        current = getattr(current, "orig", None) or current.__cause__
        seen += 1
    return None


def translate_db_error(exc: BaseException) -> AppError | None:
    """Lock timeouts, exhausted pools and connection limits become 503 busy (nothing was
    written); an unreachable database becomes 503 service_unavailable."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return Busy("No database connection became free in time; nothing was written.")
    state = sqlstate(exc)
    if state in _BUSY_SQLSTATES:
        return Busy()
    if state in _UNAVAILABLE_SQLSTATES or (state or "").startswith("08"):
        return ServiceUnavailable("The database is not available; retry shortly.")
    if (state or "").startswith("22"):
        # Data exceptions (a value out of range, an invalid character): the schemas
        # should have refused the input; if one slips through it is the client's input,
        # never a server error. The detail stays generic (no SQL in answers).
        detail = "A value in the request is out of range or not valid."
        return ValidationFailed(detail, errors=[{"field": "request", "message": detail}])
    if connection_lost(exc):
        return ServiceUnavailable("The database connection was lost; retry shortly.")
    if state is None and isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return ServiceUnavailable("The database is not available; retry shortly.")
    return None


def connection_lost(exc: BaseException) -> bool:
    """A connection the server (or the network) closed: asyncpg says so without a SQLSTATE
    ("connection is closed", "cannot call ... while the connection is being released"),
    and SQLAlchemy marks the errors it recognises as disconnects."""
    import asyncpg

    current: BaseException | None = exc
    for _ in range(6):
        if current is None:
            return False
        if getattr(current, "connection_invalidated", False):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True
        # The protocol of a connection broken mid-operation ("cannot switch to state ...").
        if isinstance(current, asyncpg.InternalClientError):
            return True
        if sqlstate(current) in ("08003", "08006", "57P01", "57P02", "57P03"):
            return True
        if isinstance(current, ConnectionError):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
