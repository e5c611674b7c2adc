"""Console actions racing the API on a real server with two worker processes.

A staff cancel goes through the same locked transaction as the attendee's own
cancel, so of a console cancel and an API cancel of one booking exactly one wins,
the tickets come back once, and the audit log holds exactly the console's wins.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.booking_setup import check_invariants
from tests.console import csrf_from, sign_in
from tests.factories import (
    auth,
    book,
    confirmed_booking,
    make_event,
    make_ticket_type,
    storm_client,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

BOOKINGS = 30


@pytest.fixture
async def http(live_server: str) -> Any:
    async with storm_client(live_server) as c:
        yield c


async def _console(live_server: str, username: str) -> httpx.AsyncClient:
    """A signed-in console client of its own (its own session cookie)."""
    client = httpx.AsyncClient(base_url=live_server, timeout=60)
    r = await sign_in(client, username)
    assert r.status_code == 302, r.text
    return client


async def _book_all(http: httpx.AsyncClient, attendees: list[Any], event: Any, tt: Any) -> list:
    bookings = (confirmed_booking(http, a, event.id, (tt.id, 2)) for a in attendees)
    return list(await asyncio.gather(*bookings))


async def _ids(db: Any, references: list[str]) -> dict[str, int]:
    async with db() as session:
        rows = await session.execute(text("SELECT booking_reference::text, id FROM bookings"))
        found = dict(rows.all())
    return {ref: found[ref] for ref in references}


async def test_console_and_api_cancels_of_the_same_bookings_release_tickets_once(
    http: httpx.AsyncClient, live_server: str, db: Any, create_user: Any, organizer: Any
) -> None:
    await create_user("organizer", username="desk1", is_staff=True)
    await create_user("organizer", username="desk2", is_staff=True)
    attendees = [await create_user("attendee") for _ in range(BOOKINGS)]
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=200)
    bookings = await _book_all(http, attendees, event, tt)
    owners = {b["booking_reference"]: a for b, a in zip(bookings, attendees, strict=True)}
    ids = await _ids(db, list(owners))

    desks = [await _console(live_server, "desk1"), await _console(live_server, "desk2")]
    try:
        tokens = [
            csrf_from((await d.get("/admin/booking/action/cancel", params={"pks": "1"})).text)
            for d in desks
        ]

        async def console_cancel(desk: int, reference: str) -> httpx.Response:
            return await desks[desk].post(
                "/admin/booking/cancel",
                data={"pks": str(ids[reference]), "csrf_token": tokens[desk]},
            )

        async def api_cancel(reference: str) -> httpx.Response:
            return await http.put(
                f"/api/bookings/{reference}/cancel/", headers=auth(owners[reference])
            )

        # Each booking: two staff members and its attendee cancel it at the same moment.
        calls = []
        for reference in owners:
            calls += [
                console_cancel(0, reference),
                console_cancel(1, reference),
                api_cancel(reference),
            ]
        responses = await asyncio.gather(*calls)
    finally:
        for d in desks:
            await d.aclose()

    assert all(r.status_code < 500 for r in responses), Counter(r.status_code for r in responses)
    api = Counter(r.status_code for r in responses[2::3])
    assert set(api) <= {200, 409}, api
    assert {r.json()["code"] for r in responses[2::3] if r.status_code == 409} <= {
        "already_cancelled"
    }
    async with db() as session:
        audited = (
            await session.execute(
                text(
                    "SELECT object_id, count(*) FROM audit_log "
                    "WHERE action = 'cancel_booking' GROUP BY object_id"
                )
            )
        ).all()
        statuses = Counter(
            (await session.execute(text("SELECT status FROM bookings"))).scalars().all()
        )
        counters = (
            await session.execute(
                text(
                    "SELECT e.tickets_sold, t.quantity_available, t.quantity_sold "
                    "FROM events e JOIN ticket_types t ON t.event_id = e.id WHERE e.id = :id"
                ),
                {"id": event.id},
            )
        ).one()
    # Exactly one winner per booking: the API's 200s plus the console's audited cancels.
    assert all(count == 1 for _, count in audited), audited
    assert api[200] + len(audited) == BOOKINGS, (api, len(audited))
    assert {ref for ref, _ in audited}.isdisjoint(
        r.json()["booking_reference"] for r in responses[2::3] if r.status_code == 200
    )
    assert statuses == {"cancelled": BOOKINGS}
    assert tuple(counters) == (0, 200, 0)
    await check_invariants(db, {tt.id: 200})


async def test_console_event_cancel_racing_api_cancels_and_bookings_stays_exact(
    http: httpx.AsyncClient, live_server: str, db: Any, create_user: Any, organizer: Any
) -> None:
    await create_user("organizer", username="desk3", is_staff=True)
    attendees = [await create_user("attendee") for _ in range(BOOKINGS)]
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=500)
    bookings = await _book_all(http, attendees[:20], event, tt)

    desk = await _console(live_server, "desk3")
    try:
        page = await desk.get("/admin/event/action/cancel", params={"pks": str(event.id)})
        token = csrf_from(page.text)
        calls = [desk.post("/admin/event/cancel", data={"pks": str(event.id), "csrf_token": token})]
        calls += [
            http.put(f"/api/bookings/{b['booking_reference']}/cancel/", headers=auth(a))
            for b, a in zip(bookings, attendees[:20], strict=True)
        ]
        calls += [book(http, a, event.id, (tt.id, 1)) for a in attendees[20:]]
        responses = await asyncio.gather(*calls)
    finally:
        await desk.aclose()

    assert all(r.status_code < 500 for r in responses)
    assert responses[0].status_code == 303
    async with db() as session:
        event_row = (
            await session.execute(
                text("SELECT cancelled_at, tickets_sold FROM events WHERE id = :id"),
                {"id": event.id},
            )
        ).one()
        confirmed = await session.scalar(
            text("SELECT count(*) FROM bookings WHERE status = 'confirmed'")
        )
        (after,) = (
            (
                await session.execute(
                    text("SELECT after FROM audit_log WHERE action = 'cancel_event'")
                )
            )
            .scalars()
            .all()
        )
    assert event_row.cancelled_at is not None
    assert event_row.tickets_sold == 0 and confirmed == 0
    assert after["status"] == "cancelled" and after["tickets_sold"] == 0
    late = [r for r in responses[21:] if r.status_code != 201]
    assert all(r.json()["code"] == "event_not_bookable" for r in late)
    await check_invariants(db, {tt.id: 500})
