"""The service through a real PgBouncer in transaction mode (DB_POOLER=pgbouncer).

PgBouncer hands every transaction to any of its server connections: nothing may
outlive a transaction (prepared statements, SET), yet lock_timeout must still bound
every lock wait. Skips when pgbouncer is not installed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from deploy.services import Service, find_binary, start_pgbouncer
from tests.booking_setup import check_invariants
from tests.factories import (
    auth,
    client_of,
    make_event,
    make_settings,
    make_ticket_type,
    order,
    server_env,
    server_process,
    storm_client,
    uvicorn_argv,
)
from tests.redis_server import free_port

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        find_binary("pgbouncer") is None,
        reason="pgbouncer is not installed (Debian: apt-get install pgbouncer); "
        "the tests through a transaction-mode pooler cannot run",
    ),
]


def through(service: Service, database_url: str) -> str:
    """``database_url`` with its host and port replaced by the pooler's."""
    url = make_url(database_url)
    query = {k: v for k, v in url.query.items() if k != "host"}
    return url.set(host="127.0.0.1", port=service.port, query=query).render_as_string(
        hide_password=False
    )


@pytest.fixture(scope="module")
def bouncer(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = make_url(database_url)
    host = url.host or str(url.query.get("host") or "127.0.0.1")
    # Fewer server connections than the app's pools together: transaction mode shares them.
    service = start_pgbouncer(
        tmp_path_factory.mktemp("pgbouncer"),
        server_host=host,
        server_port=url.port or 5432,
        users=(url.username or "postgres",),
        pool_size=6,
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def bouncer_url(bouncer: Service, database_url: str) -> str:
    return through(bouncer, database_url)


async def _app_client(settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(settings, "http://t", raise_app_exceptions=False) as c:
        yield c


@pytest.fixture
async def pooled(bouncer_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _app_client(make_settings(bouncer_url, db_pooler="pgbouncer")):
        yield c


async def test_bookings_and_the_catalogue_work_through_pgbouncer(
    pooled, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer, total_capacity=10)
    standard = await make_ticket_type(db, event, quantity_available=8)
    vip = await make_ticket_type(db, event, quantity_available=2, name="VIP")
    # Many requests, so that the app's pooled connections meet several server connections.
    for _ in range(3):
        r = await pooled.get("/api/events/")
        assert r.status_code == 200 and r.json()["count"] == 1, r.text
        assert (await pooled.get(f"/api/events/{event.id}/")).status_code == 200
        r = await pooled.get(f"/api/events/{event.id}/ticket-types/")
        assert r.status_code == 200 and len(r.json()) == 2
    headers = {**auth(attendee), "Idempotency-Key": "through-the-pooler"}
    r = await pooled.post(
        "/api/bookings/", json=order(event.id, (standard.id, 2), (vip.id, 1)), headers=headers
    )
    assert r.status_code == 201, r.text
    ref = r.json()["booking_reference"]
    replay = await pooled.post(
        "/api/bookings/", json=order(event.id, (standard.id, 2), (vip.id, 1)), headers=headers
    )
    assert replay.status_code == 201 and replay.json()["booking_reference"] == ref
    r = await pooled.post(
        "/api/bookings/", json=order(event.id, (vip.id, 2)), headers=auth(attendee)
    )
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert (await pooled.get(f"/api/bookings/{ref}/", headers=auth(attendee))).status_code == 200
    r = await pooled.get("/api/users/me/bookings/", headers=auth(attendee))
    assert r.status_code == 200 and r.json()["count"] == 1
    r = await pooled.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = await pooled.get(f"/api/events/{event.id}/bookings/", headers=auth(organizer))
    assert r.status_code == 200 and r.json()["count"] == 1
    await check_invariants(db, {standard.id: 8, vip.id: 2})
    async with db() as s:
        sold = await s.scalar(text("SELECT tickets_sold FROM events WHERE id=:i"), {"i": event.id})
    assert sold == 0


async def test_lock_wait_past_lock_timeout_is_503_busy_through_pgbouncer(
    bouncer_url, db, organizer, attendee
) -> None:
    """lock_timeout reaches every transaction as SET LOCAL: a booking and a cancel that
    wait on a held event lock are 503 busy after LOCK_TIMEOUT_MS, and write nothing."""
    event = await make_event(db, organizer)
    standard = await make_ticket_type(db, event, quantity_available=5)
    settings = make_settings(bouncer_url, db_pooler="pgbouncer", lock_timeout_ms=300)
    async for c in _app_client(settings):
        r = await c.post(
            "/api/bookings/", json=order(event.id, (standard.id, 1)), headers=auth(attendee)
        )
        assert r.status_code == 201, r.text
        ref = r.json()["booking_reference"]
        async with db() as holder:
            await holder.execute(
                text("SELECT id FROM events WHERE id=:i FOR UPDATE"), {"i": event.id}
            )
            booking = asyncio.create_task(
                c.post(
                    "/api/bookings/", json=order(event.id, (standard.id, 1)), headers=auth(attendee)
                )
            )
            # The waiting backend carries the session settings, set per transaction.
            waiting = None
            for _ in range(50):
                waiting = (
                    await holder.execute(
                        text(
                            "SELECT application_name, wait_event_type FROM pg_stat_activity "
                            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                ).first()
                if waiting is not None:
                    break
                await asyncio.sleep(0.02)
            started = time.monotonic()
            r = await booking
            cancel_started = time.monotonic()
            cancel = await c.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
            cancel_took = time.monotonic() - cancel_started
            await holder.rollback()
        assert waiting is not None and waiting.application_name == "event-booking-api"
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "busy" and r.headers["retry-after"]
        assert time.monotonic() - started < 3
        assert cancel.status_code == 503 and cancel.json()["code"] == "busy", cancel.text
        assert 0.25 < cancel_took < 3
        # Once the lock is free, the same connections serve normally.
        r = await c.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
        assert r.status_code == 200, r.text
    await check_invariants(db, {standard.id: 5})


@pytest.fixture(scope="module")
def pooled_server(bouncer_url: str) -> Iterator[str]:
    """The service under uvicorn with 2 workers, through PgBouncer."""
    port = free_port()
    env = server_env(bouncer_url, DB_POOLER="pgbouncer", DB_MAX_OVERFLOW="0")
    with server_process(uvicorn_argv(port), env, port) as base:
        yield base


async def test_concurrent_bookings_through_pgbouncer_never_oversell(
    pooled_server, db, organizer, create_user
) -> None:
    """150 clients on 2 workers (20 pooled connections) share 6 server connections."""
    event = await make_event(db, organizer, total_capacity=40)
    standard = await make_ticket_type(db, event, quantity_available=30)
    vip = await make_ticket_type(db, event, quantity_available=30, name="VIP")
    attendees = [await create_user("attendee") for _ in range(15)]
    async with storm_client(pooled_server) as http:

        async def one(i: int) -> httpx.Response:
            items = [(standard.id, 1), (vip.id, 1)] if i % 2 else [(vip.id, 1), (standard.id, 1)]
            return await http.post(
                "/api/bookings/",
                json=order(event.id, *items),
                headers={**auth(attendees[i % 15]), "Idempotency-Key": f"k{i}"},
            )

        responses = await asyncio.gather(*(one(i) for i in range(150)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 20, sorted(set(codes))
    assert set(codes) <= {201, 409}, [r.text for r in responses if r.status_code not in (201, 409)]
    await check_invariants(db, {standard.id: 30, vip.id: 30})
    async with db() as s:
        sold = await s.scalar(text("SELECT tickets_sold FROM events WHERE id=:i"), {"i": event.id})
        bookings = await s.scalar(
            text("SELECT count(*) FROM bookings WHERE event_id=:i AND status='confirmed'"),
            {"i": event.id},
        )
    assert (sold, bookings) == (40, 20)
