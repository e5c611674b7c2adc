"""Database errors that mean something to a client, translated into domain errors."""

from __future__ import annotations

from app.core.errors import AppError, Busy

# SQLSTATEs: lock_not_available (lock_timeout), deadlock_detected,
# serialization_failure, query_canceled (statement_timeout), too_many_connections.
_BUSY_SQLSTATES = {"55P03", "40P01", "40001", "57014", "53300"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a DBAPI error wrapped by SQLAlchemy, if there is one."""
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
    """Lock timeouts and the like become 503 busy (nothing was written)."""
    from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return Busy("No database connection became free in time; nothing was written.")
    if isinstance(exc, DBAPIError) and sqlstate(exc) in _BUSY_SQLSTATES:
        return Busy()
    return None
