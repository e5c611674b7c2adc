"""A booking storm against uvicorn with 2 workers: every committed booking gets its
webhook and email exactly once in the outbox, and the webhook arrives within seconds."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.models import User
from tests.booking_setup import check_invariants
from tests.factories import auth, make_event, make_ticket_type, uvicorn_server
from tests.webhook_receiver import Receiver

TICKETS = 40
CLIENTS = 80


@pytest.fixture
def sending_server(database_url: str) -> Iterator[str]:
    """uvicorn, 2 workers, each sending the outbox (no Redis), loopback receivers allowed."""
    with uvicorn_server(
        database_url, OUTBOX_IN_PROCESS="true", WEBHOOK_ALLOW_PRIVATE_NETWORKS="true"
    ) as base:
        yield base


async def test_every_committed_booking_of_a_storm_is_delivered_once(
    sending_server: str, db: Any, organizer: User, create_user, receiver: Receiver
) -> None:
    attendees = [await create_user("attendee") for _ in range(CLIENTS)]
    event = await make_event(db, organizer, total_capacity=TICKETS)
    standard = await make_ticket_type(db, event, quantity_available=TICKETS * 2)
    async with httpx.AsyncClient(base_url=sending_server, timeout=30) as client:
        created = await client.post(
            "/api/webhooks/",
            json={"url": receiver.url, "event_types": ["booking.confirmed", "event.sold_out"]},
            headers=auth(organizer),
        )
        assert created.status_code == 201, created.text
        body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 1}]}
        responses = await asyncio.gather(
            *(client.post("/api/bookings/", json=body, headers=auth(a)) for a in attendees)
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: TICKETS, 409: CLIENTS - TICKETS}, statuses
    await check_invariants(db)

    requests = await receiver.wait_for(TICKETS + 1, timeout=20)
    await receiver.stays_at(TICKETS + 1, 1.0)
    arrived = {r.json()["data"].get("booking_reference"): r for r in requests}
    types = Counter(r.json()["type"] for r in requests)
    assert types == {"booking.confirmed": TICKETS, "event.sold_out": 1}
    async with db() as session:
        confirmed = {
            str(ref): created_at
            for ref, created_at in await session.execute(
                text(
                    "SELECT booking_reference, created_at FROM bookings WHERE status = 'confirmed'"
                )
            )
        }
        emails = await session.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE channel = 'email'")
        )
    assert set(confirmed) == {ref for ref in arrived if ref is not None}
    assert emails == TICKETS
    assert len({r.headers["webhook-id"] for r in requests}) == TICKETS + 1

    # From the outbox row's insert (just before its transaction's commit) to receipt.
    async with db() as session:
        written = dict(
            (
                await session.execute(
                    text(
                        "SELECT message_id, created_at FROM outbox_messages "
                        "WHERE channel = 'webhook'"
                    )
                )
            ).all()
        )
    now_wall, now_mono = time.time(), time.monotonic()
    latencies = sorted(
        (now_wall - (now_mono - r.at)) - datetime.timestamp(written[r.headers["webhook-id"]])
        for r in requests
    )
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\nwebhook latency, commit to receipt: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    # Alone: p50 ~30 ms, p99 ~250 ms (LISTEN/NOTIFY). Inside the full suite on 2 shared
    # cores p99 reached 2.7 s; the bound says "within seconds", not a benchmark.
    assert p99 < 5.0, latencies
