"""Which changes send which webhooks (and emails), through HTTP, to a real receiver."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from app.auth.models import User
from app.events.models import Event, TicketType
from tests.factories import auth, book, make_event, make_ticket_type
from tests.webhook_receiver import Receiver

ALL_TYPES = [
    "booking.confirmed",
    "booking.cancelled",
    "event.cancelled",
    "event.sold_out",
]


@pytest.fixture
def client(hooks_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """This module's requests go to the app that sends its outbox."""
    return hooks_client


async def subscribe(client: httpx.AsyncClient, organizer: User, url: str) -> str:
    response = await client.post(
        "/api/webhooks/", json={"url": url, "event_types": ALL_TYPES}, headers=auth(organizer)
    )
    assert response.status_code == 201, response.text
    return response.json()["secret"]


async def outbox(db: Any) -> list[tuple[str, str]]:
    async with db() as session:
        rows = await session.execute(text("SELECT channel, topic FROM outbox_messages ORDER BY id"))
        return [tuple(r) for r in rows]


def types_of(receiver: Receiver) -> list[str]:
    return [r.json()["type"] for r in receiver.requests]


async def watched_event(
    client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver, **columns: Any
) -> tuple[Event, TicketType]:
    """An event of ``organizer`` with one ticket type (``columns`` of either), whose
    webhooks ``receiver`` is subscribed to."""
    await subscribe(client, organizer, receiver.url)
    types = {k: columns.pop(k) for k in ("quantity_available",) if k in columns}
    event = await make_event(db, organizer, **columns)
    return event, await make_ticket_type(db, event, **types)


async def test_a_booking_sends_booking_confirmed_with_the_booking_as_the_api_shows_it(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, receiver: Receiver
) -> None:
    secret = await subscribe(client, organizer, receiver.url)
    event = await make_event(db, organizer)
    standard = await make_ticket_type(db, event, quantity_available=10)
    response = await book(client, attendee, event.id, (standard.id, 2))
    assert response.status_code == 201, response.text

    [request] = await receiver.wait_for(1, timeout=5)
    message = Webhook(secret).verify(request.body, request.headers)
    assert message["type"] == "booking.confirmed"
    assert message["data"] == response.json()
    assert sorted(await outbox(db)) == [
        ("email", "booking_confirmed"),
        ("webhook", "booking.confirmed"),
    ]
    await receiver.stays_at(1)


@pytest.mark.parametrize(
    "quantity, status, code", [(6, 409, "sold_out"), (0, 422, "validation_error")]
)
async def test_a_refused_booking_leaves_no_message(
    client: httpx.AsyncClient,
    db: Any,
    organizer: User,
    attendee: User,
    receiver: Receiver,
    quantity: int,
    status: int,
    code: str,
) -> None:
    event, standard = await watched_event(client, db, organizer, receiver, quantity_available=5)
    response = await book(client, attendee, event.id, (standard.id, quantity))
    assert response.status_code == status and response.json()["code"] == code
    assert await outbox(db) == []
    await receiver.stays_at(0, 0.3)


async def test_an_idempotent_replay_sends_nothing_more(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, receiver: Receiver
) -> None:
    event, standard = await watched_event(client, db, organizer, receiver)
    for _ in range(3):
        response = await book(client, attendee, event.id, (standard.id, 1), key="once")
        assert response.status_code == 201
    await receiver.wait_for(1, timeout=5)
    await receiver.stays_at(1)
    assert sorted(await outbox(db)) == [
        ("email", "booking_confirmed"),
        ("webhook", "booking.confirmed"),
    ]


async def test_cancelling_a_booking_sends_booking_cancelled(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, receiver: Receiver
) -> None:
    event, standard = await watched_event(client, db, organizer, receiver)
    booked = await book(client, attendee, event.id, (standard.id, 1))
    reference = booked.json()["booking_reference"]
    cancelled = await client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    assert cancelled.status_code == 200
    again = await client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    assert again.status_code == 409

    requests = await receiver.wait_for(2, timeout=5)
    by_type = {r.json()["type"]: r.json() for r in requests}
    assert by_type["booking.cancelled"]["data"] == cancelled.json()
    await receiver.stays_at(2)
    assert Counter(await outbox(db)) == Counter(
        {
            ("email", "booking_confirmed"): 1,
            ("webhook", "booking.confirmed"): 1,
            ("email", "booking_cancelled"): 1,
            ("webhook", "booking.cancelled"): 1,
        }
    )


