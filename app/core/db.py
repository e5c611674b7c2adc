"""The async engine and the unit of work: one request that changes data, one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import TracebackType
from typing import Annotated, Any, ClassVar, NamedTuple

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import BigInteger, DateTime, Identity, MetaData, bindparam, func
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.util import greenlet_spawn

from app.core.config import Settings
from app.core.db_errors import connection_lost
from app.core.errors import Busy, ServiceUnavailable
from app.core.openapi import raises

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every point in time is stored with its time zone (timestamptz).
    type_annotation_map = {datetime: DateTime(timezone=True)}


# The columns every table declares the same way, as types for ``Mapped[...]``; a model
# adds to one with its own ``mapped_column(...)`` (an index, another default).
BigId = Annotated[int, mapped_column(BigInteger, Identity(always=False), primary_key=True)]
CreatedAt = Annotated[datetime, mapped_column(server_default=func.now())]
UpdatedAt = Annotated[datetime, mapped_column(server_default=func.now(), onupdate=func.now())]


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server (started on first use) when it is unset."""
    if settings.database_url:
        return settings.database_url
    from app.core.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


APPLICATION_NAME = "event-booking-api"


def session_settings(settings: Settings) -> dict[str, str]:
    """The server settings every transaction runs with.

    lock_timeout bounds every wait for a row lock (bookings, cancels, event changes):
    past it the statement fails and the request is answered 503 busy. statement_timeout
    bounds every statement the same way (STATEMENT_TIMEOUT_MS).
    """
    return {
        "lock_timeout": str(settings.lock_timeout_ms),
        "statement_timeout": str(settings.statement_timeout_ms),
    }


def _client_timeouts(settings: Settings) -> dict[str, float]:
    # The server enforces the timeouts above; a server that does not answer at all
    # (frozen, network gone) is bounded by the client: connecting within the pool
    # timeout, and each command a second past the server's own statement_timeout.
    return {
        "timeout": settings.db_pool_timeout,
        "command_timeout": settings.statement_timeout_ms / 1000 + 1,
    }


class PoolerConnection(asyncpg.Connection):
    """An asyncpg connection through a pooler in transaction mode (PgBouncer).

    The pooler hands each transaction to any server connection, so nothing may outlive
    a transaction: no named prepared statements (the caches are off), and the session
    settings go with every ``BEGIN`` as ``SET LOCAL`` in the same round trip. Outside a
    transaction a statement's parse and its execution could reach two different server
    connections, so ``UnitOfWork.driver`` runs its whole block in one transaction
    (``joined``: the block's own ``conn.transaction()`` is then part of it).
    """

    begin_suffix: ClassVar[str] = ""
    joined = False

    async def execute(self, query: str, *args: Any, **options: Any) -> str:
        if not args and query.startswith("BEGIN"):  # asyncpg's (and SQLAlchemy's) BEGIN
            query += self.begin_suffix
        return await super().execute(query, *args, **options)

    def transaction(self, **options: Any) -> Any:
        if self.joined:
            return contextlib.nullcontext()
        return super().transaction(**options)


def _pooler_connection_class(values: dict[str, str]) -> type[PoolerConnection]:
    suffix = "".join(
        f"; SET LOCAL {name} = '{value.replace(chr(39), chr(39) * 2)}'"
        for name, value in values.items()
    )
    return type("PgBouncerConnection", (PoolerConnection,), {"begin_suffix": suffix})


def connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments for the configured pooler (``DB_POOLER``)."""
    values = session_settings(settings)
    if settings.db_pooler == "pgbouncer":
        # PgBouncer passes application_name on; other startup parameters it refuses.
        return {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "server_settings": {"application_name": APPLICATION_NAME},
            "connection_class": _pooler_connection_class(values),
            **_client_timeouts(settings),
        }
    return {
        "server_settings": {"application_name": APPLICATION_NAME, **values},
        **_client_timeouts(settings),
    }


def create_engine(settings: Settings, url: str | None = None, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_pre_ping": False,
        "connect_args": connect_args(settings),
    }
    options.update(overrides)
    engine = create_async_engine(url or resolve_database_url(settings), **options)
    _GATES[engine] = _Gate(
        asyncio.Semaphore(options["pool_size"] + max(options["max_overflow"], 0)),
        options["pool_timeout"],
    )
    return engine


def single_statement_engine(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """The engine for one-statement reads: autocommit (no BEGIN/ROLLBACK round trips),
    except through a transaction-mode pooler, where every statement needs a transaction."""
    if settings.db_pooler == "pgbouncer":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class UnitOfWork:
    """One database transaction.

    ``async with uow:`` begins it; leaving the block normally commits, an exception
    rolls back. Services open it; routers never commit. Committing inside the
    request (not in a dependency's teardown) means the client is only told about
    data that is durably stored.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._sessionmaker

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open: use `async with uow:`")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        if self._session is not None:
            raise RuntimeError("the unit of work is already open")
        self._session = self._sessionmaker()
        await self._session.begin()
        return self

    async def before_commit(self) -> None:
        """Runs in the transaction just before it commits; what it raises rolls it back."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failed = None
        if exc is None:
            try:
                await self.before_commit()
            except BaseException as error:
                exc = failed = error
        session, self._session = self._session, None
        assert session is not None
        try:
            if exc is None:
                await session.commit()
            else:
                await _rollback(session)
        except BaseException:
            # A commit that failed over a broken connection: the connection goes.
            await _discard(session)
            raise
        finally:
            await session.close()
        if exc is not None:
            _raise_translated(exc)
        if failed is not None:
            raise failed

    @property
    def dialect(self) -> Dialect:
        """The engine's SQLAlchemy dialect (set up once the engine has connected)."""
        return self._sessionmaker.kw["bind"].dialect

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's asyncpg connection, for the hot path of a request.

        Statements go straight to asyncpg (prepared once per connection, no ORM or
        compilation layer). Outside ``async with conn.transaction():`` each statement
        commits on its own; inside, leaving the block commits and an exception rolls
        back. Errors are translated like the session's (503 busy on lock timeouts).
        A connection given back mid-transaction (a cancelled request) is discarded,
        never reused. Through a transaction-mode pooler the whole block is one
        transaction (see ``PoolerConnection``).
        """
        engine: AsyncEngine = self._sessionmaker.kw["bind"]
        try:
            async with _fair_gate(engine):
                # The pool's connection itself, without a SQLAlchemy Connection around
                # it (measured: 80-93 -> 30-35 us of CPU per checkout and return).
                pooled = await engine.raw_connection()
                driver = pooled.driver_connection
                broken = False
                try:
                    # (not isinstance: asyncpg's metaclass says yes to any connection)
                    if PoolerConnection in type(driver).__mro__:
                        async with driver.transaction():
                            driver.joined = True
                            try:
                                yield driver
                            finally:
                                driver.joined = False
                    else:
                        yield driver
                except BaseException as exc:
                    broken = connection_lost(exc)  # never hand it out again
                    raise
                finally:
                    if broken or driver.is_closed() or driver.is_in_transaction():
                        await greenlet_spawn(pooled.invalidate)
                    await greenlet_spawn(pooled.close)
        except Exception as exc:
            _raise_translated(exc)
            raise


async def _rollback(session: AsyncSession) -> None:
    """Roll back after an error; when the rollback itself fails (the connection is
    closed, or the server went away), discard the connection and keep the first error."""
    try:
        await session.rollback()
    except Exception:
        await _discard(session)


async def _discard(session: AsyncSession) -> None:
    with contextlib.suppress(Exception):  # already broken: nothing more to do with it
        await session.invalidate()


# First come, first served for the pool's connections: a FIFO semaphore of the pool's
# size per engine, taken before a connection (UnitOfWork.driver). Measured under 64
# clients (make bench, spread): without it the server-side latency of bookings was
# bimodal, a quarter under 25 ms and a tail past 250 ms; with it, 99 % finish within
# 100 ms at the same throughput. (A test with a handful of waiters on the bare pool
# kept their order: the disorder shows under load, so the bench is what guards it.)
# The wait in the gate is bounded by DB_POOL_TIMEOUT like the pool's own (503 busy).
class _Gate(NamedTuple):
    slots: asyncio.Semaphore
    timeout: float


_GATES: weakref.WeakKeyDictionary[AsyncEngine, _Gate] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def _fair_gate(engine: AsyncEngine) -> AsyncIterator[None]:
    gate = _GATES.get(engine)
    if gate is None:  # an engine made elsewhere: the pool's own queue
        yield
        return
    try:
        async with asyncio.timeout(gate.timeout):
            await gate.slots.acquire()
    except TimeoutError:
        raise Busy("No database connection became free in time; nothing was written.") from None
    try:
        yield
    finally:
        gate.slots.release()


def _raise_translated(exc: BaseException) -> None:
    # A lock wait past LOCK_TIMEOUT_MS (or a deadlock) is reported as 503 busy:
    # the transaction was rolled back, nothing was written.
    from app.core.db_errors import translate_db_error

    busy = translate_db_error(exc)
    if busy is not None:
        raise busy from exc


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessionmaker


# Busy: no pooled connection within DB_POOL_TIMEOUT, or a statement past its timeout
# (also the argon2 slots of the auth routes, which all take a unit of work).
@raises(ServiceUnavailable, Busy)
async def get_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    async with request_uow(request.app.state.sessionmaker) as uow:
        yield uow


@asynccontextmanager
async def request_uow(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[UnitOfWork]:
    """A request's unit of work; a session an aborted request left open is closed after."""
    uow = UnitOfWork(sessionmaker)
    try:
        yield uow
    finally:
        if uow._session is not None:
            await uow._session.close()


UoW = Annotated[UnitOfWork, Depends(get_uow)]


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# ---------------------------------------------------------------- compiled statements

# The dialect hot statements are compiled for when no engine's own is given: asyncpg's,
# with PostgreSQL's standard-conforming strings (the server default).
_ASYNCPG_DIALECT = PGDialect_asyncpg()


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """A SQLAlchemy Core statement compiled once to asyncpg's SQL.

    Callers bind by NAME (``compiled.args(event_id=1, ids=[2, 3])``); the positional
    order the driver wants is the compiler's, kept in ``names``, so no call site ever
    lists ``$1..$n`` by hand. A name the statement does not know, or a parameter left
    unbound, is an error at once.
    """

    sql: str
    names: tuple[str, ...]  # the bind parameter of each $n, in order
    defaults: dict[str, Any]  # the values SQLAlchemy bound itself (literals, constants)

    def args(self, values: dict[str, Any] | None = None, /, **named: Any) -> list[Any]:
        given = {**(values or {}), **named}
        unknown = given.keys() - set(self.names)
        if unknown:
            raise TypeError(f"unknown parameters {sorted(unknown)} for: {self.sql[:80]}")
        out = []
        for name in self.names:
            if name in given:
                out.append(given[name])
            elif self.defaults.get(name) is not None:
                out.append(self.defaults[name])
            else:
                raise TypeError(f"parameter {name!r} not bound for: {self.sql[:80]}")
        return out

    async def fetch(self, conn: asyncpg.Connection, /, **named: Any) -> list[asyncpg.Record]:
        return await conn.fetch(self.sql, *self.args(**named))

    async def fetchrow(self, conn: asyncpg.Connection, /, **named: Any) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self.args(**named))

    async def fetchval(self, conn: asyncpg.Connection, /, **named: Any) -> Any:
        return await conn.fetchval(self.sql, *self.args(**named))

    async def execute(self, conn: asyncpg.Connection, /, **named: Any) -> str:
        return await conn.execute(self.sql, *self.args(**named))


