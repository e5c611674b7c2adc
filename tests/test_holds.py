"""Holds through the API: checkout with a time limit, its codes and its counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from app.holds.maintenance import sweep_expired_holds
from tests.booking_setup import check_invariants
from tests.factories import auth, book, checkout, hold, make_event, make_ticket_type, order
from tests.hold_setup import event_counters, expire, type_counters


async def test_hold_is_201_with_location_and_takes_tickets_off_sale(
    client, db, attendee, event, standard, vip
):
    before = datetime.now(UTC)
    r = await hold(client, attendee, event.id, (vip.id, 1), (standard.id, 2))
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"http://testserver/api/holds/{body['hold_reference']}/"
    assert body["status"] == "active" and body["booking_reference"] is None
    assert body["event_id"] == event.id and body["event_name"] == "Concert"
    assert body["total_price"] == "149.50"
    assert {(i["ticket_type_name"], i["quantity"], i["unit_price"]) for i in body["items"]} == {
        ("Standard", 2, "25.00"),
        ("VIP", 1, "99.50"),
    }
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=590) < expires < before + timedelta(seconds=610)
    assert await type_counters(db, standard.id, vip.id) == {
        standard.id: (6, 2, 0),
        vip.id: (4, 1, 0),
    }
    assert await event_counters(db, event.id) == (0, 3)
    shown = (await client.get(f"/api/events/{event.id}/")).json()
    assert shown["tickets_held"] == 3 and shown["tickets_sold"] == 0
    assert shown["tickets_remaining"] == 7
    assert {t["name"]: t["quantity_held"] for t in shown["ticket_types"]} == {
        "Standard": 2,
        "VIP": 1,
    }
    listed = (await client.get("/api/events/")).json()["results"][0]
    assert listed["tickets_held"] == 3 and listed["tickets_remaining"] == 7
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_hold_sends_no_email(client, attendee, event, standard, caplog):
    caplog.set_level("INFO")
    r = await hold(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 201
    assert "waitlist_offered" not in caplog.text and "booking_confirmed" not in caplog.text


async def test_hold_is_read_by_its_owner_only(
    client, attendee, create_user, organizer, event, standard
):
    r = await hold(client, attendee, event.id, (standard.id, 1))
    ref = r.json()["hold_reference"]
    mine = await client.get(f"/api/holds/{ref}", headers=auth(attendee))
    assert mine.status_code == 200 and mine.json() == r.json()
    other = await create_user("attendee")
    for user in (other, organizer):
        for method, path in (
            ("GET", f"/api/holds/{ref}/"),
            ("DELETE", f"/api/holds/{ref}/"),
            ("POST", f"/api/holds/{ref}/checkout/"),
        ):
            resp = await client.request(method, path, headers=auth(user))
            assert resp.status_code == 404 and resp.json()["code"] == "not_found", (method, path)
    unknown = await client.get(f"/api/holds/{uuid.uuid4()}/", headers=auth(attendee))
    assert unknown.status_code == 404
    assert (await client.get(f"/api/holds/{ref}/")).status_code == 401


async def test_checkout_with_a_dead_token_is_401_and_writes_nothing(
    client, db, attendee, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    headers = auth(attendee)
    assert (await client.post(f"/api/holds/{ref}/checkout/")).status_code == 401
    async with db() as s, s.begin():  # deactivated: the token issued before is dead
        await s.execute(
            text("UPDATE users SET is_active = false WHERE id = :i"), {"i": attendee.id}
        )
    try:
        refused = await client.post(f"/api/holds/{ref}/checkout/", headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    finally:
        async with db() as s, s.begin():
            await s.execute(
                text("UPDATE users SET is_active = true WHERE id = :i"), {"i": attendee.id}
            )
    shown = await client.get(f"/api/holds/{ref}/", headers=headers)
    assert shown.json()["status"] == "active"
    assert await event_counters(db, event.id) == (0, 1)


async def test_second_active_hold_on_one_event_is_409_hold_exists(
    client, db, attendee, organizer, event, standard
):
    first = await hold(client, attendee, event.id, (standard.id, 1))
    assert first.status_code == 201
    again = await hold(client, attendee, event.id, (standard.id, 2))
    assert again.status_code == 409 and again.json()["code"] == "hold_exists"
    other_event = await make_event(db, organizer.id)
    other_type = await make_ticket_type(db, other_event.id)
    assert (await hold(client, attendee, other_event.id, (other_type.id, 1))).status_code == 201
    ref = first.json()["hold_reference"]
    assert (await client.delete(f"/api/holds/{ref}/", headers=auth(attendee))).status_code == 204
    assert (await hold(client, attendee, event.id, (standard.id, 2))).status_code == 201
    assert await type_counters(db, standard.id) == {standard.id: (6, 2, 0)}
    await check_invariants(db, {standard.id: 8})


async def test_hold_is_refused_like_a_booking(
    client, db, attendee, organizer, event, standard, vip
):
    r = await hold(client, attendee, event.id, (standard.id, 9))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    async with db() as s, s.begin():
        await s.execute(text("UPDATE events SET total_capacity = 5 WHERE id = :i"), {"i": event.id})
    r = await hold(client, attendee, event.id, (standard.id, 3), (vip.id, 3))
    assert r.status_code == 409 and r.json()["code"] == "capacity_exceeded"
    async with db() as s, s.begin():
        await s.execute(
            text("UPDATE ticket_types SET is_active = false WHERE id = :i"), {"i": vip.id}
        )
    r = await hold(client, attendee, event.id, (vip.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_inactive"
    r = await hold(client, attendee, 999_999, (standard.id, 1))
    assert r.status_code == 404
    other = await make_event(db, organizer.id)
    foreign = await make_ticket_type(db, other.id)
    r = await hold(client, attendee, event.id, (foreign.id, 1))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.items.0.ticket_type_id"
    r = await hold(client, attendee, event.id, (standard.id, 11))
    assert r.status_code == 422
    r = await hold(client, organizer, event.id, (standard.id, 1))
    assert r.status_code == 403
    past = await make_event(db, organizer.id, start_time=datetime.now(UTC) - timedelta(hours=1))
    past_type = await make_ticket_type(db, past.id)
    r = await hold(client, attendee, past.id, (past_type.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"
    assert await type_counters(db, standard.id, vip.id) == {
        standard.id: (8, 0, 0),
        vip.id: (5, 0, 0),
    }


async def test_held_tickets_are_not_on_sale_and_count_against_capacity(
    client, db, attendee, create_user, event, standard, vip
):
    assert (await hold(client, attendee, event.id, (standard.id, 8))).status_code == 201
    other = await create_user("attendee")
    r = await book(client, other, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    r = await book(client, other, event.id, (vip.id, 3))
    assert r.status_code == 409 and r.json()["code"] == "capacity_exceeded"
    assert (await book(client, other, event.id, (vip.id, 2))).status_code == 201
    shown = (await client.get(f"/api/events/{event.id}/")).json()
    assert shown["status"] == "sold_out" and shown["tickets_remaining"] == 0
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_checkout_is_201_booking_at_the_holds_prices_with_payment_reference(
    client, db, attendee, organizer, event, standard, vip
):
    r = await hold(client, attendee, event.id, (vip.id, 1), (standard.id, 2))
    ref = r.json()["hold_reference"]
    # A price change after the hold does not change what the attendee pays.
    async with db() as s, s.begin():
        await s.execute(text("UPDATE ticket_types SET price = 500 WHERE id = :i"), {"i": vip.id})
    done = await checkout(client, attendee, ref, payment_reference="pi_42")
    assert done.status_code == 201, done.text
    booking = done.json()
    assert (
        done.headers["location"]
        == f"http://testserver/api/bookings/{booking['booking_reference']}/"
    )
    assert booking["status"] == "confirmed" and booking["payment_reference"] == "pi_42"
    assert booking["total_price"] == "149.50"
    assert {
        (i["ticket_type_name"], i["quantity"], i["price_at_booking"]) for i in booking["items"]
    } == {
        ("Standard", 2, "25.00"),
        ("VIP", 1, "99.50"),
    }
    assert await type_counters(db, standard.id, vip.id) == {
        standard.id: (6, 0, 2),
        vip.id: (4, 0, 1),
    }
    assert await event_counters(db, event.id) == (3, 0)
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "converted"
    assert shown["booking_reference"] == booking["booking_reference"]
    again = await checkout(client, attendee, ref, payment_reference="pi_other")
    assert again.status_code == 200 and again.json() == booking
    read = await client.get(
        f"/api/bookings/{booking['booking_reference']}/", headers=auth(attendee)
    )
    assert read.json()["payment_reference"] == "pi_42"
    mine = (await client.get("/api/users/me/bookings/", headers=auth(attendee))).json()
    assert mine["results"][0]["payment_reference"] == "pi_42"
    organizer_view = await client.get(f"/api/events/{event.id}/bookings/", headers=auth(organizer))
    assert organizer_view.json()["results"][0]["payment_reference"] == "pi_42"
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_checkout_without_a_body_and_bookings_show_null_payment_reference(
    client, db, attendee, create_user, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    done = await client.post(f"/api/holds/{ref}/checkout", headers=auth(attendee))
    assert done.status_code == 201 and done.json()["payment_reference"] is None
    other = await create_user("attendee")
    direct = await book(client, other, event.id, (standard.id, 1))
    assert direct.status_code == 201 and direct.json()["payment_reference"] is None


async def test_payment_reference_over_255_characters_is_422(client, attendee, event, standard):
    ref = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    r = await checkout(client, attendee, ref, payment_reference="x" * 256)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    ok = await checkout(client, attendee, ref, payment_reference="x" * 255)
    assert ok.status_code == 201


async def test_delete_releases_once_then_409_hold_not_active(client, db, attendee, event, standard):
    ref = (await hold(client, attendee, event.id, (standard.id, 3))).json()["hold_reference"]
    r = await client.delete(f"/api/holds/{ref}/", headers=auth(attendee))
    assert r.status_code == 204 and r.content == b""
    assert await type_counters(db, standard.id) == {standard.id: (8, 0, 0)}
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "released"
    again = await client.delete(f"/api/holds/{ref}/", headers=auth(attendee))
    assert again.status_code == 409 and again.json()["code"] == "hold_not_active"
    late = await checkout(client, attendee, ref)
    assert late.status_code == 409 and late.json()["code"] == "hold_not_active"
    assert await type_counters(db, standard.id) == {standard.id: (8, 0, 0)}
    await check_invariants(db, {standard.id: 8})


async def test_delete_of_a_checked_out_hold_is_409(client, db, attendee, event, standard):
    ref = (await hold(client, attendee, event.id, (standard.id, 2))).json()["hold_reference"]
    assert (await checkout(client, attendee, ref)).status_code == 201
    r = await client.delete(f"/api/holds/{ref}/", headers=auth(attendee))
    assert r.status_code == 409 and r.json()["code"] == "hold_not_active"
    assert await type_counters(db, standard.id) == {standard.id: (6, 0, 2)}


async def test_expired_hold_reads_expired_at_once_and_cannot_be_checked_out(
    client, db, attendee, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 2))).json()["hold_reference"]
    await expire(db, ref)
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "expired"
    mine = (await client.get("/api/users/me/holds/?status=expired", headers=auth(attendee))).json()
    assert [h["hold_reference"] for h in mine["results"]] == [ref]
    r = await checkout(client, attendee, ref)
    assert r.status_code == 409 and r.json()["code"] == "hold_expired"
    r = await client.delete(f"/api/holds/{ref}/", headers=auth(attendee))
    assert r.status_code == 409 and r.json()["code"] == "hold_not_active"
    sold = (await type_counters(db, standard.id))[standard.id][2]
    assert sold == 0


async def test_expired_holds_never_cause_sold_out(
    client, db, attendee, create_user, event, standard, vip
):
    ref = (await hold(client, attendee, event.id, (standard.id, 8))).json()["hold_reference"]
    await expire(db, ref)
    other = await create_user("attendee")
    r = await book(client, other, event.id, (standard.id, 8))
    assert r.status_code == 201, r.text
    assert await type_counters(db, standard.id) == {standard.id: (0, 0, 8)}
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "expired"
    r = await checkout(client, attendee, ref)
    assert r.status_code == 409 and r.json()["code"] == "hold_expired"
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_expired_holds_never_cause_capacity_exceeded_for_a_hold(
    client, db, attendee, create_user, event, standard, vip
):
    ref = (await hold(client, attendee, event.id, (standard.id, 8))).json()["hold_reference"]
    await expire(db, ref)
    other = await create_user("attendee")
    r = await hold(client, other, event.id, (vip.id, 5))
    assert r.status_code == 201, r.text
    assert await event_counters(db, event.id) == (0, 5)
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_own_expired_hold_does_not_block_a_new_one(client, db, attendee, event, standard):
    ref = (await hold(client, attendee, event.id, (standard.id, 2))).json()["hold_reference"]
    await expire(db, ref)
    r = await hold(client, attendee, event.id, (standard.id, 3))
    assert r.status_code == 201, r.text
    assert await type_counters(db, standard.id) == {standard.id: (5, 3, 0)}
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "expired"
    await check_invariants(db, {standard.id: 8})


async def test_own_expired_hold_gives_its_tickets_to_its_owners_new_hold(
    client, db, attendee, event, standard
):
    # All 8 tickets held, then expired: the new hold needs exactly those tickets.
    ref = (await hold(client, attendee, event.id, (standard.id, 8))).json()["hold_reference"]
    await expire(db, ref)
    r = await hold(client, attendee, event.id, (standard.id, 8))
    assert r.status_code == 201, r.text
    assert await type_counters(db, standard.id) == {standard.id: (0, 8, 0)}
    assert await event_counters(db, event.id) == (0, 8)
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "expired"
    await check_invariants(db, {standard.id: 8})


async def test_hold_exists_answers_before_any_other_refusal(
    client, db, attendee, create_user, event, standard, vip
):
    assert (await hold(client, attendee, event.id, (standard.id, 8))).status_code == 201
    # What the second hold would otherwise be refused for: sold out, then capacity,
    # then a ticket type off sale.
    for lines in [((standard.id, 1),), ((vip.id, 3),)]:
        r = await hold(client, attendee, event.id, *lines)
        assert r.status_code == 409 and r.json()["code"] == "hold_exists", r.text
    async with db() as s, s.begin():
        await s.execute(
            text("UPDATE ticket_types SET is_active = false WHERE id = :i"), {"i": vip.id}
        )
    r = await hold(client, attendee, event.id, (vip.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "hold_exists"
    # Without a hold on the event, the same requests are refused for what they ask.
    other = await create_user("attendee")
    r = await hold(client, other, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    r = await hold(client, other, event.id, (vip.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_inactive"
    assert await type_counters(db, standard.id, vip.id) == {
        standard.id: (0, 8, 0),
        vip.id: (5, 0, 0),
    }
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_sweeper_puts_expired_holds_back_on_sale_once(
    client, db, settings, attendee, create_user, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 2))).json()["hold_reference"]
    other = await create_user("attendee")
    live = (await hold(client, other, event.id, (standard.id, 1))).json()["hold_reference"]
    await expire(db, ref)
    await sweep_expired_holds(db, settings)
    await sweep_expired_holds(db, settings)
    assert await type_counters(db, standard.id) == {standard.id: (7, 1, 0)}
    async with db() as s:
        statuses = dict(
            (await s.execute(text("SELECT hold_reference::text, status FROM holds"))).all()
        )
    assert statuses == {ref: "expired", live: "active"}
    await check_invariants(db, {standard.id: 8})


async def test_cancelling_the_event_releases_its_active_holds(
    client, db, attendee, create_user, organizer, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 2))).json()["hold_reference"]
    other = await create_user("attendee")
    done = (await hold(client, other, event.id, (standard.id, 1))).json()["hold_reference"]
    assert (await checkout(client, other, done)).status_code == 201
    r = await client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert r.status_code == 200 and r.json()["tickets_held"] == 0
    shown = (await client.get(f"/api/holds/{ref}/", headers=auth(attendee))).json()
    assert shown["status"] == "released"
    assert (await client.get(f"/api/holds/{done}/", headers=auth(other))).json()[
        "status"
    ] == "converted"
    r = await checkout(client, attendee, ref)
    assert r.status_code == 409 and r.json()["code"] == "hold_not_active"
    assert await type_counters(db, standard.id) == {standard.id: (8, 0, 0)}
    await check_invariants(db, {standard.id: 8})


async def test_idempotency_keys_are_per_route(client, db, attendee, event, standard):
    first = await hold(client, attendee, event.id, (standard.id, 2), key="k-1")
    assert first.status_code == 201
    replay = await hold(client, attendee, event.id, (standard.id, 2), key="k-1")
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["location"] == first.headers["location"]
    reused = await hold(client, attendee, event.id, (standard.id, 3), key="k-1")
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    booked = await book(client, attendee, event.id, (standard.id, 2), key="k-1")
    assert booked.status_code == 201
    assert await type_counters(db, standard.id) == {standard.id: (4, 2, 2)}
    await check_invariants(db, {standard.id: 8})


async def test_list_my_holds_newest_first_with_status_filter(
    client, db, attendee, organizer, event, standard
):
    other_event = await make_event(db, organizer.id)
    other_type = await make_ticket_type(db, other_event.id)
    a = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    b = (await hold(client, attendee, other_event.id, (other_type.id, 1))).json()
    assert (await checkout(client, attendee, a)).status_code == 201
    r = await client.get("/api/users/me/holds/", headers=auth(attendee))
    body = r.json()
    assert body["count"] == 2
    assert [h["hold_reference"] for h in body["results"]] == [b["hold_reference"], a]
    active = await client.get("/api/users/me/holds/?status=active", headers=auth(attendee))
    assert [h["hold_reference"] for h in active.json()["results"]] == [b["hold_reference"]]
    bad = await client.get("/api/users/me/holds/?status=nope", headers=auth(attendee))
    assert bad.status_code == 422
    assert (await client.get("/api/users/me/holds/")).status_code == 401


async def test_capacity_cannot_go_below_sold_and_held(
    client, db, attendee, organizer, event, standard
):
    assert (await hold(client, attendee, event.id, (standard.id, 4))).status_code == 201
    r = await client.patch(
        f"/api/events/{event.id}/", json={"total_capacity": 3}, headers=auth(organizer)
    )
    assert r.status_code == 409 and r.json()["code"] == "capacity_below_sold"
    r = await client.patch(
        f"/api/events/{event.id}/", json={"total_capacity": 4}, headers=auth(organizer)
    )
    assert r.status_code == 200 and r.json()["status"] == "sold_out"


async def test_hold_body_is_the_booking_request(client, attendee, event, standard):
    r = await client.post(
        "/api/holds/",
        json=order(event.id, (standard.id, 1), (standard.id, 1)),
        headers=auth(attendee),
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/holds/", json={"event_id": event.id, "items": []}, headers=auth(attendee)
    )
    assert r.status_code == 422


async def test_checkout_after_the_event_started_is_409_event_not_bookable(
    client, db, attendee, event, standard
):
    ref = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    async with db() as s, s.begin():
        await s.execute(
            text("UPDATE events SET start_time = now() - interval '1 minute' WHERE id = :i"),
            {"i": event.id},
        )
    r = await checkout(client, attendee, ref)
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"
    assert await type_counters(db, standard.id) == {standard.id: (7, 1, 0)}


async def test_payment_reference_with_a_nul_character_is_422(client, db, attendee, event, standard):
    ref = (await hold(client, attendee, event.id, (standard.id, 1))).json()["hold_reference"]
    r = await checkout(client, attendee, ref, payment_reference="pi\x00x")
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert await type_counters(db, standard.id) == {standard.id: (7, 1, 0)}


async def test_a_hold_of_the_most_tickets_at_the_highest_price_is_201(
    client, db, organizer, attendee, settings
):
    event = await make_event(db, organizer.id, total_capacity=settings.max_tickets_per_booking)
    top = await make_ticket_type(
        db, event.id, price="99999999.99", quantity_available=settings.max_tickets_per_booking
    )
    total = str(Decimal("99999999.99") * settings.max_tickets_per_booking)
    r = await hold(client, attendee, event.id, (top.id, settings.max_tickets_per_booking))
    assert r.status_code == 201, r.text
    assert r.json()["total_price"] == total
    c = await checkout(client, attendee, r.json()["hold_reference"])
    assert c.status_code == 201, c.text
    assert c.json()["total_price"] == total
    await check_invariants(db)
