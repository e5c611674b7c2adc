"""The shared helpers of the tests: settings, tokens, rows and requests.

Fixtures live in conftest.py; everything a test imports lives here. Rows are inserted
straight into the database by plain async functions taking the `db` sessionmaker fixture
(`event = await make_event(db, organizer, total_capacity=50)`); requests go through the
HTTP client (`await book(client, attendee, event.id, (standard.id, 2))`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.bookings.models import Booking, BookingItem
from app.core.config import Settings
from app.core.security import create_token, pwd_context
from app.events.models import Event, TicketType
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
        # Counters are read right after storms, from either worker: no catalogue cache.
        "CATALOGUE_CACHE_SECONDS": "0",
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


def order(event_id, *items):
    return {"event_id": event_id, "items": [{"ticket_type_id": t, "quantity": q} for t, q in items]}


async def hold(client, user, event_id, *items, key=None):
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    return await client.post("/api/holds/", json=order(event_id, *items), headers=headers)


async def book(client, user, event_id, *items, key=None):
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    return await client.post("/api/bookings/", json=order(event_id, *items), headers=headers)


async def checkout(client, user, ref, payment_reference=None):
    body = {} if payment_reference is None else {"payment_reference": payment_reference}
    return await client.post(f"/api/holds/{ref}/checkout/", json=body, headers=auth(user))


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
    values.update(overrides)
    organizer_id = organizer if isinstance(organizer, int) else organizer.id
    async with db() as session:
        event = Event(organizer_id=organizer_id, **values)
        session.add(event)
        await session.commit()
        await session.refresh(event)
    return event


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
    values.update(overrides)
    event_id = event if isinstance(event, int) else event.id
    async with db() as session:
        ticket_type = TicketType(event_id=event_id, **values)
        session.add(ticket_type)
        await session.commit()
        await session.refresh(ticket_type)
    return ticket_type


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
