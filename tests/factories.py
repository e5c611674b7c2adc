"""The shared helpers of the tests: settings, tokens, rows and requests.

Fixtures live in conftest.py; everything a test imports lives here. Rows are inserted
straight into the database by plain async functions taking the `db` sessionmaker fixture
(`event = await make_event(db, organizer, total_capacity=50)`); requests go through the
HTTP client (`await book(client, attendee, event.id, (standard.id, 2))`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.bookings.models import Booking, BookingItem
from app.core.config import Settings
from app.core.security import create_token, pwd_context
from app.events.models import Event, TicketType
from deploy import services
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"
TEST_PASSWORD = "Correct-Horse-42"
# Hashing with argon2 costs ~0.1 s: hash the shared test password once.
TEST_PASSWORD_HASH = pwd_context.hash(TEST_PASSWORD)

_numbers = count(1)


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
        # Tests set their data up in the database directly, behind the catalogue cache's
        # back; the cache has its own tests (tests/test_catalogue_cache.py).
        "catalogue_cache_seconds": 0,
        # Every app of the suite shares one database: only the tests about delivery run
        # a dispatcher (or call run_until_idle), so none sends another test's messages.
        "outbox_in_process": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def token_for(user: User, *, lifetime: timedelta = timedelta(minutes=15)) -> str:
    token, _ = create_token(
        user_id=user.id, token_type="access", key=TEST_SECRET_KEY, lifetime=lifetime
    )
    return token


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def wait_until_ready(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll /health/ready until it answers 200; fail if the server exits or time runs out."""
    services.wait_until_ready(base, proc, f"the server at {base}", timeout)


@contextmanager
def uvicorn_server(database_url: str, **env_overrides: str) -> Iterator[str]:
    """The real service under uvicorn with 2 worker processes, on the test database;
    yields its base URL. ``env_overrides`` are settings (OUTBOX_IN_PROCESS="true", ...)."""
    port = free_port()
    defaults = {
        # Counters are read right after storms, from either worker: no catalogue cache.
        "CATALOGUE_CACHE_SECONDS": "0",
        # Only the tests about delivery send the outbox (see make_settings).
        "OUTBOX_IN_PROCESS": "false",
    }
    env = server_env(database_url, **{**defaults, **env_overrides})
    with server_process(uvicorn_argv(port), env, port) as base:
        yield base


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of the service started as its own process on ``database_url``: this
    process's, without Redis, with the test key and no rate limits, and ``settings``."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "RATE_LIMIT_ENABLED": "false",
        "DB_POOL_SIZE": "10",
        "DB_MAX_OVERFLOW": "5",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    env.pop("REDIS_URL", None)
    return env


