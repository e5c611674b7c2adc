"""Waiting lists through the API: joining, the line, offers when tickets come back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.holds.maintenance import sweep_expired_holds
from tests.booking_setup import check_invariants
from tests.factories import auth, book, checkout, hold, make_event, make_ticket_type
from tests.hold_setup import event_counters, expire, type_counters


@pytest.fixture
async def event(db, organizer):
    return await make_event(db, organizer.id, name="Opera", total_capacity=10)


@pytest.fixture
async def standard(db, event):
    return await make_ticket_type(
        db, event.id, name="Standard", price="30.00", quantity_available=4
    )


@pytest.fixture
async def waiters(create_user):
    return [await create_user("attendee") for _ in range(4)]


async def join(client, user, event_id, ticket_type_id, quantity):
    return await client.post(
        f"/api/events/{event_id}/waitlist/",
        json={"ticket_type_id": ticket_type_id, "quantity": quantity},
        headers=auth(user),
    )


async def sell_out(client, user, event_id, ticket_type_id, quantity):
    r = await book(client, user, event_id, (ticket_type_id, quantity))
    assert r.status_code == 201, r.text
    return r.json()["booking_reference"]


async def two_in_line(client, attendee, event, standard, waiters, first, second):
    """The 4 tickets of ``standard`` booked by ``attendee``, then the first two waiters in
    line for ``first`` and ``second`` of them: the booking's reference and both entries."""
    ref = await sell_out(client, attendee, event.id, standard.id, 4)
    entries = [
        (await join(client, waiter, event.id, standard.id, quantity)).json()
        for waiter, quantity in ((waiters[0], first), (waiters[1], second))
    ]
    return ref, *entries


async def entry(client, user, entry_id):
    r = await client.get(f"/api/waitlist/{entry_id}/", headers=auth(user))
    assert r.status_code == 200, r.text
    return r.json()


async def test_joining_a_sold_out_type_is_201_with_location_and_position(
    client, attendee, event, standard, waiters
):
    await sell_out(client, attendee, event.id, standard.id, 4)
    r = await join(client, waiters[0], event.id, standard.id, 2)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"http://testserver/api/waitlist/{body['id']}/"
    assert set(body) == {
        "id", "event_id", "ticket_type_id", "quantity", "status", "position",
        "hold_reference", "created_at", "offered_at",
    }  # fmt: skip
    assert body["status"] == "waiting" and body["position"] == 1
    assert body["hold_reference"] is None and body["offered_at"] is None
    second = await join(client, waiters[1], event.id, standard.id, 1)
    assert second.json()["position"] == 2
    again = await join(client, waiters[0], event.id, standard.id, 1)
    assert again.status_code == 409 and again.json()["code"] == "already_waiting"


async def test_joining_while_enough_tickets_are_on_sale_is_409_tickets_available(
    client, db, attendee, event, standard, waiters
):
    r = await join(client, waiters[0], event.id, standard.id, 4)
    assert r.status_code == 409 and r.json()["code"] == "tickets_available"
    await sell_out(client, attendee, event.id, standard.id, 2)
    r = await join(client, waiters[0], event.id, standard.id, 2)
    assert r.status_code == 409 and r.json()["code"] == "tickets_available"
    # More than the type has left: waiting makes sense.
    assert (await join(client, waiters[0], event.id, standard.id, 3)).status_code == 201
    # The event's capacity counts too: 2 left in the event though the type has more.
    other = await make_ticket_type(db, event.id, name="Other", quantity_available=20)
    async with db() as s, s.begin():
        await s.execute(text("UPDATE events SET total_capacity = 4 WHERE id = :i"), {"i": event.id})
    assert (await join(client, waiters[1], event.id, other.id, 3)).status_code == 201
    r = await join(client, waiters[2], event.id, other.id, 2)
    assert r.status_code == 409 and r.json()["code"] == "tickets_available"


