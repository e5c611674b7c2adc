"""No input gives a 5xx: control characters, numbers past a column, undecodable bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.events import service as events_service
from app.events.schemas import INT4_MAX
from tests.factories import auth, make_event, make_ticket_type

# The largest page the schema accepts: past any list's end, and OFFSET never overflows.
LAST_PAGE = str(2**31 - 1)


def _event_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "Jazz night",
        "location": "Berlin",
        "start_time": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "total_capacity": 100,
    }
    body.update(overrides)
    return body


def _assert_validation_error(response, field_prefix: str | None = None) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["errors"]
    if field_prefix is not None:
        assert any(e["field"].startswith(field_prefix) for e in body["errors"]), body


@pytest.mark.parametrize(
    "query",
    [
        "search=%00",
        "location=%00",
        "organizer=%00",
        "search=a%01b",
        "location=Ber%0Alin",
    ],
)
async def test_control_characters_in_list_filters_are_422(client, query) -> None:
    r = await client.get(f"/api/events/?{query}")
    _assert_validation_error(r, "query.")


async def test_nul_in_login_username_is_422(client) -> None:
    r = await client.post("/api/auth/login/", json={"username": "a\u0000b", "password": "x" * 8})
    _assert_validation_error(r, "body.username")


async def test_nul_in_registration_is_422(client) -> None:
    body = {"username": "alice", "email": "alice@example.com", "password": "Good-pass\u0000-42"}
    r = await client.post("/api/auth/register/", json=body)
    _assert_validation_error(r, "body.password")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "Jazz\r\nBcc: victim@example.com"}, "body.name"),
        ({"location": "Ber\nlin"}, "body.location"),
        ({"name": "Jazz\u0000"}, "body.name"),
        ({"description": "Talks\u0000"}, "body.description"),
        ({"description": "\ud800"}, "body.description"),
    ],
)
async def test_control_characters_in_event_fields_are_422(
    client, db, organizer, overrides, field
) -> None:
    # json.dumps escapes every non-ASCII character, a lone surrogate included ("\\ud800").
    r = await client.post(
        "/api/events/",
        content=json.dumps(_event_body(**overrides)),
        headers={**auth(organizer), "Content-Type": "application/json"},
    )
    _assert_validation_error(r, field)
    async with db() as s:
        assert await s.scalar(text("SELECT count(*) FROM events")) == 0


async def test_line_breaks_in_a_description_are_kept(client, organizer) -> None:
    body = _event_body(description="Line one\nLine two\tindented\r\n")
    r = await client.post("/api/events/", json=body, headers=auth(organizer))
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "Line one\nLine two\tindented\r\n"


async def test_ticket_type_name_with_a_line_break_is_422(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    r = await client.post(
        f"/api/events/{event.id}/ticket-types/",
        json={"name": "VIP\nfree", "price": "1.00", "quantity_available": 5},
        headers=auth(organizer),
    )
    _assert_validation_error(r, "body.name")


async def test_nul_in_idempotency_key_is_422(client, db, organizer, attendee) -> None:
    event = await make_event(db, organizer)
    ticket_type = await make_ticket_type(db, event)
    body = {"event_id": event.id, "items": [{"ticket_type_id": ticket_type.id, "quantity": 1}]}
    headers = {**auth(attendee), "Idempotency-Key": "key\u0000"}
    r = await client.post("/api/bookings/", json=body, headers=headers)
    _assert_validation_error(r, "header.")


async def test_nul_in_reset_link_path_is_422(client) -> None:
    r = await client.post(
        "/api/auth/password-reset-confirm/MQ/abc%00def/", json={"new_password": "Good-pass-4242"}
    )
    _assert_validation_error(r, "path.token")


async def test_highest_page_is_200_empty(client, db, organizer, attendee) -> None:
    event = await make_event(db, organizer)
    for path, user in [
        ("/api/events/", None),
        ("/api/users/me/bookings/", attendee),
        (f"/api/events/{event.id}/bookings/", organizer),
    ]:
        headers = auth(user) if user else {}
        r = await client.get(f"{path}?page={LAST_PAGE}&page_size=100", headers=headers)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert body["results"] == [] and body["next"] is None, path


@pytest.mark.parametrize("page", ["99999999999999999999", "9" * 5000])
async def test_page_past_the_documented_bound_is_422(client, page) -> None:
    r = await client.get("/api/events/?page=" + page)
    _assert_validation_error(r, "query.page")


async def test_highest_price_times_most_tickets_fits_the_total(
    client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer)
    ticket_type = await make_ticket_type(db, event, price="99999999.99", quantity_available=20)
    body = {"event_id": event.id, "items": [{"ticket_type_id": ticket_type.id, "quantity": 10}]}
    r = await client.post("/api/bookings/", json=body, headers=auth(attendee))
    assert r.status_code == 201, r.text
    assert r.json()["total_price"] == "999999999.90"


async def _sold_ticket_type(client, db, organizer, attendee):
    event = await make_event(db, organizer)
    ticket_type = await make_ticket_type(db, event, quantity_available=5)
    body = {"event_id": event.id, "items": [{"ticket_type_id": ticket_type.id, "quantity": 2}]}
    r = await client.post("/api/bookings/", json=body, headers=auth(attendee))
    assert r.status_code == 201, r.text
    return event, ticket_type, r.json()["booking_reference"]


async def test_quantity_that_would_overflow_on_release_is_422(
    client, db, organizer, attendee
) -> None:
    event, ticket_type, reference = await _sold_ticket_type(client, db, organizer, attendee)
    path = f"/api/events/{event.id}/ticket-types/{ticket_type.id}/"
    r = await client.patch(path, json={"quantity_available": INT4_MAX}, headers=auth(organizer))
    _assert_validation_error(r, "body.quantity_available")
    r = await client.patch(path, json={"quantity_available": INT4_MAX - 2}, headers=auth(organizer))
    assert r.status_code == 200, r.text
    r = await client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    assert r.status_code == 200, r.text
    async with db() as s:
        row = (
            await s.execute(
                text("SELECT quantity_available, quantity_sold FROM ticket_types WHERE id = :i"),
                {"i": ticket_type.id},
            )
        ).one()
    assert tuple(row) == (INT4_MAX, 0)


async def test_data_error_from_postgres_is_422_and_writes_nothing(
    client, db, organizer, attendee, monkeypatch
) -> None:
    # Without the schema's bound the counter can be set where a release overflows int4:
    # PostgreSQL then refuses the cancel (SQLSTATE 22003), which must be a 422, not a 500.
    monkeypatch.setattr(events_service, "_ensure_counters_fit", lambda *a: None)
    event, ticket_type, reference = await _sold_ticket_type(client, db, organizer, attendee)
    path = f"/api/events/{event.id}/ticket-types/{ticket_type.id}/"
    r = await client.patch(path, json={"quantity_available": INT4_MAX}, headers=auth(organizer))
    assert r.status_code == 200, r.text
    r = await client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    _assert_validation_error(r)
    assert "out of range" in r.json()["detail"]
    assert "SQL" not in r.json()["detail"] and "int" not in r.json()["detail"]
    async with db() as s:
        status = await s.scalar(
            text("SELECT status FROM bookings WHERE booking_reference = :r"), {"r": reference}
        )
    assert status == "confirmed"


@pytest.mark.parametrize(
    "body", [b'{"username": "\xff\xfe", "password": "x"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}']
)
async def test_invalid_utf8_body_is_422_like_invalid_json(client, body) -> None:
    r = await client.post(
        "/api/auth/login/", content=body, headers={"Content-Type": "application/json"}
    )
    _assert_validation_error(r, "body")


async def test_no_operation_documents_a_400(client) -> None:
    schema = (await client.get("/api/schema")).json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "400" not in operation.get("responses", {}), (method, path)
