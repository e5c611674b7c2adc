"""The door list: GET /api/events/{id}/bookings/export for the organizer, and from the console."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bookings.door_list import BATCH_ROWS, COLUMNS
from tests.console import sign_in
from tests.factories import auth, make_event, make_ticket_type

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _rows(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body)))


@pytest.fixture
async def event_with_bookings(
    client: httpx.AsyncClient,
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> dict[str, Any]:
    organizer = await create_user("organizer")
    ann = await create_user("attendee", username="ann")
    bob = await create_user("attendee", username="bob")
    event = await make_event(db, organizer)
    standard = await make_ticket_type(db, event, name="Standard")
    vip = await make_ticket_type(db, event, name="=HYPERLINK(1)")
    refs = []
    for attendee, items in ((ann, [(standard.id, 2), (vip.id, 1)]), (bob, [(standard.id, 1)])):
        r = await client.post(
            "/api/bookings/",
            headers=auth(attendee),
            json={
                "event_id": event.id,
                "items": [{"ticket_type_id": t, "quantity": q} for t, q in items],
            },
        )
        assert r.status_code == 201, r.text
        refs.append(r.json()["booking_reference"])
    cancel = await client.put(f"/api/bookings/{refs[1]}/cancel/", headers=auth(bob))
    assert cancel.status_code == 200
    return {"organizer": organizer, "event": event, "refs": refs, "ann": ann}


async def test_organizer_downloads_the_door_list_as_csv(
    client: httpx.AsyncClient, event_with_bookings: dict[str, Any]
) -> None:
    event, (ann_ref, bob_ref) = event_with_bookings["event"], event_with_bookings["refs"]
    r = await client.get(
        f"/api/events/{event.id}/bookings/export/", headers=auth(event_with_bookings["organizer"])
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="event-{event.id}-door-list.csv"'
    )
    rows = _rows(r.text)
    assert rows[0] == list(COLUMNS)
    body = [row[:5] for row in rows[1:]]
    assert body == [
        [ann_ref, "ann", "Standard", "2", "confirmed"],
        [ann_ref, "ann", "'=HYPERLINK(1)", "1", "confirmed"],  # never a formula
        [bob_ref, "bob", "Standard", "1", "cancelled"],
    ]
    assert all(row[5].endswith("+00:00") for row in rows[1:])


async def test_door_list_is_the_organizers_only(
    client: httpx.AsyncClient,
    event_with_bookings: dict[str, Any],
    create_user: Callable[..., Any],
) -> None:
    event = event_with_bookings["event"]
    path = f"/api/events/{event.id}/bookings/export"
    other = await create_user("organizer")
    for headers, status, code in (
        ({}, 401, "not_authenticated"),
        (auth(other), 403, "permission_denied"),
        (auth(event_with_bookings["ann"]), 403, "permission_denied"),
    ):
        r = await client.get(path, headers=headers)
        assert r.status_code == status and r.json()["code"] == code
        assert r.headers["content-type"] == "application/problem+json"
    missing = await client.get(
        "/api/events/999999/bookings/export", headers=auth(event_with_bookings["organizer"])
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_door_list_is_streamed_in_batches(
    app: Any,
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> None:
    organizer = await create_user("organizer")
    attendee = await create_user("attendee")
    event = await make_event(db, organizer, total_capacity=10_000)
    tt = await make_ticket_type(db, event, quantity_available=10_000)
    lines = BATCH_ROWS * 5 + 3
    async with db() as session:
        await session.execute(
            text(
                "WITH b AS (INSERT INTO bookings (user_id, event_id, status, total_price) "
                "SELECT :u, :e, 'confirmed', 25 FROM generate_series(1, :n) RETURNING id) "
                "INSERT INTO booking_items "
                "(booking_id, ticket_type_id, quantity, price_at_booking) "
                "SELECT id, :t, 1, 25 FROM b"
            ),
            {"u": attendee.id, "e": event.id, "t": tt.id, "n": lines},
        )
        await session.commit()
    # At the ASGI level, where each body message the app sends is visible.
    token = auth(organizer)["Authorization"].encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/events/{event.id}/bookings/export",
        "raw_path": f"/api/events/{event.id}/bookings/export".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", token)],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []

    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    assert start["status"] == 200
    assert b"content-length" not in dict(start["headers"])
    chunks = [m["body"].decode() for m in messages[1:] if m.get("body")]
    assert len(chunks) >= 6  # the header, then one chunk per batch of rows
    assert len(_rows("".join(chunks))) == lines + 1


async def test_staff_export_the_same_door_list_from_the_console_and_it_is_audited(
    client: httpx.AsyncClient,
    event_with_bookings: dict[str, Any],
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> None:
    event = event_with_bookings["event"]
    api = await client.get(
        f"/api/events/{event.id}/bookings/export", headers=auth(event_with_bookings["organizer"])
    )
    await create_user("organizer", username="desk", is_staff=True)
    assert (await sign_in(client, "desk")).status_code == 302
    details = await client.get(f"/admin/event/details/{event.id}")
    assert "Export door list (CSV)" in details.text
    r = await client.get("/admin/event/action/door-list", params={"pks": str(event.id)})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.text == api.text
    async with db() as session:
        logged = (
            await session.execute(
                text("SELECT actor_username, object_id FROM audit_log WHERE action = :a"),
                {"a": "export_door_list"},
            )
        ).all()
    assert [tuple(row) for row in logged] == [("desk", str(event.id))]
    unknown = await client.get("/admin/event/action/door-list", params={"pks": "999999"})
    assert unknown.status_code == 303