async def test_expired_holds_count_as_on_sale_when_joining(
    client, db, attendee, event, standard, waiters
):
    ref = (await hold(client, attendee, event.id, (standard.id, 4))).json()["hold_reference"]
    await expire(db, ref)
    r = await join(client, waiters[0], event.id, standard.id, 2)
    assert r.status_code == 409 and r.json()["code"] == "tickets_available"
    async with db() as s:
        entries = await s.scalar(
            text("SELECT count(*) FROM waitlist_entries WHERE ticket_type_id = :t"),
            {"t": standard.id},
        )
    assert entries == 0
    # The expired hold's tickets are on sale at once for a booking, too.
    assert (await book(client, waiters[1], event.id, (standard.id, 4))).status_code == 201
    assert await type_counters(db, standard.id) == {standard.id: (0, 0, 4)}


async def test_joining_is_refused_for_bad_input(
    client, db, attendee, organizer, event, standard, waiters
):
    await sell_out(client, attendee, event.id, standard.id, 4)
    assert (await join(client, waiters[0], 999_999, standard.id, 1)).status_code == 404
    other = await make_event(db, organizer.id)
    foreign = await make_ticket_type(db, other.id)
    r = await join(client, waiters[0], event.id, foreign.id, 1)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.ticket_type_id"
    for quantity in (0, 11):
        r = await join(client, waiters[0], event.id, standard.id, quantity)
        assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert (await join(client, organizer, event.id, standard.id, 1)).status_code == 403
    r = await client.post(
        f"/api/events/{event.id}/waitlist/", json={"ticket_type_id": standard.id, "quantity": 1}
    )
    assert r.status_code == 401
    await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    r = await join(client, waiters[0], event.id, standard.id, 1)
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"


