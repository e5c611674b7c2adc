"""Events: create, retrieve, update, cancel and delete, with roles and ownership."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select, text, update

from app.bookings.models import Booking
from app.events.models import Event, TicketType
from tests.factories import auth, make_booking, make_event, make_ticket_type


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def event_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "PyCon Berlin",
        "description": "Talks and sprints.",
        "location": "Berlin",
        "start_time": iso(timedelta(days=30)),
        "end_time": iso(timedelta(days=32)),
        "total_capacity": 500,
    }
    body.update(overrides)
    return body


def fields_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_error"
    return [e["field"] for e in body["errors"]]


# --- create ---------------------------------------------------------------


async def test_organizer_creates_event_and_is_its_organizer(client, organizer) -> None:
    r = await client.post("/api/events/", json=event_body(), headers=auth(organizer))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {
        "id", "organizer", "name", "description", "location", "start_time", "end_time",
        "total_capacity", "tickets_sold", "tickets_held", "tickets_remaining", "status",
        "created_at", "updated_at",
    }  # fmt: skip
    assert body["organizer"] == {"id": organizer.id, "username": organizer.username}
    assert body["tickets_sold"] == 0 and body["tickets_remaining"] == 500
    assert body["status"] == "upcoming"
    assert body["description"] == "Talks and sprints."
    for key in ("start_time", "end_time", "created_at", "updated_at"):
        assert body[key].endswith("+00:00"), body[key]


async def test_create_without_trailing_slash_and_description_defaults_to_empty(
    client, organizer
) -> None:
    body = event_body()
    del body["description"], body["end_time"]
    r = await client.post("/api/events", json=body, headers=auth(organizer))
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "" and r.json()["end_time"] is None


async def test_offsets_are_converted_to_utc(client, organizer) -> None:
    r = await client.post(
        "/api/events/",
        json=event_body(start_time="2031-05-17T09:00:00+02:00", end_time=None),
        headers=auth(organizer),
    )
    assert r.status_code == 201
    assert r.json()["start_time"] == "2031-05-17T07:00:00+00:00"


async def test_attendee_cannot_create_event(client, attendee) -> None:
    r = await client.post("/api/events/", json=event_body(), headers=auth(attendee))
    assert r.status_code == 403
    assert r.json()["code"] == "permission_denied"


async def test_anonymous_cannot_create_event(client) -> None:
    r = await client.post("/api/events/", json=event_body())
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start_time": iso(timedelta(days=-1)), "end_time": None}, "body.start_time"),
        ({"start_time": "2031-01-01T10:00:00"}, "body.start_time"),
        ({"end_time": "2031-01-01T10:00:00"}, "body.end_time"),
        ({"end_time": iso(timedelta(days=29))}, "body.end_time"),
        ({"total_capacity": 0}, "body.total_capacity"),
        ({"total_capacity": "many"}, "body.total_capacity"),
        ({"name": ""}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"name": "x" * 256}, "body.name"),
        ({"location": ""}, "body.location"),
        ({"location": "x" * 256}, "body.location"),
    ],
)
async def test_invalid_event_is_422_with_field(client, organizer, overrides, field) -> None:
    r = await client.post("/api/events/", json=event_body(**overrides), headers=auth(organizer))
    assert fields_of(r) == [field]


async def test_end_time_equal_to_start_is_rejected(client, organizer) -> None:
    start = iso(timedelta(days=3))
    r = await client.post(
        "/api/events/", json=event_body(start_time=start, end_time=start), headers=auth(organizer)
    )
    assert fields_of(r) == ["body.end_time"]


async def test_missing_fields_and_non_json_body_are_422(client, organizer) -> None:
    r = await client.post("/api/events/", json={}, headers=auth(organizer))
    assert set(fields_of(r)) == {
        "body.name", "body.location", "body.start_time", "body.total_capacity"
    }  # fmt: skip
    r = await client.post(
        "/api/events/",
        content=b"not json",
        headers={**auth(organizer), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


async def test_unknown_fields_are_ignored(client, organizer) -> None:
    r = await client.post(
        "/api/events/",
        json=event_body(tickets_sold=400, organizer=99, status="past"),
        headers=auth(organizer),
    )
    assert r.status_code == 201
    assert r.json()["tickets_sold"] == 0 and r.json()["status"] == "upcoming"
    assert r.json()["organizer"]["id"] == organizer.id


# --- retrieve -------------------------------------------------------------


async def test_detail_has_ticket_types_by_price_then_id(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    late = await make_ticket_type(db, event, name="B", price=Decimal("10.00"))
    vip = await make_ticket_type(db, event, name="VIP", price=Decimal("99.90"))
    early = await make_ticket_type(db, event, name="A", price=Decimal("10.00"))
    free = await make_ticket_type(db, event, name="Free", price=Decimal("0"), is_active=False)
    for path in (f"/api/events/{event.id}", f"/api/events/{event.id}/"):
        r = await client.get(path)
        assert r.status_code == 200
        body = r.json()
        assert [t["id"] for t in body["ticket_types"]] == [free.id, late.id, early.id, vip.id]
        assert [t["price"] for t in body["ticket_types"]] == ["0.00", "10.00", "10.00", "99.90"]
        assert body["organizer"]["username"] == organizer.username


async def test_unknown_event_is_404_and_non_integer_id_is_422(client) -> None:
    for path in ("/api/events/999999/", "/api/events/-1", "/api/events/99999999999999999999/"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "not_found"
    assert fields_of(await client.get("/api/events/abc/")) == ["path.event_id"]


# --- update ---------------------------------------------------------------


async def test_owner_updates_only_the_fields_sent(client, db, organizer) -> None:
    event = await make_event(db, organizer, name="Old", location="Paris", description="d")
    r = await client.patch(
        f"/api/events/{event.id}/",
        json={"name": "New", "total_capacity": 20},
        headers=auth(organizer),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "New" and body["total_capacity"] == 20
    assert body["location"] == "Paris" and body["description"] == "d"
    assert body["tickets_remaining"] == 20
    assert body["updated_at"] > body["created_at"]
    async with db() as session:
        stored = await session.get(Event, event.id)
        assert stored is not None and stored.name == "New" and stored.total_capacity == 20


async def test_patch_without_trailing_slash(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    r = await client.patch(
        f"/api/events/{event.id}", json={"location": "Rome"}, headers=auth(organizer)
    )
    assert r.status_code == 200 and r.json()["location"] == "Rome"


async def test_end_time_can_be_cleared_but_name_cannot_be_null(client, db, organizer) -> None:
    start = datetime.now(UTC) + timedelta(days=5)
    event = await make_event(db, organizer, start_time=start, end_time=start + timedelta(hours=2))
    r = await client.patch(
        f"/api/events/{event.id}/", json={"end_time": None}, headers=auth(organizer)
    )
    assert r.status_code == 200 and r.json()["end_time"] is None
    r = await client.patch(f"/api/events/{event.id}/", json={"name": None}, headers=auth(organizer))
    assert fields_of(r) == ["body.name"]


async def test_patch_end_time_before_stored_start_is_422(client, db, organizer) -> None:
    start = datetime.now(UTC) + timedelta(days=5)
    event = await make_event(db, organizer, start_time=start)
    r = await client.patch(
        f"/api/events/{event.id}/",
        json={"end_time": (start - timedelta(hours=1)).isoformat()},
        headers=auth(organizer),
    )
    assert fields_of(r) == ["body.end_time"]
    event2 = await make_event(db, organizer, start_time=start, end_time=start + timedelta(hours=1))
    r = await client.patch(
        f"/api/events/{event2.id}/",
        json={"start_time": (start + timedelta(days=1)).isoformat()},
        headers=auth(organizer),
    )
    assert fields_of(r) == ["body.start_time"]


async def test_patch_start_time_in_past_or_naive_is_422(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    for value in (iso(timedelta(hours=-1)), "2031-01-01T10:00:00"):
        r = await client.patch(
            f"/api/events/{event.id}/", json={"start_time": value}, headers=auth(organizer)
        )
        assert fields_of(r) == ["body.start_time"]


async def test_non_owner_cannot_update_or_delete(client, db, organizer, create_user) -> None:
    event = await make_event(db, organizer)
    other = await create_user("organizer")
    attendee = await create_user("attendee")
    for user in (other, attendee):
        r = await client.patch(
            f"/api/events/{event.id}/", json={"name": "Mine"}, headers=auth(user)
        )
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        r = await client.delete(f"/api/events/{event.id}/", headers=auth(user))
        assert r.status_code == 403
    r = await client.patch(f"/api/events/{event.id}/", json={"name": "Mine"})
    assert r.status_code == 401
    async with db() as session:
        stored = await session.get(Event, event.id)
        assert stored is not None and stored.name == event.name


async def test_update_or_delete_unknown_event_is_404(client, organizer) -> None:
    r = await client.patch("/api/events/4242/", json={"name": "x"}, headers=auth(organizer))
    assert r.status_code == 404
    r = await client.delete("/api/events/4242/", headers=auth(organizer))
    assert r.status_code == 404


@pytest.mark.parametrize("value", ["upcoming", "past", "sold_out", "CANCELLED", None, 1])
async def test_status_can_only_be_set_to_cancelled(client, db, organizer, value) -> None:
    event = await make_event(db, organizer)
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": value}, headers=auth(organizer)
    )
    assert fields_of(r) == ["body.status"]


async def test_cancel_sets_status_and_blocks_further_changes(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    async with db() as session:
        stored = await session.get(Event, event.id)
        assert stored is not None and stored.cancelled_at is not None
    for body in ({"name": "Back"}, {"status": "cancelled"}, {}):
        r = await client.patch(f"/api/events/{event.id}/", json=body, headers=auth(organizer))
        assert r.status_code == 409, body
        assert r.json()["code"] == "event_not_bookable"
    r = await client.get(f"/api/events/{event.id}/")
    assert r.json()["status"] == "cancelled"


async def test_cancel_cancels_confirmed_bookings_and_releases_tickets(
    client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer, total_capacity=10)
    vip = await make_ticket_type(db, event, name="VIP", quantity_available=5)
    first = await make_booking(db, event, vip, attendee, 2)
    second = await make_booking(db, event, vip, attendee, 1)
    r = await client.get(f"/api/events/{event.id}/")
    assert r.json()["tickets_sold"] == 3
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200
    assert r.json()["tickets_sold"] == 0 and r.json()["tickets_remaining"] == 10
    async with db() as session:
        statuses = (
            await session.execute(
                select(Booking.id, Booking.status, Booking.cancelled_at).order_by(Booking.id)
            )
        ).all()
        assert [(b.id, b.status) for b in statuses] == [
            (first, "cancelled"),
            (second, "cancelled"),
        ]
        assert all(b.cancelled_at is not None for b in statuses)
        tt = await session.get(TicketType, vip.id)
        assert tt is not None and (tt.quantity_available, tt.quantity_sold) == (5, 0)


async def test_capacity_below_sold_is_409(client, db, organizer) -> None:
    event = await make_event(db, organizer, total_capacity=10)
    async with db() as session:
        await session.execute(update(Event).where(Event.id == event.id).values(tickets_sold=6))
        await session.commit()
    r = await client.patch(
        f"/api/events/{event.id}/", json={"total_capacity": 5}, headers=auth(organizer)
    )
    assert r.status_code == 409 and r.json()["code"] == "capacity_below_sold"
    r = await client.patch(
        f"/api/events/{event.id}/", json={"total_capacity": 6}, headers=auth(organizer)
    )
    assert r.status_code == 200
    assert r.json()["tickets_remaining"] == 0 and r.json()["status"] == "sold_out"
    assert fields_of(
        await client.patch(
            f"/api/events/{event.id}/", json={"total_capacity": 0}, headers=auth(organizer)
        )
    ) == ["body.total_capacity"]


# --- delete ---------------------------------------------------------------


async def test_owner_deletes_event_without_bookings(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    await make_ticket_type(db, event)
    r = await client.delete(f"/api/events/{event.id}", headers=auth(organizer))
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"/api/events/{event.id}/")).status_code == 404
    async with db() as session:
        assert await session.scalar(text("SELECT count(*) FROM ticket_types")) == 0


async def test_delete_with_confirmed_bookings_is_409_until_cancelled(
    client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event)
    await make_booking(db, event, tt, attendee, 1)
    r = await client.delete(f"/api/events/{event.id}/", headers=auth(organizer))
    assert r.status_code == 409 and r.json()["code"] == "event_has_bookings"
    assert (await client.get(f"/api/events/{event.id}/")).status_code == 200
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200
    r = await client.delete(f"/api/events/{event.id}/", headers=auth(organizer))
    assert r.status_code == 204


async def test_concurrent_cancels_cancel_once(client, db, organizer, attendee) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event, quantity_available=5)
    await make_booking(db, event, tt, attendee, 2)
    responses = await asyncio.gather(
        *(
            client.patch(
                f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
            )
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
    async with db() as session:
        stored = await session.get(TicketType, tt.id)
        assert stored is not None and (stored.quantity_available, stored.quantity_sold) == (5, 0)
        stored_event = await session.get(Event, event.id)
        assert stored_event is not None and stored_event.tickets_sold == 0


async def test_cancel_returns_the_cancelled_booking_ids_for_notification(
    db, organizer, attendee
) -> None:
    from app.core.db import UnitOfWork
    from app.events import service
    from app.events.schemas import EventUpdate

    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event)
    ids = [await make_booking(db, event, tt, attendee, 1) for _ in range(3)]
    change = await service.update_event(UnitOfWork(db), event.id, EventUpdate(status="cancelled"))
    assert sorted(change.cancelled_booking_ids) == ids
    assert change.row.status == "cancelled"