def param(name: str, type_: Any) -> BindParameter[Any]:
    """A named, typed bind parameter of a hot statement (its value given at the call)."""
    return bindparam(name, None, type_=type_)


def compile_once(statement: ClauseElement, dialect: Dialect | None = None) -> CompiledStatement:
    """``statement`` compiled for asyncpg (or ``dialect``): for callers with their own cache.

    ``render_postcompile`` expands ``IN`` lists of constants into the SQL text.
    """
    compiled = statement.compile(
        dialect=dialect or _ASYNCPG_DIALECT, compile_kwargs={"render_postcompile": True}
    )
    params = dict(compiled.construct_params(_check=False))
    return CompiledStatement(
        sql=compiled.string, names=tuple(compiled.positiontup or ()), defaults=params
    )


@lru_cache(maxsize=256)
def compile_statement(
    statement: ClauseElement, dialect: Dialect | None = None
) -> CompiledStatement:
    """``statement`` compiled once per statement object: hot statements are module
    constants, so each compiles on its first use only."""
    return compile_once(statement, dialect)


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under ``session``'s transaction, for compiled statements.

    SQLAlchemy's asyncpg adapter sends BEGIN only with the session's first statement,
    so a session that has not spoken yet would hand out a connection in autocommit:
    its row locks would end with each statement and a multi-statement change could
    half commit. BEGIN is sent here in that case, so whatever runs on the returned
    connection is part of the unit of work's one transaction (and, through a
    transaction-mode pooler, stays on one server connection).
    """
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    adapted = raw.dbapi_connection
    if not getattr(adapted, "_started", True):
        await adapted._start_transaction()  # type: ignore[union-attr]
    return driver  # type: ignore[return-value]