async def test_a_cancelled_booking_is_offered_to_the_earliest_entry_that_fits(
    client, db, attendee, event, standard, waiters
):
    ref = await sell_out(client, attendee, event.id, standard.id, 2)
    await sell_out(client, waiters[3], event.id, standard.id, 2)
    big = (await join(client, waiters[0], event.id, standard.id, 3)).json()
    fits = (await join(client, waiters[1], event.id, standard.id, 2)).json()
    later = (await join(client, waiters[2], event.id, standard.id, 1)).json()
    r = await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    assert r.status_code == 200
    offered = await entry(client, waiters[1], fits["id"])
    assert offered["status"] == "offered" and offered["position"] is None
    assert offered["hold_reference"] is not None and offered["offered_at"] is not None
    held = (
        await client.get(f"/api/holds/{offered['hold_reference']}/", headers=auth(waiters[1]))
    ).json()
    assert held["status"] == "active" and held["items"][0]["quantity"] == 2
    deadline = datetime.fromisoformat(held["expires_at"])
    assert timedelta(seconds=3500) < deadline - datetime.now(UTC) < timedelta(seconds=3700)
    # The entry that did not fit keeps its place; the one behind moved up.
    assert (await entry(client, waiters[0], big["id"]))["position"] == 1
    assert (await entry(client, waiters[2], later["id"]))["position"] == 2
    # Nobody else can take the tickets that came back.
    r = await book(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert await type_counters(db, standard.id) == {standard.id: (0, 2, 2)}
    done = await checkout(client, waiters[1], offered["hold_reference"])
    assert done.status_code == 201
    assert (await entry(client, waiters[1], fits["id"]))["status"] == "converted"
    await check_invariants(db, {standard.id: 4})


async def test_a_released_offer_passes_to_the_next_entry(
    client, db, attendee, event, standard, waiters
):
    ref, first, second = await two_in_line(client, attendee, event, standard, waiters, 4, 4)
    await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    offer = (await entry(client, waiters[0], first["id"]))["hold_reference"]
    r = await client.delete(f"/api/holds/{offer}/", headers=auth(waiters[0]))
    assert r.status_code == 204
    assert (await entry(client, waiters[0], first["id"]))["status"] == "left"
    passed = await entry(client, waiters[1], second["id"])
    assert passed["status"] == "offered"
    assert await type_counters(db, standard.id) == {standard.id: (0, 4, 0)}
    await check_invariants(db, {standard.id: 4})


async def test_an_expired_offer_passes_to_the_next_entry(
    client, db, settings, attendee, event, standard, waiters
):
    ref, first, second = await two_in_line(client, attendee, event, standard, waiters, 2, 3)
    await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    offer = (await entry(client, waiters[0], first["id"]))["hold_reference"]
    assert (await entry(client, waiters[1], second["id"]))["status"] == "waiting"
    await expire(db, offer)
    # Reads expired at once, before any clean-up ran.
    assert (await entry(client, waiters[0], first["id"]))["status"] == "expired"
    await sweep_expired_holds(db, settings)
    assert (await entry(client, waiters[0], first["id"]))["status"] == "expired"
    assert (await entry(client, waiters[1], second["id"]))["status"] == "offered"
    r = await checkout(client, waiters[0], offer)
    assert r.status_code == 409 and r.json()["code"] == "hold_expired"
    assert await type_counters(db, standard.id) == {standard.id: (1, 3, 0)}
    await check_invariants(db, {standard.id: 4})


async def test_leaving_releases_an_offered_hold_for_the_next_entry(
    client, db, create_user, attendee, event, standard, waiters
):
    ref, first, second = await two_in_line(client, attendee, event, standard, waiters, 1, 4)
    stranger = await create_user("attendee")
    assert (
        await client.delete(f"/api/waitlist/{first['id']}/", headers=auth(stranger))
    ).status_code == 404
    await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    assert (await entry(client, waiters[0], first["id"]))["status"] == "offered"
    # 3 left on sale: not enough for the second entry yet.
    assert (await entry(client, waiters[1], second["id"]))["status"] == "waiting"
    r = await client.delete(f"/api/waitlist/{first['id']}/", headers=auth(waiters[0]))
    assert r.status_code == 204
    assert (await entry(client, waiters[0], first["id"]))["status"] == "left"
    assert (await entry(client, waiters[1], second["id"]))["status"] == "offered"
    assert await type_counters(db, standard.id) == {standard.id: (0, 4, 0)}
    await check_invariants(db, {standard.id: 4})


async def test_raising_quantity_available_offers_first_and_answers_after_the_offers(
    client, db, attendee, organizer, event, standard, waiters
):
    await sell_out(client, attendee, event.id, standard.id, 4)
    first = (await join(client, waiters[0], event.id, standard.id, 2)).json()
    r = await client.patch(
        f"/api/events/{event.id}/ticket-types/{standard.id}/",
        json={"quantity_available": 3},
        headers=auth(organizer),
    )
    assert r.status_code == 200, r.text
    assert r.json()["quantity_available"] == 1 and r.json()["quantity_held"] == 2
    assert (await entry(client, waiters[0], first["id"]))["status"] == "offered"
    await check_invariants(db, {standard.id: 7})


async def test_cancelling_the_event_ends_waiting_and_offered_entries(
    client, db, attendee, organizer, event, standard, waiters
):
    ref = await sell_out(client, attendee, event.id, standard.id, 4)
    done = (await join(client, waiters[0], event.id, standard.id, 1)).json()
    offered = (await join(client, waiters[1], event.id, standard.id, 1)).json()
    waiting = (await join(client, waiters[2], event.id, standard.id, 4)).json()
    await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    offer = (await entry(client, waiters[0], done["id"]))["hold_reference"]
    assert (await checkout(client, waiters[0], offer)).status_code == 201
    assert (await entry(client, waiters[1], offered["id"]))["status"] == "offered"
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200
    assert (await entry(client, waiters[0], done["id"]))["status"] == "converted"
    assert (await entry(client, waiters[1], offered["id"]))["status"] == "left"
    assert (await entry(client, waiters[2], waiting["id"]))["status"] == "left"
    assert await event_counters(db, event.id) == (0, 0)
    await check_invariants(db, {standard.id: 4})


async def test_the_organizer_sees_the_line_in_order_with_positions(
    client, db, attendee, organizer, create_user, event, standard, waiters
):
    await sell_out(client, attendee, event.id, standard.id, 4)
    vip = await make_ticket_type(db, event.id, name="VIP", quantity_available=1)
    await sell_out(client, waiters[3], event.id, vip.id, 1)
    ids = [
        (await join(client, waiters[0], event.id, standard.id, 1)).json()["id"],
        (await join(client, waiters[1], event.id, vip.id, 1)).json()["id"],
        (await join(client, waiters[2], event.id, standard.id, 2)).json()["id"],
    ]
    assert (
        await client.delete(f"/api/waitlist/{ids[0]}/", headers=auth(waiters[0]))
    ).status_code == 204
    r = await client.get(f"/api/events/{event.id}/waitlist/", headers=auth(organizer))
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 3
    assert [(e["id"], e["status"], e["position"]) for e in body["results"]] == [
        (ids[0], "left", None),
        (ids[1], "waiting", 1),
        (ids[2], "waiting", 1),
    ]
    assert body["results"][1]["user"]["username"] == waiters[1].username
    waiting = await client.get(
        f"/api/events/{event.id}/waitlist/?status=waiting", headers=auth(organizer)
    )
    assert [e["id"] for e in waiting.json()["results"]] == ids[1:]
    other = await create_user("organizer")
    assert (
        await client.get(f"/api/events/{event.id}/waitlist/", headers=auth(other))
    ).status_code == 403
    assert (
        await client.get("/api/events/999999/waitlist/", headers=auth(organizer))
    ).status_code == 404
    mine = (await client.get("/api/users/me/waitlist/", headers=auth(waiters[0]))).json()
    assert [e["id"] for e in mine["results"]] == [ids[0]]


async def test_an_offer_is_emailed_with_the_hold_reference_and_deadline(
    database_url, smtp_sink, db, organizer, attendee, waiters
):
    from tests.redis_server import text_of
    from tests.test_email import client_for, running_app, smtp_settings

    event = await make_event(db, organizer.id, name="Ballet", total_capacity=10)
    tt = await make_ticket_type(db, event.id, name="Stalls", price="40.00", quantity_available=2)
    async for application in running_app(smtp_settings(database_url, smtp_sink)):
        async with client_for(application) as c:
            ref = await sell_out(c, attendee, event.id, tt.id, 2)
            waiting = (await join(c, waiters[0], event.id, tt.id, 2)).json()
            assert (
                await c.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
            ).status_code == 200
            offered = await entry(c, waiters[0], waiting["id"])
            [message] = await smtp_sink.wait_for(1, to=waiters[0].email)
            await application.state.outbox.wait_idle()
    assert message["Subject"] == "Tickets held for you: Ballet"
    body = text_of(message)
    assert offered["hold_reference"] in body
    assert "2 x Stalls" in body and "Total: 80.00" in body
    async with db() as s:
        deadline = (
            await s.execute(
                text("SELECT expires_at FROM holds WHERE hold_reference::text = :r"),
                {"r": offered["hold_reference"]},
            )
        ).scalar_one()
    assert deadline.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC") in body


async def test_a_new_hold_whose_release_makes_an_offer_to_the_same_attendee_is_409_not_500(
    client, db, attendee, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 4))).json()["hold_reference"]
    assert (await join(client, attendee, event.id, standard.id, 4)).status_code == 201
    await expire(db, ref)
    # Releasing the expired hold offers its tickets to the line, whose first entry is theirs.
    r = await hold(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "hold_exists"
    await check_invariants(db, {standard.id: 4})
