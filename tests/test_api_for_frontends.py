"""What a browser client relies on at runtime: tokens on public reads, absolute links,
`Location` on every 201, problem bodies as the schema types them, money strings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.factories import (
    TEST_PASSWORD,
    auth,
    book,
    client_of,
    make_event,
    make_settings,
    make_ticket_type,
)

MONEY = re.compile(r"^-?\d+\.\d{2}$")


@pytest.fixture
async def on_sale(db, organizer) -> tuple[Any, Any]:
    event = await make_event(db, organizer, name="Gala")
    ticket_type = await make_ticket_type(db, event, name="Seat", price="12.50")
    return event, ticket_type


def public_reads(event_id: int, ticket_type_id: int) -> list[str]:
    return [
        "/api/events/",
        f"/api/events/{event_id}/",
        f"/api/events/{event_id}/ticket-types/",
        f"/api/events/{event_id}/ticket-types/{ticket_type_id}/",
    ]


async def test_public_reads_check_a_token_that_is_sent(
    client, create_user, attendee, on_sale
) -> None:
    event, ticket_type = on_sale
    gone = await create_user(is_active=False)
    for path in public_reads(event.id, ticket_type.id):
        assert (await client.get(path)).status_code == 200, path
        assert (await client.get(path, headers=auth(attendee))).status_code == 200, path
        for headers in (
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": "Basic abc"},
            auth(gone),
        ):
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["code"] == "invalid_token"
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/auth/register/",
            {"username": "kim", "email": "kim@example.com", "password": "x" * 9},
        ),
        ("/api/auth/login/", {"username": "kim", "password": TEST_PASSWORD}),
        ("/api/auth/token/refresh/", {"refresh": "x"}),
        ("/api/auth/logout/", {"refresh": "x"}),
        ("/api/auth/password-reset-request/", {"email": "kim@example.com"}),
        ("/api/auth/password-reset-confirm/MQ/abc/", {"new_password": "x" * 9}),
    ],
)
async def test_public_auth_routes_check_a_token_that_is_sent(
    client, create_user, path, body
) -> None:
    gone = await create_user(is_active=False)
    for headers in ({"Authorization": "Bearer not-a-jwt"}, auth(gone)):
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"] == "invalid_token"
    # Without a token the route answers on its own terms.
    r = await client.post(path, json=body)
    assert r.status_code != 401 or r.json()["code"] in {"invalid_credentials", "invalid_token"}


async def test_a_ticket_type_is_read_where_its_location_points(client, on_sale) -> None:
    event, ticket_type = on_sale
    r = await client.get(f"/api/events/{event.id}/ticket-types/{ticket_type.id}/")
    assert r.status_code == 200
    assert r.json()["id"] == ticket_type.id and r.json()["price"] == "12.50"
    other = await client.get(f"/api/events/{event.id + 1}/ticket-types/{ticket_type.id}/")
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    r = await client.get(f"/api/events/{event.id}/ticket-types/{ticket_type.id + 1}/")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_every_201_sends_an_absolute_location_that_answers(client, organizer) -> None:
    r = await client.post(
        "/api/auth/register/",
        json={"username": "lena", "email": "lena@example.com", "password": TEST_PASSWORD},
    )
    assert r.status_code == 201 and r.json()["role"] == "attendee"
    assert r.headers["location"] == "http://testserver/api/auth/profile/"
    login = await client.post(
        "/api/auth/login/", json={"username": "lena", "password": TEST_PASSWORD}
    )
    lena = {"Authorization": f"Bearer {login.json()['access']}"}
    assert (await client.get(r.headers["location"], headers=lena)).json()["username"] == "lena"

    r = await client.post(
        "/api/events/",
        json={
            "name": "Gala",
            "location": "Oslo",
            "start_time": "2031-01-01T19:00:00+01:00",
            "total_capacity": 5,
        },
        headers=auth(organizer),
    )
    assert r.status_code == 201
    event = r.json()
    assert r.headers["location"] == f"http://testserver/api/events/{event['id']}/"
    assert (await client.get(r.headers["location"])).json()["id"] == event["id"]

    r = await client.post(
        f"/api/events/{event['id']}/ticket-types/",
        json={"name": "Seat", "price": 10, "quantity_available": 5},
        headers=auth(organizer),
    )
    assert r.status_code == 201
    location = f"http://testserver/api/events/{event['id']}/ticket-types/{r.json()['id']}/"
    assert r.headers["location"] == location
    assert (await client.get(location)).json() == r.json()

    r = await client.post(
        "/api/bookings/",
        json={
            "event_id": event["id"],
            "items": [{"ticket_type_id": r.json()["id"], "quantity": 1}],
        },
        headers=lena,
    )
    assert r.status_code == 201
    reference = r.json()["booking_reference"]
    assert r.headers["location"] == f"http://testserver/api/bookings/{reference}/"
    assert (await client.get(r.headers["location"], headers=lena)).json() == r.json()


async def test_pagination_links_are_absolute_and_followable(client, db, organizer) -> None:
    for n in range(5):
        await make_event(db, organizer, name=f"Night {n}", location="Lyon")
    r = await client.get("/api/events/?location=Lyon&ordering=-start_time&page_size=2")
    first = r.json()
    assert first["previous"] is None
    assert first["next"] == (
        "http://testserver/api/events/?location=Lyon&ordering=-start_time&page_size=2&page=2"
    )
    second = (await client.get(first["next"])).json()
    assert second["previous"] == (
        "http://testserver/api/events/?location=Lyon&ordering=-start_time&page_size=2&page=1"
    )
    third = (await client.get(second["next"])).json()
    assert third["next"] is None and len(third["results"]) == 1
    seen = [e["name"] for page in (first, second, third) for e in page["results"]]
    assert sorted(seen) == [f"Night {n}" for n in range(5)]


@pytest.fixture
async def public_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a proxy: PUBLIC_BASE_URL decides the links it hands out."""
    async with client_of(
        make_settings(database_url, public_base_url="https://tickets.example.com/"),
        "http://10.0.0.7:8000",
    ) as c:
        yield c


