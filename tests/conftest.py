"""Shared fixtures: a throwaway migrated database, the app, an HTTP client, users, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.core.config import Settings
from app.core.db import create_engine, make_sessionmaker
from app.core.security import pwd_context
from tests import pg
from tests.factories import (
    ROOT,
    TEST_PASSWORD,
    TEST_PASSWORD_HASH,
    TEST_SECRET_KEY,
    asgi_client,
    auth,
    insert,
    make_settings,
    started_app,
    token_for,
    uvicorn_server,
    wait_until_ready,
)

pytest_plugins = ["tests.booking_setup", "tests.conftest_redis", "tests.conftest_webhooks"]
__all__ = [
    "ROOT",
    "TEST_PASSWORD",
    "TEST_SECRET_KEY",
    "auth",
    "make_settings",
    "token_for",
    "uvicorn_server",
    "wait_until_ready",
]


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with pg.throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    async with started_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app, raise_app_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[object]:
    eng = create_engine(settings, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def db(engine: object) -> async_sessionmaker[AsyncSession]:
    """Sessions for setting up and checking data directly in the database."""
    return make_sessionmaker(engine)  # type: ignore[arg-type]


TABLES = (
    "webhook_deliveries, outbox_messages, webhook_endpoints, "
    "audit_log, waitlist_entries, idempotency_keys, hold_items, holds, booking_items, "
    "bookings, ticket_types, events, refresh_tokens, users"
)


@pytest.fixture(autouse=True)
async def _clean_database(db: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """Tests commit real data (several connections, real servers): truncate after each."""
    yield
    # A background email task of the app may still be reading: TRUNCATE can then be
    # picked as the victim of a deadlock. Try again; the reader is short.
    for attempt in range(5):
        try:
            async with db() as session:
                # Housekeeping, not a request: on a busy machine emptying every table can
                # take longer than the app's STATEMENT_TIMEOUT_MS.
                await session.execute(text("SET LOCAL statement_timeout = 0"))
                await session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
                await session.commit()
            return
        except DBAPIError as exc:
            if attempt == 4 or getattr(exc.orig, "sqlstate", None) != "40P01":
                raise
            await asyncio.sleep(0.05)


_counter = iter(range(1, 10**9))


@pytest.fixture
def create_user(db: async_sessionmaker[AsyncSession]) -> Callable[..., object]:
    async def _create(
        role: str = "attendee",
        username: str | None = None,
        email: str | None = None,
        password: str | None = None,
        is_active: bool = True,
        is_staff: bool = False,
    ) -> User:
        n = next(_counter)
        username = username or f"{role}{n}"
        hashed = TEST_PASSWORD_HASH if password is None else pwd_context.hash(password)
        user = User(
            username=username,
            email=(email or f"{username}@example.com").lower(),
            hashed_password=hashed,
            role=role,
            is_active=is_active,
            is_staff=is_staff,
        )
        return await insert(db, user)

    return _create


@pytest.fixture
async def organizer(create_user: Callable[..., object]) -> User:
    return await create_user("organizer")  # type: ignore[misc]


@pytest.fixture
async def attendee(create_user: Callable[..., object]) -> User:
    return await create_user("attendee")  # type: ignore[misc]


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """The real service under uvicorn with 2 worker processes, on the test database."""
    with uvicorn_server(database_url) as base:
        yield base
