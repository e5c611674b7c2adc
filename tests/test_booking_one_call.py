"""The booking in one call (``book_tickets_many()`` in PostgreSQL) and its way back to the
general transaction: which requests take which, and that both leave the same rows."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.bookings import service as bookings
from app.inventory import service as inventory
from app.outbox.service import WAKE_UP_LOCK
from tests.booking_setup import check_invariants
from tests.factories import auth, book, client_of, make_event, make_ticket_type


@pytest.fixture
def general_calls(monkeypatch):
    """How many bookings ran the general transaction."""
    calls = []
    real = bookings._book_in_transaction

    async def counted(*args, **kwargs):
        calls.append(args[2].event_id)
        return await real(*args, **kwargs)

    monkeypatch.setattr(bookings, "_book_in_transaction", counted)
    return calls


def change_after_read(monkeypatch, db, sql: str, **values: object) -> None:
    """Run ``sql`` (committed) right after the lock-free read of the next booking."""
    real = inventory.read_account_and_order

    async def read_then_change(*args, **kwargs):
        row = await real(*args, **kwargs)
        async with db() as s, s.begin():
            await s.execute(text(sql), values)
        return row

    monkeypatch.setattr(inventory, "read_account_and_order", read_then_change)


async def rows_of(db, booking_reference: str) -> dict[str, object]:
    async with db() as s:
        booking = (
            await s.execute(
                text(
                    "SELECT id, status, total_price::text, created_at FROM bookings"
                    " WHERE booking_reference = :r"
                ),
                {"r": booking_reference},
            )
        ).one()
        items = (
            await s.execute(
                text(
                    "SELECT id, ticket_type_id, quantity, price_at_booking::text"
                    " FROM booking_items WHERE booking_id = :b ORDER BY id"
                ),
                {"b": booking.id},
            )
        ).all()
        emails = (
            await s.execute(
                text(
                    "SELECT payload FROM outbox_messages WHERE channel = 'email'"
                    " AND payload -> 'context' ->> 'reference' = :r"
                ),
                {"r": booking_reference},
            )
        ).all()
    return {"booking": booking, "items": items, "emails": emails}


async def test_a_common_booking_is_one_call_with_the_rows_and_the_email(
    client, db, attendee, event, standard, vip, general_calls
):
    r = await book(client, attendee, event.id, (vip.id, 1), (standard.id, 2))
    assert r.status_code == 201, r.text
    assert general_calls == []
    body = r.json()
    stored = await rows_of(db, body["booking_reference"])
    assert stored["booking"].status == "confirmed" and stored["booking"].total_price == "149.50"
    assert [(i.id, i.ticket_type_id, i.quantity, i.price_at_booking) for i in stored["items"]] == [
        (i["id"], i["ticket_type_id"], i["quantity"], i["price_at_booking"]) for i in body["items"]
    ]
    assert stored["booking"].created_at.isoformat() == body["created_at"]
    assert len(stored["emails"]) == 1
    assert stored["emails"][0].payload["kind"] == "booking_confirmed"
    # The booking as read back is the booking as answered.
    again = await client.get(f"/api/bookings/{body['booking_reference']}/", headers=auth(attendee))
    assert again.json() == body
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_the_last_tickets_go_the_general_way_and_sell_out(
    client, db, attendee, event, standard, vip, general_calls
):
    """Taking a type's last tickets, or the event's, needs the sold-out check."""
    assert (await book(client, attendee, event.id, (vip.id, 4))).status_code == 201
    assert general_calls == []
    assert (await book(client, attendee, event.id, (vip.id, 1))).status_code == 201
    assert general_calls == [event.id]  # VIP's last ticket
    assert (await book(client, attendee, event.id, (standard.id, 5))).status_code == 201
    assert general_calls == [event.id, event.id]  # the event's last seats (10)
    refused = await book(client, attendee, event.id, (standard.id, 1))
    assert refused.status_code == 409 and refused.json()["code"] == "capacity_exceeded"
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_a_price_changed_after_the_read_books_at_the_new_price(
    client, db, attendee, event, standard, monkeypatch, general_calls
):
    change_after_read(
        monkeypatch, db, "UPDATE ticket_types SET price = 30 WHERE id = :t", t=standard.id
    )
    r = await book(client, attendee, event.id, (standard.id, 2))
    assert r.status_code == 201, r.text
    assert general_calls == [event.id]
    assert r.json()["total_price"] == "60.00"
    assert r.json()["items"][0]["price_at_booking"] == "30.00"
    stored = await rows_of(db, r.json()["booking_reference"])
    assert stored["booking"].total_price == "60.00"
    assert stored["emails"][0].payload["context"]["total"].endswith("60.00")


@pytest.mark.parametrize(
    "change, status, code",
    [
        ("UPDATE ticket_types SET is_active = false WHERE id = :t", 409, "ticket_type_inactive"),
        ("UPDATE ticket_types SET quantity_available = 1 WHERE id = :t", 409, "sold_out"),
        ("UPDATE events SET cancelled_at = now() WHERE id = :e", 409, "event_not_bookable"),
        ("DELETE FROM ticket_types WHERE id = :t", 422, "validation_error"),
    ],
)
async def test_a_change_after_the_read_is_refused_under_the_locks(
    client, db, attendee, event, standard, monkeypatch, change, status, code
):
    change_after_read(monkeypatch, db, change, t=standard.id, e=event.id)
    r = await book(client, attendee, event.id, (standard.id, 2))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 0
        assert (await s.execute(text("SELECT count(*) FROM outbox_messages"))).scalar_one() == 0
        assert (
            await s.execute(text("SELECT tickets_sold FROM events WHERE id = :e"), {"e": event.id})
        ).scalar_one() == 0


async def test_a_renamed_event_answers_with_its_new_name(
    client, db, attendee, event, standard, monkeypatch, general_calls
):
    change_after_read(monkeypatch, db, "UPDATE events SET name = 'Gala' WHERE id = :e", e=event.id)
    r = await book(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 201 and r.json()["event_name"] == "Gala", r.text
    assert general_calls == [event.id]


async def test_an_idempotency_key_is_claimed_in_the_call_and_replayed_after(
    client, db, attendee, event, standard, general_calls
):
    first = await book(client, attendee, event.id, (standard.id, 1), key="k-1")
    assert first.status_code == 201 and general_calls == []
    again = await book(client, attendee, event.id, (standard.id, 1), key="k-1")
    assert again.status_code == 201 and again.json() == first.json()
    other = await book(client, attendee, event.id, (standard.id, 2), key="k-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    async with db() as s:
        row = (await s.execute(text("SELECT booking_id, request_hash FROM idempotency_keys"))).one()
        booking_id = (await s.execute(text("SELECT id FROM bookings"))).scalar_one()
    assert row.booking_id == booking_id and len(row.request_hash) == 64


async def test_a_refused_call_keeps_no_idempotency_key(
    client, db, attendee, event, standard, monkeypatch
):
    change_after_read(
        monkeypatch, db, "UPDATE ticket_types SET is_active = false WHERE id = :t", t=standard.id
    )
    r = await book(client, attendee, event.id, (standard.id, 1), key="k-2")
    assert r.status_code == 409
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar_one() == 0


# ---------------------------------------------------------------- bookings together


def together_of(app):
    return inventory.bookings_together(app.state.sessionmaker)


async def on_sale(db, organizer, create_user, *, tickets: int, attendees: int):
    """An event with one ticket type of ``tickets`` (capacity 100 or more), and attendees."""
    event = await make_event(db, organizer.id, total_capacity=max(tickets, 100))
    tt = await make_ticket_type(db, event.id, quantity_available=tickets)
    return event, tt, [await create_user("attendee") for _ in range(attendees)]


async def test_concurrent_bookings_of_one_event_go_together_in_fewer_calls(
    app, client, db, organizer, create_user, general_calls
):
    event, tt, attendees = await on_sale(db, organizer, create_user, tickets=1000, attendees=10)
    together = together_of(app)
    calls_before = together.calls
    responses = await asyncio.gather(
        *(book(client, attendees[i % 10], event.id, (tt.id, 1 + i % 3)) for i in range(40))
    )
    assert [r.status_code for r in responses] == [201] * 40, [r.text for r in responses]
    assert general_calls == []
    calls = together.calls - calls_before
    assert 1 <= calls < 40  # bookings that arrived during a call went in the next one
    references = {r.json()["booking_reference"] for r in responses}
    assert len(references) == 40
    async with db() as s:
        stored = await s.execute(
            text("SELECT booking_reference::text, total_price::text FROM bookings")
        )
        assert {(r[0], r[1]) for r in stored} == {
            (r.json()["booking_reference"], r.json()["total_price"]) for r in responses
        }
        emails = await s.execute(
            text("SELECT count(*) FROM outbox_messages WHERE channel = 'email'")
        )
        assert emails.scalar_one() == 40
    await check_invariants(db, {tt.id: 1000})


async def test_an_order_refused_in_a_batch_is_undone_alone(
    app, client, db, organizer, create_user, general_calls
):
    """In one batch, the orders that take the type's last tickets, or find too few,
    are undone alone and go the general way; the others are booked."""
    event, tt, attendees = await on_sale(db, organizer, create_user, tickets=12, attendees=10)
    responses = await asyncio.gather(
        *(book(client, attendees[i], event.id, (tt.id, 2)) for i in range(10))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 6 + [409] * 4, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold_out"}
    assert len(general_calls) >= 5  # the last tickets and the refusals
    async with db() as s:
        sold_out = await s.execute(text("SELECT count(*) FROM bookings WHERE status = 'confirmed'"))
        assert sold_out.scalar_one() == 6
    await check_invariants(db, {tt.id: 12})


async def test_a_batch_of_orders_of_several_types_is_checked_against_what_each_left(
    app, client, db, organizer, create_user, general_calls
):
    """One batch (migration 0009): each order is checked against what the orders before
    it left of each type, the kept ones are written with one statement per table, and
    their items, webhooks and emails are all there."""
    event = await make_event(db, organizer.id, total_capacity=500)
    scarce = await make_ticket_type(db, event.id, name="Scarce", quantity_available=7)
    plenty = await make_ticket_type(db, event.id, name="Plenty", quantity_available=100)
    attendees = [await create_user("attendee") for _ in range(10)]
    async with db() as s:
        await s.execute(
            text(
                "INSERT INTO webhook_endpoints (organizer_id, url, secret, event_types) VALUES"
                " (:o, 'https://hooks.example.com/a', :secret, ARRAY['booking.confirmed'])"
            ),
            {"o": organizer.id, "secret": "s" * 32},
        )
        await s.commit()
    together = together_of(app)
    calls_before = together.calls
    responses = await asyncio.gather(
        *(book(client, a, event.id, (scarce.id, 1), (plenty.id, 2)) for a in attendees)
    )
    assert together.calls - calls_before < 10  # they went together
    codes = sorted(r.status_code for r in responses)
    # Six leave more than they take; the seventh takes the last (the general way, which
    # sells the type out); three find none left.
    assert codes == [201] * 7 + [409] * 3, [r.text for r in responses]
    assert len(general_calls) >= 4
    await check_invariants(db, {scarce.id: 7, plenty.id: 100})
    async with db() as s:
        counts = (
            await s.execute(
                text(
                    "SELECT (SELECT quantity_sold FROM ticket_types WHERE id = :a),"
                    " (SELECT quantity_sold FROM ticket_types WHERE id = :b),"
                    " (SELECT tickets_sold FROM events WHERE id = :e),"
                    " (SELECT count(*) FROM booking_items),"
                    " (SELECT count(*) FROM outbox_messages WHERE channel = 'email')"
                ),
                {"a": scarce.id, "b": plenty.id, "e": event.id},
            )
        ).one()
        assert tuple(counts) == (7, 14, 21, 14, 7)
        # One webhook per booking.
        hooks = (
            (
                await s.execute(
                    text(
                        "SELECT (payload -> 'data' ->> 'booking_reference') FROM outbox_messages"
                        " WHERE channel = 'webhook'"
                    )
                )
            )
            .scalars()
            .all()
        )
        booked = (await s.execute(text("SELECT booking_reference::text FROM bookings"))).scalars()
        assert sorted(hooks) == sorted(booked) and len(hooks) == 7


async def test_a_batch_is_checked_against_what_each_order_left_of_the_event(
    client, db, organizer, create_user, general_calls
):
    """The event's own capacity binds before its type's: each order of a batch is checked
    against the room the orders before it left."""
    event = await make_event(db, organizer.id, total_capacity=10)
    tt = await make_ticket_type(db, event.id, quantity_available=100)
    attendees = [await create_user("attendee") for _ in range(10)]
    responses = await asyncio.gather(*(book(client, a, event.id, (tt.id, 2)) for a in attendees))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 5 + [409] * 5, [r.text for r in responses]
    await check_invariants(db, {tt.id: 100})
    async with db() as s:
        sold = "SELECT tickets_sold FROM events WHERE id = :e"
        assert (await s.execute(text(sold), {"e": event.id})).scalar_one() == 10


async def test_bookings_of_several_events_go_together_each_checked_against_its_own(
    app, client, db, organizer, create_user, general_calls
):
    """A batch holds the bookings of any events (locked by ascending id, each then its
    types): each order is checked against what its own event and types have left."""
    events, types = [], []
    for tickets in (5, 9, 40):
        event = await make_event(db, organizer.id, total_capacity=100)
        events.append(event)
        types.append(await make_ticket_type(db, event.id, quantity_available=tickets))
    attendees = [await create_user("attendee") for _ in range(12)]
    together = together_of(app)
    calls_before = together.calls
    responses = await asyncio.gather(
        *(
            book(client, attendees[i % 12], events[i % 3].id, (types[i % 3].id, 2))
            for i in range(30)
        )
    )
    by_event = [sorted(r.status_code for r in responses[e::3]) for e in range(3)]
    # 10 orders of 2 each: 5 tickets -> 2 booked, 9 -> 4, 40 -> all 10.
    assert by_event == [[201] * 2 + [409] * 8, [201] * 4 + [409] * 6, [201] * 10], [
        r.text for r in responses if r.status_code != 201
    ]
    assert together.calls - calls_before < 30  # bookings of different events went together
    await check_invariants(db, {t.id: n for t, n in zip(types, (5, 9, 40), strict=True)})
    async with db() as s:
        sold = await s.execute(
            text("SELECT id, tickets_sold FROM events WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": [e.id for e in events]},
        )
        assert [row[1] for row in sold] == [4, 8, 20]


async def test_an_event_held_by_another_transaction_delays_its_own_bookings_only(
    app, client, db, organizer, create_user, general_calls
):
    """The shared call skips an event another transaction holds: that event's bookings
    wait for its lock on a line of their own (their keys claimed anew there), while the
    other events' bookings are answered at once."""
    held, held_tt, attendees = await on_sale(db, organizer, create_user, tickets=50, attendees=8)
    free, free_tt, _ = await on_sale(db, organizer, create_user, tickets=50, attendees=0)
    together = together_of(app)
    async with db() as holder:
        await holder.execute(text("SELECT id FROM events WHERE id=:i FOR UPDATE"), {"i": held.id})
        waiting = asyncio.create_task(
            book(client, attendees[0], held.id, (held_tt.id, 1), key="held-key")
        )
        for _ in range(100):  # its line is waiting for the lock
            if held.id in together._events:
                break
            await asyncio.sleep(0.02)
        assert held.id in together._events and not waiting.done()
        answered = await asyncio.wait_for(
            asyncio.gather(*(book(client, a, free.id, (free_tt.id, 1)) for a in attendees)),
            timeout=4,  # well under LOCK_TIMEOUT_MS: they did not wait for the held event
        )
        assert [r.status_code for r in answered] == [201] * 8
        assert not waiting.done()
        await holder.rollback()
    response = await asyncio.wait_for(waiting, timeout=10)
    assert response.status_code == 201, response.text
    assert general_calls == []
    for _ in range(50):  # the line is gone once idle
        if held.id not in together._events:
            break
        await asyncio.sleep(0.02)
    assert held.id not in together._events
    async with db() as s:
        key = await s.execute(
            text(
                "SELECT b.booking_reference::text FROM idempotency_keys k"
                " JOIN bookings b ON b.id = k.booking_id WHERE k.key = 'held-key'"
            )
        )
        assert key.scalar_one() == response.json()["booking_reference"]
    await check_invariants(db, {held_tt.id: 50, free_tt.id: 50})