async def test_links_and_location_use_public_base_url(
    public_client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer, name="Proxy night")
    ticket_type = await make_ticket_type(db, event)
    for _ in range(2):
        r = await public_client.post(
            "/api/bookings",
            json={
                "event_id": event.id,
                "items": [{"ticket_type_id": ticket_type.id, "quantity": 1}],
            },
            headers=auth(attendee),
        )
        assert r.status_code == 201
        reference = r.json()["booking_reference"]
        assert r.headers["location"] == f"https://tickets.example.com/api/bookings/{reference}/"
    # The form asked for (no trailing slash) is given back in the contract's form.
    r = await public_client.get("/api/users/me/bookings?page_size=1", headers=auth(attendee))
    assert (
        r.json()["next"] == "https://tickets.example.com/api/users/me/bookings/?page_size=1&page=2"
    )
    r = await public_client.get(
        f"/api/events/{event.id}/bookings/?page=2&page_size=1&status=confirmed",
        headers=auth(organizer),
    )
    assert r.json()["previous"] == (
        f"https://tickets.example.com/api/events/{event.id}/bookings/"
        "?page_size=1&status=confirmed&page=1"
    )


async def test_only_validation_problems_carry_errors(client, attendee, on_sale) -> None:
    event, _ = on_sale
    invalid = [
        await client.post(
            "/api/bookings/", json={"event_id": event.id, "items": []}, headers=auth(attendee)
        ),
        await client.get("/api/events/?organizer=someone"),
        await client.get("/api/events/?page_size=101"),
    ]
    for r in invalid:
        body = r.json()
        assert r.status_code == 422 and body["code"] == "validation_error", r.text
        assert body["errors"] and all({"field", "message"} == set(e) for e in body["errors"])
    answered = [
        await client.get("/api/events/999999/"),
        await client.get("/api/auth/profile/"),
        await client.post("/api/auth/login/", json={"username": "nobody", "password": "x" * 8}),
        await client.post("/api/events/", json={}, headers=auth(attendee)),
    ]
    for r in answered:
        assert r.status_code in (401, 403, 404), r.text
        assert "errors" not in r.json()
        assert set(r.json()) == {"type", "title", "status", "detail", "code"}


async def test_money_is_sent_as_the_declared_two_place_string(client, attendee, on_sale) -> None:
    event, ticket_type = on_sale
    r = await book(client, attendee, event.id, (ticket_type.id, 3))
    booking = r.json()
    assert booking["total_price"] == "37.50" and MONEY.match(booking["total_price"])
    assert all(MONEY.match(item["price_at_booking"]) for item in booking["items"])
    types = (await client.get(f"/api/events/{event.id}/ticket-types/")).json()
    assert all(MONEY.match(t["price"]) for t in types)
