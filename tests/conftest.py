"""Shared fixtures: a throwaway migrated database, the app, an HTTP client, users, tokens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.core.config import Settings
from app.core.db import create_engine, make_sessionmaker
from app.core.migrate import upgrade_head
from app.core.security import create_token, pwd_context
from tests import pg
from tests.redis_server import free_port

pytest_plugins = ["tests.conftest_redis", "tests.conftest_webhooks"]
ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"
TEST_PASSWORD = "Correct-Horse-42"
# Hashing with argon2 costs ~0.1 s: hash the shared test password once.
_TEST_PASSWORD_HASH = pwd_context.hash(TEST_PASSWORD)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    server = await pg.server_url()
    name, url = await pg.create_database(server)
    await asyncio.to_thread(upgrade_head, url)
    try:
        yield url
    finally:
        await pg.drop_database(server, name)


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET_KEY,
        "rate_limit_enabled": False,
        "redis_url": None,
        "smtp_host": None,
        # The whole suite stays well under PostgreSQL's default 100 connections.
        "db_pool_size": 10,
        "db_max_overflow": 5,
        # Every app of the suite shares one database: only the tests about delivery run
        # a dispatcher (or call run_until_idle), so none sends another test's messages.
        "outbox_in_process": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    from app.main import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
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
        hashed = _TEST_PASSWORD_HASH if password is None else pwd_context.hash(password)
        user = User(
            username=username,
            email=(email or f"{username}@example.com").lower(),
            hashed_password=hashed,
            role=role,
            is_active=is_active,
            is_staff=is_staff,
        )
        async with db() as session:
            session.add(user)
            await session.commit()
            await session.refresh(user)
        return user

    return _create


def token_for(user: User, *, lifetime: timedelta = timedelta(minutes=15)) -> str:
    token, _ = create_token(
        user_id=user.id, token_type="access", key=TEST_SECRET_KEY, lifetime=lifetime
    )
    return token


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


@pytest.fixture
async def organizer(create_user: Callable[..., object]) -> User:
    return await create_user("organizer")  # type: ignore[misc]


@pytest.fixture
async def attendee(create_user: Callable[..., object]) -> User:
    return await create_user("attendee")  # type: ignore[misc]


def wait_until_ready(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll /health/ready until it answers 200; fail if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {base} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {base} was not ready within {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def uvicorn_server(database_url: str, **env_overrides: str) -> Iterator[str]:
    """The real service under uvicorn with 2 worker processes, on the test database;
    yields its base URL. ``env_overrides`` are settings (OUTBOX_IN_PROCESS="true", ...)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "RATE_LIMIT_ENABLED": "false",
        "DB_POOL_SIZE": "10",
        "DB_MAX_OVERFLOW": "5",
        "LOG_LEVEL": "WARNING",
        # Only the tests about delivery send the outbox (see make_settings).
        "OUTBOX_IN_PROCESS": "false",
        **env_overrides,
    }
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, timeout=30)
    except RuntimeError:
        proc.kill()
        raise
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """The real service under uvicorn with 2 worker processes, on the test database."""
    with uvicorn_server(database_url) as base:
        yield base
