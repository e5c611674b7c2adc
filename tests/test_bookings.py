"""Bookings through the API: the contract's rules, codes and what lands in the database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.booking_setup import check_invariants
from tests.factories import auth, book, client_of, make_event, make_ticket_type


async def counters(db, *ids):
    async with db() as s:
        rows = await s.execute(
            text(
                "SELECT id, quantity_available, quantity_sold FROM ticket_types WHERE id = ANY(:i)"
            ),
            {"i": list(ids)},
        )
        return {r.id: (r.quantity_available, r.quantity_sold) for r in rows}


async def test_booking_two_types_is_201_with_location_and_counts(
    client, db, attendee, event, standard, vip
):
    r = await book(client, attendee, event.id, (vip.id, 1), (standard.id, 2))
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"http://testserver/api/bookings/{body['booking_reference']}/"
    assert body["status"] == "confirmed" and body["cancelled_at"] is None
    assert body["event_id"] == event.id and body["event_name"] == "Concert"
    assert body["total_price"] == "149.50"
    assert {
        (i["ticket_type_name"], i["quantity"], i["price_at_booking"]) for i in body["items"]
    } == {
        ("Standard", 2, "25.00"),
        ("VIP", 1, "99.50"),
    }
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert await counters(db, standard.id, vip.id) == {standard.id: (6, 2), vip.id: (4, 1)}
    async with db() as s:
        assert (await s.execute(text("SELECT tickets_sold FROM events"))).scalar_one() == 3
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_get_booking_owner_only(client, attendee, create_user, organizer, event, standard):
    r = await book(client, attendee, event.id, (standard.id, 1))
    ref = r.json()["booking_reference"]
    mine = await client.get(f"/api/bookings/{ref}", headers=auth(attendee))
    assert mine.status_code == 200 and mine.json() == r.json()
    other = await create_user("attendee")
    for who in (other, organizer):
        r2 = await client.get(f"/api/bookings/{ref}/", headers=auth(who))
        assert r2.status_code == 404 and r2.json()["code"] == "not_found"
    r3 = await client.get(f"/api/bookings/{uuid.uuid4()}/", headers=auth(attendee))
    assert r3.status_code == 404
    r4 = await client.get("/api/bookings/not-a-uuid/", headers=auth(attendee))
    assert r4.status_code == 422
    assert (await client.get(f"/api/bookings/{ref}/")).status_code == 401


async def test_organizer_cannot_book(client, organizer, event, standard):
    r = await book(client, organizer, event.id, (standard.id, 1))
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"


async def test_organizer_is_refused_before_the_body_is_validated(client, organizer):
    """A login token names its role: 403 comes before 422, as authorization should."""
    from tests.factories_auth import bearer, login

    tokens = await login(client, organizer.username)
    r = await client.post("/api/bookings/", json={"items": []}, headers=bearer(tokens["access"]))
    assert r.status_code == 403 and r.json()["code"] == "permission_denied", r.text


async def test_anonymous_cannot_book(client, event, standard):
    body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 1}]}
    r = await client.post("/api/bookings", json=body)
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "body.items"),
        ([{"ticket_type_id": 1, "quantity": 0}], "body.items.0.quantity"),
        ([{"ticket_type_id": 1, "quantity": "x"}], "body.items.0.quantity"),
        ([{"ticket_type_id": 1}], "body.items.0.quantity"),
        ([{"ticket_type_id": i, "quantity": 1} for i in range(1, 22)], "body.items"),
    ],
)
async def test_invalid_shapes_are_422_with_paths(client, attendee, event, items, field):
    r = await client.post(
        "/api/bookings/", json={"event_id": event.id, "items": items}, headers=auth(attendee)
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert field in [e["field"] for e in body["errors"]]


async def test_not_json_is_422(client, attendee):
    r = await client.post(
        "/api/bookings/",
        content=b"{not json",
        headers={**auth(attendee), "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


async def test_huge_ids_are_422_not_500(client, attendee):
    r = await client.post(
        "/api/bookings/",
        json={"event_id": 10**30, "items": [{"ticket_type_id": 10**20, "quantity": 1}]},
        headers=auth(attendee),
    )
    assert r.status_code == 422


async def test_same_type_twice_is_422(client, db, attendee, event, standard):
    r = await book(client, attendee, event.id, (standard.id, 1), (standard.id, 2))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.items.1.ticket_type_id"
    await check_invariants(db)


async def test_more_than_max_tickets_is_422(client, db, attendee, event, standard, vip):
    r = await book(client, attendee, event.id, (standard.id, 6), (vip.id, 5))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.items"
    assert await counters(db, standard.id, vip.id) == {standard.id: (8, 0), vip.id: (5, 0)}


async def test_unknown_event_is_404(client, attendee, standard):
    r = await book(client, attendee, 999_999, (standard.id, 1))
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_type_of_another_event_is_422(client, db, organizer, attendee, event, standard):
    other = await make_event(db, organizer.id, name="Other")
    foreign = await make_ticket_type(db, other.id)
    r = await book(client, attendee, event.id, (standard.id, 1), (foreign.id, 1))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.items.1.ticket_type_id"
    assert (await counters(db, standard.id))[standard.id] == (8, 0)


async def test_sold_out_is_409_and_writes_nothing(client, db, attendee, event, standard, vip):
    r = await book(client, attendee, event.id, (standard.id, 1), (vip.id, 6))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    r = await book(client, attendee, event.id, (vip.id, 4))
    assert r.status_code == 201
    r = await book(client, attendee, event.id, (standard.id, 1), (vip.id, 2))
    assert r.status_code == 409 and r.json()["code"] == "sold_out"
    assert "VIP" in r.json()["detail"]
    assert await counters(db, standard.id, vip.id) == {standard.id: (8, 0), vip.id: (1, 4)}
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 1


async def test_event_capacity_is_shared_across_types(client, db, attendee, event, standard, vip):
    # capacity 10; Standard 8 + VIP 5 on sale
    assert (await book(client, attendee, event.id, (standard.id, 7))).status_code == 201
    r = await book(client, attendee, event.id, (vip.id, 4))
    assert r.status_code == 409 and r.json()["code"] == "capacity_exceeded"
    assert (await book(client, attendee, event.id, (vip.id, 3))).status_code == 201
    await check_invariants(db, {standard.id: 8, vip.id: 5})


async def test_inactive_type_is_409(client, db, attendee, event, standard):
    async with db() as s:
        await s.execute(
            text("UPDATE ticket_types SET is_active = false WHERE id=:i"), {"i": standard.id}
        )
        await s.commit()
    r = await book(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "ticket_type_inactive"


@pytest.mark.parametrize("state", ["cancelled", "started"])
async def test_event_not_bookable(client, db, attendee, event, standard, state):
    sql = {
        "cancelled": "UPDATE events SET cancelled_at = now()",
        "started": "UPDATE events SET start_time = now() - interval '1 minute'",
    }[state]
    async with db() as s:
        await s.execute(text(sql))
        await s.commit()
    r = await book(client, attendee, event.id, (standard.id, 1))
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"


async def test_cancel_releases_once_then_409(client, db, attendee, event, standard):
    r = await book(client, attendee, event.id, (standard.id, 3))
    ref = r.json()["booking_reference"]
    c1 = await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    assert c1.status_code == 200, c1.text
    assert c1.json()["status"] == "cancelled" and c1.json()["cancelled_at"] is not None
    assert (await counters(db, standard.id))[standard.id] == (8, 0)
    c2 = await client.put(f"/api/bookings/{ref}/cancel", headers=auth(attendee))
    assert c2.status_code == 409 and c2.json()["code"] == "already_cancelled"
    assert (await counters(db, standard.id))[standard.id] == (8, 0)
    await check_invariants(db, {standard.id: 8})


async def test_cancel_someone_elses_booking_is_404(client, attendee, create_user, event, standard):
    ref = (await book(client, attendee, event.id, (standard.id, 1))).json()["booking_reference"]
    other = await create_user("attendee")
    r = await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(other))
    assert r.status_code == 404


async def test_cancel_after_event_started_is_409(client, db, attendee, event, standard):
    ref = (await book(client, attendee, event.id, (standard.id, 1))).json()["booking_reference"]
    async with db() as s:
        await s.execute(text("UPDATE events SET start_time = now() - interval '1 hour'"))
        await s.commit()
    r = await client.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendee))
    assert r.status_code == 409 and r.json()["code"] == "event_not_bookable"
    assert (await counters(db, standard.id))[standard.id] == (7, 1)


async def test_idempotent_retry_returns_same_booking(client, db, attendee, event, standard):
    r1 = await book(client, attendee, event.id, (standard.id, 2), key="k-1")
    r2 = await book(client, attendee, event.id, (standard.id, 2), key="k-1")
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["booking_reference"] == r2.json()["booking_reference"]
    assert r2.headers["location"] == r1.headers["location"]
    assert (await counters(db, standard.id))[standard.id] == (6, 2)
    r3 = await book(client, attendee, event.id, (standard.id, 3), key="k-1")
    assert r3.status_code == 422 and r3.json()["code"] == "idempotency_key_reused"
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM bookings"))).scalar_one() == 1


async def test_idempotency_keys_are_per_user(client, db, attendee, create_user, event, standard):
    other = await create_user("attendee")
    r1 = await book(client, attendee, event.id, (standard.id, 1), key="same")
    r2 = await book(client, other, event.id, (standard.id, 1), key="same")
    assert r1.json()["booking_reference"] != r2.json()["booking_reference"]


async def test_failed_booking_does_not_burn_the_key(client, db, attendee, event, standard):
    r1 = await book(client, attendee, event.id, (standard.id, 9), key="retry")
    assert r1.status_code == 409
    async with db() as s:
        await s.execute(text("UPDATE ticket_types SET quantity_available = 20"))
        await s.commit()
    r2 = await book(client, attendee, event.id, (standard.id, 9), key="retry")
    assert r2.status_code == 201


async def test_idempotency_key_too_long_is_422(client, attendee, event, standard):
    r = await book(client, attendee, event.id, (standard.id, 1), key="x" * 256)
    assert r.status_code == 422


async def test_my_bookings_newest_first_filtered_and_paginated(
    client, db, attendee, create_user, organizer, event, standard, vip
):
    refs = []
    for _ in range(3):
        refs.append(
            (await book(client, attendee, event.id, (standard.id, 1))).json()["booking_reference"]
        )
    await client.put(f"/api/bookings/{refs[0]}/cancel/", headers=auth(attendee))
    other = await create_user("attendee")
    await book(client, other, event.id, (vip.id, 1))

    r = await client.get("/api/users/me/bookings/?page_size=2", headers=auth(attendee))
    body = r.json()
    assert body["count"] == 3
    assert [b["booking_reference"] for b in body["results"]] == [refs[2], refs[1]]
    assert body["next"] == "http://testserver/api/users/me/bookings/?page_size=2&page=2"
    r = await client.get("/api/users/me/bookings?status=cancelled", headers=auth(attendee))
    assert [b["booking_reference"] for b in r.json()["results"]] == [refs[0]]
    r = await client.get(f"/api/users/me/bookings/?event={event.id + 1}", headers=auth(attendee))
    assert r.json()["count"] == 0
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await client.get(
        "/api/users/me/bookings/", params={"created_at__gte": future}, headers=auth(attendee)
    )
    assert r.json()["count"] == 0
    r = await client.get(
        "/api/users/me/bookings/", params={"created_at__lte": future}, headers=auth(attendee)
    )
    assert r.json()["count"] == 3
    r = await client.get(
        "/api/users/me/bookings/?created_at__gte=2030-01-01T00:00:00", headers=auth(attendee)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.created_at__gte"
    r = await client.get("/api/users/me/bookings/?status=weird", headers=auth(attendee))
    assert r.status_code == 422
    assert (await client.get("/api/users/me/bookings/")).status_code == 401


async def test_event_bookings_for_owner_only(
    client, db, attendee, create_user, organizer, event, standard
):
    await book(client, attendee, event.id, (standard.id, 2))
    r = await client.get(f"/api/events/{event.id}/bookings/", headers=auth(organizer))
    assert r.status_code == 200
    assert r.json()["count"] == 1
    assert r.json()["results"][0]["user"]["username"] == attendee.username
    other_org = await create_user("organizer")
    r = await client.get(f"/api/events/{event.id}/bookings/", headers=auth(other_org))
    assert r.status_code == 403
    r = await client.get(f"/api/events/{event.id}/bookings/", headers=auth(attendee))
    assert r.status_code == 403
    r = await client.get("/api/events/999999/bookings/", headers=auth(organizer))
    assert r.status_code == 404


async def test_lock_timeout_is_503_busy_and_writes_nothing(settings, db, attendee, event, standard):
    """A booking that cannot get the event lock in time is 503 busy with Retry-After."""

    busy_soon = settings.model_copy(update={"lock_timeout_ms": 200})
    async with client_of(busy_soon, "http://t") as c, db() as holder:
        await holder.execute(text("SELECT id FROM events WHERE id=:i FOR UPDATE"), {"i": event.id})
        r = await book(c, attendee, event.id, (standard.id, 1))
        await holder.rollback()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "busy" and r.headers["retry-after"]
    assert (await counters(db, standard.id))[standard.id] == (8, 0)


async def test_listing_bookings_uses_constant_queries(
    app, client, db, attendee, event, standard, vip
):
    from sqlalchemy import event as sa_event

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    async def queries_for(page_size: int) -> int:
        statements.clear()
        r = await client.get(
            f"/api/users/me/bookings/?page_size={page_size}", headers=auth(attendee)
        )
        assert r.status_code == 200
        return len(statements)

    for _ in range(4):
        await book(client, attendee, event.id, (standard.id, 1), (vip.id, 1))
    sync_engine = app.state.engine.sync_engine
    sa_event.listen(sync_engine, "before_cursor_execute", count)
    try:
        small, large = await queries_for(1), await queries_for(100)
    finally:
        sa_event.remove(sync_engine, "before_cursor_execute", count)
    assert small == large
    assert large <= 4  # user, count, page, items


async def test_idempotency_keys_are_kept_24h_then_purged(client, db, attendee, event, standard):
    from app.bookings.service import purge_expired_idempotency_keys

    await book(client, attendee, event.id, (standard.id, 1), key="old")
    await book(client, attendee, event.id, (standard.id, 1), key="recent")
    age = text(
        "UPDATE idempotency_keys SET created_at = now() - CAST(:age AS interval) WHERE key=:k"
    )
    async with db() as s:
        await s.execute(age, {"age": timedelta(hours=25), "k": "old"})
        await s.execute(age, {"age": timedelta(hours=23), "k": "recent"})
        assert await purge_expired_idempotency_keys(s, 24) == 1
        await s.commit()
        keys = (await s.execute(text("SELECT key FROM idempotency_keys"))).scalars().all()
    assert keys == ["recent"]


@pytest.mark.parametrize("how", ["deactivated", "password_changed", "deleted"])
async def test_dead_token_cannot_book_and_writes_nothing(
    client, db, attendee, event, standard, how
):
    """Booking reads the account in its own first statement; a dead token is still 401."""
    headers = auth(attendee)  # issued before the change below
    change = {
        "deactivated": "UPDATE users SET is_active = false WHERE id = :u",
        "password_changed": "UPDATE users SET password_changed_at = now() + interval '1 second'"
        " WHERE id = :u",
        "deleted": "DELETE FROM users WHERE id = :u",
    }[how]
    async with db() as s, s.begin():
        await s.execute(text(change), {"u": attendee.id})
    body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 1}]}
    r = await client.post("/api/bookings/", json=body, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text
    assert (await counters(db, standard.id))[standard.id] == (8, 0)


async def test_driver_connection_given_back_mid_transaction_is_discarded(settings):
    """A request cancelled inside its transaction must not hand that transaction on."""
    from app.core.db import UnitOfWork, create_engine, make_sessionmaker

    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        uow = UnitOfWork(make_sessionmaker(engine))
        async with uow.driver() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with uow.driver() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # pooled, reused
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_behind (x int)")
        async with uow.driver() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
    finally:
        await engine.dispose()
