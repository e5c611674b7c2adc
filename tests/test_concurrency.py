"""Many real clients at once, against a real server with two worker processes.

After every storm the invariants are checked in SQL: nothing oversold, counters
exact, no 5xx, no deadlock leaking out.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx
import pytest
from sqlalchemy import text

from tests.booking_setup import check_invariants
from tests.factories import auth, make_event, make_ticket_type, order, storm_client

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def http(live_server):
    async with storm_client(live_server, connections=250) as c:
        yield c


@pytest.fixture
async def attendees(create_user):
    return [await create_user("attendee") for _ in range(25)]


def one_ticket_each(event, tt, attendees, n):
    """``n`` requests booking one ticket of ``tt``, from the attendees in turn."""
    return [
        ("POST", "/api/bookings/", order(event.id, (tt.id, 1)), auth(attendees[i % len(attendees)]))
        for i in range(n)
    ]


async def storm(http, requests):
    """Fire (method, url, json, headers) requests all at once; return the responses."""

    async def one(method, url, json, headers):
        return await http.request(method, url, json=json, headers=headers)

    return await asyncio.gather(*(one(*r) for r in requests))


def statuses(responses):
    return Counter(r.status_code for r in responses)


async def sold(db, event_id):
    async with db() as s:
        return (
            await s.execute(text("SELECT tickets_sold FROM events WHERE id=:i"), {"i": event_id})
        ).scalar_one()


async def test_200_clients_for_50_tickets_exactly_50_succeed(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=50)
    requests = one_ticket_each(event, tt, attendees, 200)
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert counts == {201: 50, 409: 150}, counts
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold_out"}
    assert await sold(db, event.id) == 50
    await check_invariants(db, {tt.id: 50})


async def test_two_types_share_one_event_capacity(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=60)
    a = await make_ticket_type(db, event.id, name="A", quantity_available=50)
    b = await make_ticket_type(db, event.id, name="B", quantity_available=50)
    rng = random.Random(7)
    requests = []
    for i in range(150):
        items = rng.choice([((a.id, 1),), ((b.id, 2),), ((a.id, 1), (b.id, 1))])
        requests.append(("POST", "/api/bookings", order(event.id, *items), auth(attendees[i % 25])))
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert set(counts) <= {201, 409}, counts
    assert await sold(db, event.id) == 60  # demand far exceeds capacity: it fills exactly
    codes = {r.json()["code"] for r in responses if r.status_code == 409}
    assert codes <= {"capacity_exceeded", "sold_out"}
    await check_invariants(db, {a.id: 50, b.id: 50})


async def test_opposite_item_orders_never_deadlock(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=10_000)
    a = await make_ticket_type(db, event.id, name="A", quantity_available=5000)
    b = await make_ticket_type(db, event.id, name="B", quantity_available=5000)
    requests = []
    for i in range(160):
        items = ((a.id, 1), (b.id, 1)) if i % 2 else ((b.id, 1), (a.id, 1))
        requests.append(
            ("POST", "/api/bookings/", order(event.id, *items), auth(attendees[i % 25]))
        )
    responses = await storm(http, requests)
    assert statuses(responses) == {201: 160}
    assert await sold(db, event.id) == 320
    await check_invariants(db, {a.id: 5000, b.id: 5000})


async def test_concurrent_double_cancel_releases_exactly_once(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=100)
    user = attendees[0]
    refs = []
    for _ in range(5):
        r = await http.post("/api/bookings/", json=order(event.id, (tt.id, 2)), headers=auth(user))
        refs.append(r.json()["booking_reference"])
    requests = [
        ("PUT", f"/api/bookings/{ref}/cancel/", None, auth(user)) for ref in refs for _ in range(8)
    ]
    random.Random(3).shuffle(requests)
    responses = await storm(http, requests)
    by_ref = {ref: Counter() for ref in refs}
    for req, resp in zip(requests, responses, strict=True):
        ref = req[1].split("/")[3]
        code = resp.json().get("code") if resp.status_code != 200 else "ok"
        by_ref[ref][(resp.status_code, code)] += 1
    for counter in by_ref.values():
        assert counter == {(200, "ok"): 1, (409, "already_cancelled"): 7}, counter
    assert await sold(db, event.id) == 0
    await check_invariants(db, {tt.id: 100})


async def test_cancels_interleaved_with_a_booking_storm(http, db, organizer, attendees):
    event = await make_event(db, organizer.id, total_capacity=40)
    tt = await make_ticket_type(db, event.id, quantity_available=40)
    first = []
    for i in range(20):
        r = await http.post(
            "/api/bookings/", json=order(event.id, (tt.id, 2)), headers=auth(attendees[i])
        )
        assert r.status_code == 201
        first.append((attendees[i], r.json()["booking_reference"]))
    requests = [("PUT", f"/api/bookings/{ref}/cancel", None, auth(u)) for u, ref in first[:10]]
    requests += one_ticket_each(event, tt, attendees, 60)
    random.Random(5).shuffle(requests)
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert set(counts) <= {200, 201, 409}, counts
    assert sum(r.status_code == 200 for r in responses) == 10
    booked = sum(r.status_code == 201 for r in responses)
    assert booked <= 20  # only released tickets could be sold
    assert await sold(db, event.id) == 40 - 20 + booked
    await check_invariants(db, {tt.id: 40})


async def test_one_idempotency_key_many_concurrent_requests_one_booking(
    http, db, organizer, attendees
):
    event = await make_event(db, organizer.id, total_capacity=100)
    tt = await make_ticket_type(db, event.id, quantity_available=100)
    headers = {**auth(attendees[0]), "Idempotency-Key": "checkout-42"}
    requests = [("POST", "/api/bookings/", order(event.id, (tt.id, 3)), headers)] * 30
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert set(counts) <= {201, 409}, counts
    refs = {r.json()["booking_reference"] for r in responses if r.status_code == 201}
    assert len(refs) == 1
    conflicts = {r.json()["code"] for r in responses if r.status_code == 409}
    assert conflicts <= {"idempotency_key_in_use"}
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 1
    assert await sold(db, event.id) == 3
    await check_invariants(db, {tt.id: 100})


async def test_in_process_storm_with_asyncio_tasks(client, db, organizer, attendees):
    """The same guarantee with the in-process app and 100 concurrent tasks."""
    event = await make_event(db, organizer.id, total_capacity=30)
    tt = await make_ticket_type(db, event.id, quantity_available=100)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/bookings/", json=order(event.id, (tt.id, 1)), headers=auth(attendees[i % 25])
            )
            for i in range(100)
        )
    )
    counts = statuses(responses)
    assert counts == {201: 30, 409: 70}, counts
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"capacity_exceeded"}
    await check_invariants(db, {tt.id: 100})


async def test_threads_with_blocking_clients_never_oversell(live_server, db, organizer, attendees):
    """Plain threads with blocking clients (how many load-test scripts are written)."""
    from concurrent.futures import ThreadPoolExecutor

    event = await make_event(db, organizer.id, total_capacity=500)
    tt = await make_ticket_type(db, event.id, quantity_available=25)

    def worker(n: int) -> list[int]:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return [
                c.post(
                    "/api/bookings/", json=order(event.id, (tt.id, 1)), headers=auth(attendees[n])
                ).status_code
                for _ in range(4)
            ]

    def run_threads() -> list[int]:
        with ThreadPoolExecutor(max_workers=20) as pool:
            return [code for codes in pool.map(worker, range(20)) for code in codes]

    codes = Counter(await asyncio.to_thread(run_threads))
    assert codes == {201: 25, 409: 55}, codes
    await check_invariants(db, {tt.id: 25})


async def test_event_cancel_during_a_booking_storm(http, db, organizer, attendees):
    """Each booking either lands before the cancel (and is cancelled by it) or is refused."""
    event = await make_event(db, organizer.id, total_capacity=1000)
    tt = await make_ticket_type(db, event.id, quantity_available=1000)
    requests = one_ticket_each(event, tt, attendees, 120)
    requests.insert(
        60, ("PATCH", f"/api/events/{event.id}/", {"status": "cancelled"}, auth(organizer))
    )
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert set(counts) <= {200, 201, 409}, counts
    assert responses[60].status_code == 200 and responses[60].json()["status"] == "cancelled"
    refused = {r.json()["code"] for r in responses if r.status_code == 409}
    assert refused <= {"event_not_bookable"}
    async with db() as s:
        confirmed = (
            await s.execute(text("SELECT count(*) FROM bookings WHERE status = 'confirmed'"))
        ).scalar_one()
        cancelled = (
            await s.execute(text("SELECT count(*) FROM bookings WHERE status = 'cancelled'"))
        ).scalar_one()
    assert confirmed == 0
    assert cancelled == counts.get(201, 0)
    assert await sold(db, event.id) == 0
    await check_invariants(db, {tt.id: 1000})


async def test_one_call_and_general_bookings_sell_out_together_exactly(
    http, db, organizer, attendees
):
    """Two types running out on one event under a storm: most orders book in one call
    (``book_tickets_many()`` in PostgreSQL), the last ones the general way (they take a
    type's or the event's last tickets, or are refused); exactly the capacity is sold."""
    event = await make_event(db, organizer.id, total_capacity=45)
    a = await make_ticket_type(db, event.id, name="A", quantity_available=30)
    b = await make_ticket_type(db, event.id, name="B", quantity_available=30)
    requests = [
        (
            "POST",
            "/api/bookings/",
            order(event.id, (a.id, 1 + i % 2), (b.id, 1)),
            auth(attendees[i % len(attendees)]),
        )
        for i in range(60)
    ]
    responses = await storm(http, requests)
    counts = statuses(responses)
    assert set(counts) <= {201, 409}, counts
    taken = [
        sum(i["quantity"] for i in r.json()["items"]) for r in responses if r.status_code == 201
    ]
    assert await sold(db, event.id) == sum(taken)
    assert 45 - 2 <= sum(taken) <= 45  # refused only when fewer than 3 seats were left
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {
        "capacity_exceeded",
        "sold_out",
    }
    await check_invariants(db, {a.id: 30, b.id: 30})