def uvicorn_argv(port: int) -> list[str]:
    """The service with 2 worker processes on ``port``, logging warnings only, under the
    image's server (uvicorn's command line, a listening socket per worker)."""
    return [
        *(sys.executable, "-m", "app.core.server", "app.main:app", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", "2", "--no-access-log", "--log-level", "warning"),
    ]


@contextmanager
def server_process(
    argv: list[str],
    env: dict[str, str],
    port: int,
    *,
    timeout: float = 30,
    stop_timeout: float = 10,
    **popen: Any,
) -> Iterator[str]:
    """``argv``, a server on ``port``, started in the project's folder; yields its base URL
    once /health/ready answers, and stops it (SIGTERM, then SIGKILL) after."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, **popen)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, timeout=timeout)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[Any]:
    """A new app made with ``settings``, its lifespan running for the block."""
    from app.main import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def asgi_client(
    app: Any, base_url: str = "http://testserver", *, raise_app_exceptions: bool = True
) -> httpx.AsyncClient:
    """A client of ``app`` in this process, through its ASGI interface."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@asynccontextmanager
async def client_of(
    settings: Settings, base_url: str = "http://testserver", *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new app made with ``settings``, the app running for the block."""
    async with (
        started_app(settings) as app,
        asgi_client(app, base_url, raise_app_exceptions=raise_app_exceptions) as client,
    ):
        yield client


def storm_client(
    base_url: str, *, connections: int = 200, timeout: float = 60
) -> httpx.AsyncClient:
    """A client of a live server that keeps ``connections`` open at once (for storms)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


def order(event_id, *items):
    return {"event_id": event_id, "items": [{"ticket_type_id": t, "quantity": q} for t, q in items]}


async def _post_order(client, path, user, event_id, items, key):
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    return await client.post(path, json=order(event_id, *items), headers=headers)


async def hold(client, user, event_id, *items, key=None):
    return await _post_order(client, "/api/holds/", user, event_id, items, key)


async def book(client, user, event_id, *items, key=None):
    return await _post_order(client, "/api/bookings/", user, event_id, items, key)


async def checkout(client, user, ref, payment_reference=None):
    body = {} if payment_reference is None else {"payment_reference": payment_reference}
    return await client.post(f"/api/holds/{ref}/checkout/", json=body, headers=auth(user))


async def insert(db: async_sessionmaker[AsyncSession], row: Any) -> Any:
    """``row`` (a new model instance) written and read back with its server defaults."""
    async with db() as session:
        session.add(row)
        await session.commit()
        await session.refresh(row)
    return row


def _id(row: Any) -> int:
    return row if isinstance(row, int) else row.id


async def make_event(
    db: async_sessionmaker[AsyncSession], organizer: User | int, **overrides: Any
) -> Event:
    """An event starting in 30 days, capacity 100; any column can be overridden."""
    n = next(_numbers)
    values: dict[str, Any] = {
        "name": f"Event {n}",
        "description": "",
        "location": "Berlin",
        "start_time": datetime.now(UTC) + timedelta(days=30),
        "total_capacity": 100,
    }
    return await insert(db, Event(organizer_id=_id(organizer), **{**values, **overrides}))


async def make_ticket_type(
    db: async_sessionmaker[AsyncSession], event: Event | int, **overrides: Any
) -> TicketType:
    """A ticket type at 25.00 with 50 tickets to sell; any column can be overridden."""
    n = next(_numbers)
    values: dict[str, Any] = {
        "name": f"Ticket {n}",
        "description": "",
        "price": Decimal("25.00"),
        "quantity_available": 50,
    }
    return await insert(db, TicketType(event_id=_id(event), **{**values, **overrides}))


async def confirmed_booking(client, user, event_id, *items) -> dict[str, Any]:
    """A booking made through the API that must succeed: its JSON body."""
    response = await book(client, user, event_id, *items)
    assert response.status_code == 201, response.text
    return response.json()


async def make_booking(
    db: async_sessionmaker[AsyncSession],
    event: Event,
    ticket_type: TicketType,
    user: User,
    quantity: int,
) -> int:
    """A confirmed booking written straight into the database, counters included."""
    async with db() as session:
        booking = Booking(
            user_id=user.id,
            event_id=event.id,
            total_price=ticket_type.price * quantity,
        )
        session.add(booking)
        await session.flush()
        session.add(
            BookingItem(
                booking_id=booking.id,
                ticket_type_id=ticket_type.id,
                quantity=quantity,
                price_at_booking=ticket_type.price,
            )
        )
        await session.execute(
            update(TicketType)
            .where(TicketType.id == ticket_type.id)
            .values(
                quantity_available=TicketType.quantity_available - quantity,
                quantity_sold=TicketType.quantity_sold + quantity,
            )
        )
        await session.execute(
            update(Event)
            .where(Event.id == event.id)
            .values(tickets_sold=Event.tickets_sold + quantity)
        )
        await session.commit()
        return booking.id


# ---------------------------------------------------------------- a browser, offline

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="no Chromium binary (install Debian's chromium: apt-get install -y chromium)",
)


@asynccontextmanager
async def offline_page(
    allowed: tuple[str, ...] = (), **page_options: Any
) -> AsyncIterator[tuple[Any, list[str], list[str]]]:
    """A page of a headless Chromium that reaches only this machine, with the URLs it
    requested and those it was refused: a request to another host (unless its URL starts
    with one of ``allowed``, such as ``data:``) is aborted."""
    from playwright.async_api import async_playwright

    requested: list[str] = []
    blocked: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = await browser.new_page(**page_options)

            async def only_local(route: Any) -> None:
                url = route.request.url
                requested.append(url)
                if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(allowed):
                    await route.continue_()
                else:
                    blocked.append(url)
                    await route.abort()

            await page.route("**/*", only_local)
            yield page, requested, blocked
        finally:
            await browser.close()


# ---------------------------------------------------------------- the command line


def run_cli(
    *args: str, database_url: str, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "OUTBOX_IN_PROCESS": "false",
        "SECRET_KEY": TEST_SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        **env,
    }
    environment.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=environment,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def create_user_cli(
    username: str,
    email: str,
    *,
    database_url: str,
    role: str | None = None,
    password: str | None = None,
    staff: bool = False,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``python -m app create-user`` of ``username`` with ``email`` and the options given."""
    options = [*("--role", role)] if role else []
    options += [*("--password", password)] if password else []
    options += ["--staff"] if staff else []
    return run_cli(
        "create-user",
        "--username",
        username,
        "--email",
        email,
        *options,
        database_url=database_url,
        **env,
    )
