"""The read replica of the catalogue (``DATABASE_READ_URL``), falling back to the primary.

Anonymous reads of the catalogue (the events list, an event, its ticket types) go to
the replica's pool; everything else (bookings, holds, organizer views, any request
with a token) reads the primary, where the locks are and where a client sees its own
writes. When the replica does not answer, the read pool's new connections are opened
on the primary instead: each worker logs the change of state once (down, then back
up) and counts it in /metrics. While the replica is down it is tried again at most
every ``RETRY_SECONDS``, when a pooled connection is checked out; connections opened
on the primary meanwhile are then replaced by replica connections once it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import UnitOfWork, connect_args, create_engine, request_uow

logger = logging.getLogger("app.db.replica")

RETRY_SECONDS = 5.0
CONNECT_TIMEOUT = 2.0
_URL_KEYS = {"host", "port", "user", "password", "database", "dsn"}

REPLICA_STATE_CHANGES = Counter(
    "db_read_replica_state_changes_total",
    "Times this process found the read replica down, or back up",
    ["state"],
)
REPLICA_FALLBACK_CONNECTIONS = Counter(
    "db_read_replica_fallback_connections_total",
    "Connections of the read pool opened on the primary because the replica did not answer",
)


class OnPrimary:
    """Marks a read-pool connection that was opened on the primary."""


class ReadReplica:
    """Where the read pool's connections go: the replica, or the primary while it is down."""

    def __init__(self, primary_url: str) -> None:
        _, self._primary = PGDialect_asyncpg().create_connect_args(make_url(primary_url))
        self.down_since: float | None = None
        self._last_attempt = 0.0
        self._classes: dict[type, type] = {}

    @property
    def up(self) -> bool:
        return self.down_since is None

    def should_try_replica(self) -> bool:
        return self.up or time.monotonic() - self._last_attempt >= RETRY_SECONDS

    async def connect(self, **options: Any) -> asyncpg.Connection:
        """The read pool's connector (SQLAlchemy's ``async_creator_fn``): the replica if it
        answers, else the primary with the same options."""
        if self.should_try_replica():
            self._last_attempt = time.monotonic()
            try:
                conn = await asyncpg.connect(**{**options, "timeout": CONNECT_TIMEOUT})
                try:
                    await conn.execute("SELECT 1")  # one message: safe through a pooler
                except BaseException:
                    conn.terminate()
                    raise
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return conn
        REPLICA_FALLBACK_CONNECTIONS.inc()
        shared = {k: v for k, v in options.items() if k not in _URL_KEYS}
        base = shared.get("connection_class", asyncpg.Connection)
        shared["connection_class"] = self._on_primary_class(base)
        return await asyncpg.connect(**{**shared, **self._primary})

    def _on_primary_class(self, base: type) -> type:
        cls = self._classes.get(base)
        if cls is None:
            cls = self._classes[base] = type(f"OnPrimary{base.__name__}", (base, OnPrimary), {})
        return cls

    def _mark_down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            REPLICA_STATE_CHANGES.labels(state="down").inc()
            logger.warning(
                "read replica does not answer (%s): the catalogue reads the primary", exc
            )

    def _mark_up(self) -> None:
        if self.down_since is not None:
            down_for = time.monotonic() - self.down_since
            self.down_since = None
            REPLICA_STATE_CHANGES.labels(state="up").inc()
            logger.warning(
                "read replica answers again after %.1f s: catalogue reads go back to it", down_for
            )

    def on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        """Replace a pooled connection that is closed, or no longer on the right server."""
        conn = dbapi_connection.driver_connection
        on_primary = OnPrimary in type(conn).__mro__
        if conn.is_closed():
            raise DisconnectionError("closed")
        if on_primary and self.should_try_replica():
            raise DisconnectionError("the replica may answer again")
        if not on_primary and not self.up:
            raise DisconnectionError("the replica is down")


def create_read_engine(settings: Settings, primary_url: str) -> AsyncEngine | None:
    """The read pool on DATABASE_READ_URL, or None when it is unset."""
    if not settings.database_read_url:
        return None
    replica = ReadReplica(primary_url)
    options = {**connect_args(settings), "async_creator_fn": replica.connect}
    engine = create_engine(settings, settings.database_read_url, connect_args=options)
    event.listen(engine.sync_engine.pool, "checkout", replica.on_checkout)
    return engine


def catalogue_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """The replica's sessions for an anonymous request (no token), else the primary's."""
    read = getattr(request.app.state, "read_sessionmaker", None)
    if read is not None and "authorization" not in request.headers:
        return read
    return request.app.state.sessionmaker


async def get_catalogue_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    async with request_uow(catalogue_sessionmaker(request)) as uow:
        yield uow


CatalogueUoW = Annotated[UnitOfWork, Depends(get_catalogue_uow)]