async def test_cancelling_an_event_sends_event_cancelled_and_each_booking_cancelled(
    client: httpx.AsyncClient,
    db: Any,
    organizer: User,
    create_user,
    receiver: Receiver,
) -> None:
    event, standard = await watched_event(client, db, organizer, receiver, name="Open Air")
    attendees = [await create_user("attendee") for _ in range(3)]
    references = {
        (await book(client, a, event.id, (standard.id, 1))).json()["booking_reference"]
        for a in attendees
    }
    await receiver.wait_for(3, timeout=5)
    response = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert response.status_code == 200

    requests = await receiver.wait_for(7, timeout=5)
    later = [r.json() for r in requests[3:]]
    [event_message] = [m for m in later if m["type"] == "event.cancelled"]
    assert event_message["data"] == response.json()
    assert event_message["data"]["status"] == "cancelled"
    cancelled = [m["data"] for m in later if m["type"] == "booking.cancelled"]
    assert {b["booking_reference"] for b in cancelled} == references
    assert {b["status"] for b in cancelled} == {"cancelled"}
    await receiver.stays_at(7)
    emails = [t for c, t in await outbox(db) if c == "email"]
    assert Counter(emails) == Counter({"booking_confirmed": 3, "booking_cancelled": 3})


async def test_event_sold_out_is_sent_each_time_the_status_becomes_sold_out(
    client: httpx.AsyncClient, db: Any, organizer: User, create_user, receiver: Receiver
) -> None:
    event, standard = await watched_event(
        client, db, organizer, receiver, total_capacity=2, quantity_available=5
    )
    first, second, third = [await create_user("attendee") for _ in range(3)]
    assert (await book(client, first, event.id, (standard.id, 1))).status_code == 201
    taken = await book(client, second, event.id, (standard.id, 1))
    assert taken.status_code == 201
    refused = await book(client, third, event.id, (standard.id, 1))
    assert refused.status_code == 409  # no message for it
    reference = taken.json()["booking_reference"]
    assert (
        await client.put(f"/api/bookings/{reference}/cancel/", headers=auth(second))
    ).status_code == 200
    assert (await book(client, third, event.id, (standard.id, 1))).status_code == 201

    await receiver.wait_for(6, timeout=5)
    await receiver.stays_at(6)
    assert Counter(types_of(receiver)) == {
        "booking.confirmed": 3,
        "booking.cancelled": 1,
        "event.sold_out": 2,
    }
    sold_out = [r.json()["data"] for r in receiver.requests if r.json()["type"] == "event.sold_out"]
    assert {(e["id"], e["status"], e["tickets_remaining"]) for e in sold_out} == {
        (event.id, "sold_out", 0)
    }


async def test_the_last_ticket_of_every_type_makes_the_event_sold_out(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, receiver: Receiver
) -> None:
    event, standard = await watched_event(
        client, db, organizer, receiver, total_capacity=100, quantity_available=2
    )
    assert (await book(client, attendee, event.id, (standard.id, 1))).status_code == 201
    assert (await book(client, attendee, event.id, (standard.id, 1))).status_code == 201
    await receiver.wait_for(3, timeout=5)
    await receiver.stays_at(3)
    assert sorted(types_of(receiver)) == [
        "booking.confirmed",
        "booking.confirmed",
        "event.sold_out",
    ]


async def test_bookings_of_other_organizers_events_are_not_sent(
    client: httpx.AsyncClient,
    db: Any,
    organizer: User,
    attendee: User,
    create_user,
    receiver: Receiver,
) -> None:
    await subscribe(client, organizer, receiver.url)
    other = await create_user("organizer")
    theirs = await make_event(db, other)
    standard = await make_ticket_type(db, theirs)
    assert (await book(client, attendee, theirs.id, (standard.id, 1))).status_code == 201
    await receiver.stays_at(0)
    assert await outbox(db) == [("email", "booking_confirmed")]