async def test_a_batch_that_cannot_get_the_lock_is_busy_for_all_and_writes_nothing(
    settings, db, organizer, create_user
):
    event, tt, attendees = await on_sale(db, organizer, create_user, tickets=100, attendees=5)
    busy_soon = settings.model_copy(update={"lock_timeout_ms": 200})
    async with client_of(busy_soon, "http://t") as c, db() as holder:
        await holder.execute(text("SELECT id FROM events WHERE id=:i FOR UPDATE"), {"i": event.id})
        responses = await asyncio.gather(*(book(c, a, event.id, (tt.id, 1)) for a in attendees))
        await holder.rollback()
    assert {(r.status_code, r.json()["code"]) for r in responses} == {(503, "busy")}
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 0
        assert (await s.execute(text("SELECT count(*) FROM outbox_messages"))).scalar_one() == 0


async def test_bookings_with_idempotency_keys_go_together_each_key_to_its_booking(
    app, client, db, organizer, create_user, general_calls
):
    event, tt, attendees = await on_sale(db, organizer, create_user, tickets=100, attendees=6)
    together = together_of(app)
    calls_before = together.calls
    # Twelve keys, two requests each at once (a double submit): one booking per key.
    responses = await asyncio.gather(
        *(
            book(client, attendees[i % 6], event.id, (tt.id, 1), key=f"k-{i % 12}")
            for i in range(24)
        )
    )
    assert [r.status_code for r in responses] == [201] * 24, [r.text for r in responses]
    assert together.calls - calls_before < 24
    by_key: dict[str, set[str]] = {}
    for i, r in enumerate(responses):
        by_key.setdefault(f"k-{i % 12}", set()).add(r.json()["booking_reference"])
    assert all(len(refs) == 1 for refs in by_key.values()), by_key
    async with db() as s:
        rows = await s.execute(
            text(
                "SELECT k.key, b.booking_reference::text FROM idempotency_keys k"
                " JOIN bookings b ON b.id = k.booking_id"
            )
        )
        assert {r[0]: {r[1]} for r in rows} == by_key
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 12
    await check_invariants(db, {tt.id: 100})


# ---------------------------------------------------------------- waking the outbox


async def test_a_booking_notifies_unless_another_notify_is_on_its_way(
    client, database_url, attendee, event, standard
):
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    listener, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("outbox", lambda *args: heard.put_nowait(args[2]))
        assert (await book(client, attendee, event.id, (standard.id, 1))).status_code == 201
        await asyncio.wait_for(heard.get(), 5)
        # Another booking holds the wake-up: this one commits without NOTIFY.
        await other.execute("SELECT pg_advisory_lock($1)", WAKE_UP_LOCK)
        assert (await book(client, attendee, event.id, (standard.id, 1))).status_code == 201
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heard.get(), 0.5)
        emails = await other.fetchval(
            "SELECT count(*) FROM outbox_messages WHERE channel = 'email'"
        )
        assert emails == 2  # its email is stored all the same, for the dispatcher's poll
    finally:
        await other.close()
        await listener.close()
