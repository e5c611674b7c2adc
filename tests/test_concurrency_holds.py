"""Holds under many real concurrent clients, against the server with two worker processes.

After every storm the invariants are checked in SQL (tests.booking_setup): per ticket
type available + held + sold = what was issued, held = the tickets of active holds
(each counted once), per event sold + held <= capacity.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from sqlalchemy import text

from app.holds.maintenance import sweep_expired_holds
from tests.booking_setup import check_invariants
from tests.factories import auth, make_event, make_ticket_type, order, storm_client
from tests.hold_setup import type_counters

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def http(live_server):
    async with storm_client(live_server) as c:
        yield c


@pytest.fixture
async def attendees(create_user):
    return [await create_user("attendee") for _ in range(40)]


async def place(http, user, event_id, *items):
    r = await http.post("/api/holds/", json=order(event_id, *items), headers=auth(user))
    assert r.status_code == 201, r.text
    return r.json()["hold_reference"]


async def hold_statuses(db):
    async with db() as s:
        rows = await s.execute(text("SELECT hold_reference::text, status, booking_id FROM holds"))
        return {r.hold_reference: (r.status, r.booking_id) for r in rows}


async def set_deadline(db, refs, seconds):
    async with db() as s, s.begin():
        await s.execute(
            text(
                "UPDATE holds SET expires_at = now() + make_interval(secs => :s) "
                "WHERE hold_reference::text = ANY(:r)"
            ),
            {"s": seconds, "r": list(refs)},
        )


async def test_hold_storm_on_few_tickets_holds_exactly_what_exists(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=15)
    # Every attendee asks twice at once: one active hold each at most.
    requests = [(u, 1) for u in attendees] * 2
    random.Random(1).shuffle(requests)
    responses = await asyncio.gather(
        *(
            http.post("/api/holds/", json=order(event.id, (tt.id, q)), headers=auth(u))
            for u, q in requests
        )
    )
    counts = Counter(r.status_code for r in responses)
    assert counts[201] == 15 and set(counts) == {201, 409}, counts
    codes = {r.json()["code"] for r in responses if r.status_code == 409}
    assert codes <= {"sold_out", "hold_exists"}
    winners = Counter(
        u.id for (u, _), r in zip(requests, responses, strict=True) if r.status_code == 201
    )
    assert max(winners.values()) == 1
    assert await type_counters(db, tt.id) == {tt.id: (0, 15, 0)}
    await check_invariants(db, {tt.id: 15})


async def test_concurrent_checkouts_of_one_hold_make_one_booking(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=10)
    user = attendees[0]
    ref = await place(http, user, event.id, (tt.id, 3))
    responses = await asyncio.gather(
        *(http.post(f"/api/holds/{ref}/checkout/", json={}, headers=auth(user)) for _ in range(20))
    )
    counts = Counter(r.status_code for r in responses)
    assert counts == {201: 1, 200: 19}, counts
    assert len({r.json()["booking_reference"] for r in responses}) == 1
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 1
    assert await type_counters(db, tt.id) == {tt.id: (7, 0, 3)}
    await check_invariants(db, {tt.id: 10})


async def test_checkout_racing_delete_ends_each_hold_one_way(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=40)
    users = attendees[:12]
    refs = [await place(http, u, event.id, (tt.id, 2)) for u in users]
    requests = []
    for u, ref in zip(users, refs, strict=True):
        requests += [("POST", f"/api/holds/{ref}/checkout/", u, ref)] * 3
        requests += [("DELETE", f"/api/holds/{ref}/", u, ref)] * 3
    random.Random(2).shuffle(requests)
    responses = await asyncio.gather(
        *(
            http.request(m, p, headers=auth(u), json={} if m == "POST" else None)
            for m, p, u, _ in requests
        )
    )
    by_ref: dict[str, Counter] = {ref: Counter() for ref in refs}
    for (method, _, _, ref), r in zip(requests, responses, strict=True):
        code = r.json()["code"] if r.status_code == 409 else ""
        by_ref[ref][(method, r.status_code, code)] += 1
    statuses = await hold_statuses(db)
    converted = 0
    for ref, seen in by_ref.items():
        if statuses[ref][0] == "converted":
            converted += 1
            assert seen[("POST", 201, "")] == 1
            assert seen[("DELETE", 409, "hold_not_active")] == 3
        else:
            assert statuses[ref][0] == "released"
            assert seen[("DELETE", 204, "")] == 1
            assert seen[("DELETE", 409, "hold_not_active")] == 2
            assert seen[("POST", 409, "hold_not_active")] == 3, seen
    assert await type_counters(db, tt.id) == {tt.id: (40 - 2 * converted, 0, 2 * converted)}
    await check_invariants(db, {tt.id: 40})


async def test_checkout_racing_expiry_either_books_or_expires(
    http, db, settings, organizer, attendees
):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=30)
    users = attendees[:10]
    refs = [await place(http, u, event.id, (tt.id, 2)) for u in users]
    await set_deadline(db, refs, 1.0)
    rng = random.Random(3)

    async def keep_checking_out(user, ref):
        """Checkouts in a loop across the deadline, until the hold has ended one way."""
        await asyncio.sleep(rng.uniform(0.6, 1.0))
        seen = []
        while True:
            r = await http.post(f"/api/holds/{ref}/checkout/", json={}, headers=auth(user))
            seen.append(r.status_code if r.status_code != 409 else r.json()["code"])
            if r.status_code == 409 or len(seen) >= 3:
                return seen
            await asyncio.sleep(0.05)

    outcomes = await asyncio.gather(
        *(keep_checking_out(u, r) for u, r in zip(users, refs, strict=True))
    )
    await asyncio.sleep(0.1)
    await sweep_expired_holds(db, settings)
    statuses = await hold_statuses(db)
    sold = 0
    for ref, seen in zip(refs, outcomes, strict=True):
        assert set(seen) <= {201, 200, "hold_expired"}, seen
        if statuses[ref][0] == "converted":
            sold += 2
            assert seen[0] == 201 and "hold_expired" not in seen, seen
        else:
            assert statuses[ref][0] == "expired" and 201 not in seen, (statuses[ref], seen)
    assert await type_counters(db, tt.id) == {tt.id: (30 - sold, 0, sold)}
    await check_invariants(db, {tt.id: 30})


async def test_sweeper_racing_a_booking_that_releases_expired_holds(
    http, db, settings, organizer, attendees
):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=15)
    holders, bookers = attendees[:15], attendees[15:40]
    refs = [await place(http, u, event.id, (tt.id, 1)) for u in holders]
    await set_deadline(db, refs, -1)

    async def sweeps():
        for _ in range(5):
            await sweep_expired_holds(db, settings)
            await asyncio.sleep(0.01)

    results = await asyncio.gather(
        sweeps(),
        sweeps(),
        *(
            http.post("/api/bookings/", json=order(event.id, (tt.id, 1)), headers=auth(u))
            for u in bookers
        ),
    )
    responses = results[2:]
    counts = Counter(r.status_code for r in responses)
    assert counts == {201: 15, 409: 10}, counts
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold_out"}
    statuses = await hold_statuses(db)
    assert {s for s, _ in statuses.values()} == {"expired"}
    assert await type_counters(db, tt.id) == {tt.id: (0, 0, 15)}
    await check_invariants(db, {tt.id: 15})


async def test_event_cancel_during_a_hold_storm_releases_every_hold(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=100)
    requests = [("POST", "/api/holds/", order(event.id, (tt.id, 1)), auth(u)) for u in attendees]
    requests.insert(
        20, ("PATCH", f"/api/events/{event.id}/", {"status": "cancelled"}, auth(organizer))
    )
    responses = await asyncio.gather(
        *(http.request(m, p, json=b, headers=h) for m, p, b, h in requests)
    )
    assert responses[20].status_code == 200
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 201, 409}, codes
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {"event_not_bookable"}
    statuses = await hold_statuses(db)
    assert len(statuses) == codes.get(201, 0)
    assert {s for s, _ in statuses.values()} <= {"released"}
    assert await type_counters(db, tt.id) == {tt.id: (100, 0, 0)}
    await check_invariants(db, {tt.id: 100})


async def join_line(http, user, event_id, ticket_type_id, quantity):
    r = await http.post(
        f"/api/events/{event_id}/waitlist/",
        json={"ticket_type_id": ticket_type_id, "quantity": quantity},
        headers=auth(user),
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_cancellations_free_tickets_for_waiting_attendees_not_for_others(
    http, db, organizer, attendees
):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=12)
    owners, waiting, others = attendees[:6], attendees[6:14], attendees[14:40]
    refs = []
    for u in owners:
        r = await http.post("/api/bookings/", json=order(event.id, (tt.id, 2)), headers=auth(u))
        refs.append((u, r.json()["booking_reference"]))
    entries = [await join_line(http, u, event.id, tt.id, 1 + i % 2) for i, u in enumerate(waiting)]
    requests = [("PUT", f"/api/bookings/{ref}/cancel/", None, auth(u)) for u, ref in refs]
    requests += [("POST", "/api/bookings/", order(event.id, (tt.id, 1)), auth(u)) for u in others]
    random.Random(4).shuffle(requests)
    responses = await asyncio.gather(
        *(http.request(m, p, json=b, headers=h) for m, p, b, h in requests)
    )
    codes = Counter(r.status_code for r in responses)
    assert codes[200] == 6, codes
    # Everything that came back fits the line (12 tickets, 12 waited for): nobody
    # outside the line got any.
    assert codes.get(201, 0) == 0, codes
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold_out"}
    async with db() as s:
        line = (
            await s.execute(text("SELECT status, count(*) FROM waitlist_entries GROUP BY status"))
        ).all()
    assert dict(line) == {"offered": len(entries)}
    assert await type_counters(db, tt.id) == {tt.id: (0, 12, 0)}
    await check_invariants(db, {tt.id: 12})


async def test_event_cancel_with_active_holds_and_waiting_entries_racing_checkouts(
    http, db, organizer, attendees
):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=10)
    holders, waiting = attendees[:10], attendees[10:20]
    refs = [await place(http, u, event.id, (tt.id, 1)) for u in holders]
    entries = [await join_line(http, u, event.id, tt.id, 1) for u in waiting]
    requests = [
        ("POST", f"/api/holds/{ref}/checkout/", {}, auth(u))
        for u, ref in zip(holders, refs, strict=True)
    ]
    requests += [
        ("DELETE", f"/api/holds/{ref}/", None, auth(u))
        for u, ref in zip(holders[:3], refs[:3], strict=True)
    ]
    random.Random(6).shuffle(requests)
    requests.insert(
        6, ("PATCH", f"/api/events/{event.id}/", {"status": "cancelled"}, auth(organizer))
    )
    responses = await asyncio.gather(
        *(http.request(m, p, json=b, headers=h) for m, p, b, h in requests)
    )
    assert responses[6].status_code == 200
    assert {r.status_code for r in responses} <= {200, 201, 204, 409}
    conflicts = {r.json()["code"] for r in responses if r.status_code == 409}
    assert conflicts <= {"hold_not_active"}, conflicts
    statuses = Counter(s for s, _ in (await hold_statuses(db)).values())
    # Checked out before the cancellation (whose booking it then cancelled) or released.
    assert set(statuses) <= {"released", "converted"}, statuses
    assert statuses["converted"] == sum(r.status_code == 201 for r in responses)
    async with db() as s:
        confirmed = (
            await s.execute(text("SELECT count(*) FROM bookings WHERE status = 'confirmed'"))
        ).scalar_one()
        line = dict(
            (
                await s.execute(
                    text("SELECT status, count(*) FROM waitlist_entries GROUP BY status")
                )
            ).all()
        )
    assert confirmed == 0
    assert set(line) <= {"left"} and sum(line.values()) == len(entries)
    assert await type_counters(db, tt.id) == {tt.id: (10, 0, 0)}
    await check_invariants(db, {tt.id: 10})