async def test_emails_are_stored_with_the_booking_even_without_webhooks(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, hooks_app: Any
) -> None:
    event = await make_event(db, organizer)
    standard = await make_ticket_type(db, event)
    assert (await book(client, attendee, event.id, (standard.id, 1))).status_code == 201
    assert await outbox(db) == [("email", "booking_confirmed")]
    await hooks_app.state.outbox.run_until_idle()
    async with db() as session:
        status = await session.scalar(text("SELECT status FROM outbox_messages"))
    assert status == "delivered"
    await asyncio.sleep(0)


async def test_taking_the_last_tickets_off_sale_or_lowering_the_capacity_sells_out(
    client: httpx.AsyncClient, db: Any, organizer: User, attendee: User, receiver: Receiver
) -> None:
    await subscribe(client, organizer, receiver.url)
    first = await make_event(db, organizer)
    standard = await make_ticket_type(db, first)
    off = await client.patch(
        f"/api/events/{first.id}/ticket-types/{standard.id}/",
        json={"is_active": False},
        headers=auth(organizer),
    )
    assert off.status_code == 200, off.text
    second = await make_event(db, organizer, total_capacity=10)
    other = await make_ticket_type(db, second)
    assert (await book(client, attendee, second.id, (other.id, 2))).status_code == 201
    lowered = await client.patch(
        f"/api/events/{second.id}/", json={"total_capacity": 2}, headers=auth(organizer)
    )
    assert lowered.status_code == 200 and lowered.json()["status"] == "sold_out"
    unchanged = await client.patch(
        f"/api/events/{second.id}/", json={"name": "Still sold out"}, headers=auth(organizer)
    )
    assert unchanged.status_code == 200

    await receiver.wait_for(3, timeout=5)
    await receiver.stays_at(3)
    sold_out = [r.json()["data"] for r in receiver.requests if r.json()["type"] == "event.sold_out"]
    assert sorted(e["id"] for e in sold_out) == [first.id, second.id]


async def test_an_expired_hold_sends_hold_expired_and_its_tickets_offered_send_waitlist_offered(
    client: httpx.AsyncClient,
    db: Any,
    organizer: User,
    attendee: User,
    create_user,
    receiver: Receiver,
    hooks_app: Any,
) -> None:
    from app.holds.maintenance import sweep_expired_holds

    response = await client.post(
        "/api/webhooks/",
        json={"url": receiver.url, "event_types": ["hold.expired", "waitlist.offered"]},
        headers=auth(organizer),
    )
    assert response.status_code == 201
    event = await make_event(db, organizer)
    standard = await make_ticket_type(db, event, quantity_available=4)
    body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 4}]}
    held = await client.post("/api/holds/", json=body, headers=auth(attendee))
    assert held.status_code == 201, held.text
    waiting = await create_user("attendee")
    joined = await client.post(
        f"/api/events/{event.id}/waitlist/",
        json={"ticket_type_id": standard.id, "quantity": 2},
        headers=auth(waiting),
    )
    assert joined.status_code == 201, joined.text
    await receiver.stays_at(0, 0.3)

    async with db() as session:
        await session.execute(text("UPDATE holds SET expires_at = now() - interval '1 second'"))
        await session.commit()
    await sweep_expired_holds(hooks_app.state.sessionmaker, hooks_app.state.settings)

    requests = await receiver.wait_for(2, timeout=5)
    by_type = {r.json()["type"]: r.json()["data"] for r in requests}
    expired = by_type["hold.expired"]
    assert expired["hold_reference"] == held.json()["hold_reference"]
    assert expired["status"] == "expired" and expired["items"][0]["quantity"] == 4
    offered = by_type["waitlist.offered"]
    assert offered["id"] == joined.json()["id"] and offered["status"] == "offered"
    assert offered["hold_reference"] is not None and offered["quantity"] == 2
    await receiver.stays_at(2)
    emails = [t for c, t in await outbox(db) if c == "email"]
    assert emails == ["waitlist_offered"]
