"""Ticket types: list by price, create and update by the event's organizer, unique names."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import update

from app.events.models import Event, TicketType
from tests.factories import auth, make_event, make_ticket_type


def error_fields(response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"
    return [e["field"] for e in response.json()["errors"]]


def body(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {"name": "VIP", "price": "25.00", "quantity_available": 10}
    values.update(overrides)
    return values


async def test_list_is_ordered_by_price_and_not_paginated(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    other = await make_event(db, organizer)
    await make_ticket_type(db, other, name="elsewhere")
    for i, price in enumerate(["30", "5.5", "100", "0", "5.5"] * 3):
        await make_ticket_type(db, event, name=f"t{i}", price=Decimal(price))
    for path in (f"/api/events/{event.id}/ticket-types/", f"/api/events/{event.id}/ticket-types"):
        r = await client.get(path)
        assert r.status_code == 200
        items = r.json()
        assert isinstance(items, list) and len(items) == 15
        prices = [Decimal(t["price"]) for t in items]
        assert prices == sorted(prices)
        assert items[0]["price"] == "0.00"
        assert {t["event_id"] for t in items} == {event.id}


async def test_list_of_unknown_event_is_404(client) -> None:
    r = await client.get("/api/events/777/ticket-types/")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert error_fields(await client.get("/api/events/x/ticket-types/")) == ["path.event_id"]


async def test_owner_creates_ticket_type(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    r = await client.post(
        f"/api/events/{event.id}/ticket-types/",
        json=body(description="Front rows", price=25.5),
        headers=auth(organizer),
    )
    assert r.status_code == 201, r.text
    tt = r.json()
    assert set(tt) == {
        "id", "event_id", "name", "description", "price", "quantity_available",
        "quantity_sold", "quantity_held", "is_active", "created_at", "updated_at",
    }  # fmt: skip
    assert tt["event_id"] == event.id and tt["price"] == "25.50"
    assert tt["quantity_available"] == 10 and tt["quantity_sold"] == 0
    assert tt["is_active"] is True and tt["description"] == "Front rows"
    assert tt["created_at"].endswith("+00:00")
    async with db() as session:
        stored = await session.get(TicketType, tt["id"])
        assert stored is not None and stored.price == Decimal("25.50")


@pytest.mark.parametrize("price", ["0", 0, "12.3", 12.3, "99999999.99", 7])
async def test_price_accepts_numbers_and_strings(client, db, organizer, price) -> None:
    event = await make_event(db, organizer)
    r = await client.post(
        f"/api/events/{event.id}/ticket-types",
        json=body(price=price),
        headers=auth(organizer),
    )
    assert r.status_code == 201, r.text
    assert r.json()["price"] == f"{Decimal(str(price)):.2f}"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": "-1"}, "body.price"),
        ({"price": -0.01}, "body.price"),
        ({"price": "1.234"}, "body.price"),
        ({"price": 1.999}, "body.price"),
        ({"price": "abc"}, "body.price"),
        ({"price": "NaN"}, "body.price"),
        ({"price": "1000000000"}, "body.price"),
        ({"quantity_available": 0}, "body.quantity_available"),
        ({"quantity_available": -3}, "body.quantity_available"),
        ({"name": ""}, "body.name"),
        ({"name": "x" * 101}, "body.name"),
    ],
)
async def test_invalid_ticket_type_is_422(client, db, organizer, overrides, field) -> None:
    event = await make_event(db, organizer)
    r = await client.post(
        f"/api/events/{event.id}/ticket-types/", json=body(**overrides), headers=auth(organizer)
    )
    assert error_fields(r) == [field]


async def test_duplicate_name_is_409_case_insensitively(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    other = await make_event(db, organizer)
    url = f"/api/events/{event.id}/ticket-types/"
    assert (
        await client.post(url, json=body(name="VIP"), headers=auth(organizer))
    ).status_code == 201
    r = await client.post(url, json=body(name="vip"), headers=auth(organizer))
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_name_taken"
    # Another event may use the same name.
    r = await client.post(
        f"/api/events/{other.id}/ticket-types/", json=body(name="Vip"), headers=auth(organizer)
    )
    assert r.status_code == 201
    r = await client.get(url)
    assert [t["name"] for t in r.json()] == ["VIP"]


async def test_only_the_owner_creates_ticket_types(client, db, organizer, create_user) -> None:
    event = await make_event(db, organizer)
    url = f"/api/events/{event.id}/ticket-types/"
    for user in (await create_user("organizer"), await create_user("attendee")):
        r = await client.post(url, json=body(), headers=auth(user))
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    assert (await client.post(url, json=body())).status_code == 401
    r = await client.post("/api/events/9999/ticket-types/", json=body(), headers=auth(organizer))
    assert r.status_code == 404
    assert (await client.get(url)).json() == []


async def test_no_ticket_types_on_a_cancelled_event(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event)
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200
    r = await client.post(
        f"/api/events/{event.id}/ticket-types/", json=body(), headers=auth(organizer)
    )
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{tt.id}/", json={"price": 1}, headers=auth(organizer)
    )
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"


async def test_owner_updates_ticket_type(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event, name="Early", price=Decimal("10"))
    for path in (
        f"/api/events/{event.id}/ticket-types/{tt.id}/",
        f"/api/events/{event.id}/ticket-types/{tt.id}",
    ):
        r = await client.patch(
            path,
            json={"price": "12.50", "quantity_available": 0, "is_active": False},
            headers=auth(organizer),
        )
        assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["name"] == "Early" and updated["price"] == "12.50"
    assert updated["quantity_available"] == 0 and updated["is_active"] is False
    assert updated["updated_at"] > updated["created_at"]
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{tt.id}/",
        json={"name": "EARLY", "description": "First come"},
        headers=auth(organizer),
    )
    assert r.status_code == 200 and r.json()["name"] == "EARLY"
    async with db() as session:
        stored = await session.get(TicketType, tt.id)
        assert stored is not None
        assert (stored.name, stored.price, stored.is_active) == ("EARLY", Decimal("12.50"), False)


async def test_rename_to_a_taken_name_is_409(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    await make_ticket_type(db, event, name="VIP")
    tt = await make_ticket_type(db, event, name="Standard")
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{tt.id}/",
        json={"name": "vip"},
        headers=auth(organizer),
    )
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_name_taken"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quantity_available": -1}, "body.quantity_available"),
        ({"price": "-5"}, "body.price"),
        ({"price": "5.555"}, "body.price"),
        ({"name": None}, "body.name"),
        ({"is_active": None}, "body.is_active"),
        ({"name": ""}, "body.name"),
    ],
)
async def test_invalid_ticket_type_update_is_422(client, db, organizer, change, field) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event)
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{tt.id}/", json=change, headers=auth(organizer)
    )
    assert error_fields(r) == [field]


async def test_ticket_type_update_permissions_and_unknown_ids(
    client, db, organizer, create_user
) -> None:
    event = await make_event(db, organizer)
    other_event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event)
    foreign = await make_ticket_type(db, other_event)
    url = f"/api/events/{event.id}/ticket-types/{tt.id}/"
    other = await create_user("organizer")
    r = await client.patch(url, json={"price": 1}, headers=auth(other))
    assert r.status_code == 403
    assert (await client.patch(url, json={"price": 1})).status_code == 401
    for path in (
        f"/api/events/{event.id}/ticket-types/{foreign.id}/",
        f"/api/events/{event.id}/ticket-types/424242/",
        f"/api/events/424242/ticket-types/{tt.id}/",
    ):
        r = await client.patch(path, json={"price": 1}, headers=auth(organizer))
        assert r.status_code == 404, path
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/abc/", json={"price": 1}, headers=auth(organizer)
    )
    assert error_fields(r) == ["path.ticket_type_id"]
    async with db() as session:
        stored = await session.get(TicketType, tt.id)
        assert stored is not None and stored.price == Decimal("25.00")


async def test_quantity_available_update_reopens_a_sold_out_event(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    tt = await make_ticket_type(db, event, quantity_available=1)
    async with db() as session:
        await session.execute(
            update(TicketType)
            .where(TicketType.id == tt.id)
            .values(quantity_available=0, quantity_sold=1)
        )
        await session.execute(update(Event).where(Event.id == event.id).values(tickets_sold=1))
        await session.commit()
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "sold_out"
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{tt.id}/",
        json={"quantity_available": 5},
        headers=auth(organizer),
    )
    assert r.status_code == 200
    assert r.json()["quantity_available"] == 5 and r.json()["quantity_sold"] == 1
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "upcoming"
