"""The events list: default and explicit status filters, each filter, orderings, pagination."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import update

from app.core.db import UnitOfWork
from app.events.models import Event, TicketType
from tests.factories import auth, make_event, make_ticket_type

NOW = datetime.now(UTC)


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["name"] for e in response.json()["results"]]


def error_fields(response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    return [e["field"] for e in response.json()["errors"]]


async def set_columns(db, model, row_id: int, **values: object) -> None:
    async with db() as session:
        await session.execute(update(model).where(model.id == row_id).values(**values))
        await session.commit()


@pytest.fixture
async def statuses(db, organizer) -> dict[str, Event]:
    """One event in each status, set up through the database."""
    upcoming = await make_event(db, organizer, name="upcoming", start_time=NOW + timedelta(days=1))
    sold_out = await make_event(db, organizer, name="sold_out", start_time=NOW + timedelta(days=2))
    await set_columns(db, Event, sold_out.id, tickets_sold=sold_out.total_capacity)
    cancelled = await make_event(db, organizer, name="cancelled", start_time=NOW + timedelta(3))
    await set_columns(db, Event, cancelled.id, cancelled_at=NOW)
    past = await make_event(
        db, organizer, name="past", start_time=NOW - timedelta(days=2), end_time=None
    )
    return {"upcoming": upcoming, "sold_out": sold_out, "cancelled": cancelled, "past": past}


# --- status ---------------------------------------------------------------


async def test_default_lists_upcoming_and_sold_out_only(client, statuses) -> None:
    r = await client.get("/api/events/")
    assert names(r) == ["upcoming", "sold_out"]
    assert [e["status"] for e in r.json()["results"]] == ["upcoming", "sold_out"]
    assert r.json()["count"] == 2


async def test_status_filter_is_repeatable(client, statuses) -> None:
    assert names(await client.get("/api/events/?status=past")) == ["past"]
    assert names(await client.get("/api/events/?status=cancelled&status=past")) == [
        "past",
        "cancelled",
    ]
    r = await client.get("/api/events?status=upcoming&status=sold_out&status=cancelled&status=past")
    assert r.json()["count"] == 4
    assert names(await client.get("/api/events/?status=past,cancelled")) == ["past", "cancelled"]
    assert names(await client.get("/api/events/?status=")) == ["upcoming", "sold_out"]


async def test_unknown_status_is_422(client) -> None:
    assert error_fields(await client.get("/api/events/?status=soon")) == ["query.status.0"]
    assert error_fields(await client.get("/api/events/?status=past&status=soon")) == [
        "query.status.1"
    ]


async def test_past_uses_end_time_when_there_is_one(client, db, organizer) -> None:
    running = await make_event(
        db,
        organizer,
        name="running",
        start_time=NOW - timedelta(hours=1),
        end_time=NOW + timedelta(hours=5),
    )
    await make_event(
        db,
        organizer,
        name="ended",
        start_time=NOW - timedelta(hours=5),
        end_time=NOW - timedelta(hours=1),
    )
    assert names(await client.get("/api/events/")) == ["running"]
    assert names(await client.get("/api/events/?status=past")) == ["ended"]
    r = await client.get(f"/api/events/{running.id}/")
    assert r.json()["status"] == "upcoming"


async def test_cancelled_wins_over_past_and_past_over_sold_out(client, db, organizer) -> None:
    event = await make_event(db, organizer, start_time=NOW - timedelta(days=1), total_capacity=1)
    await set_columns(db, Event, event.id, tickets_sold=1)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "past"
    await set_columns(db, Event, event.id, cancelled_at=NOW)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "cancelled"


async def test_sold_out_when_no_active_ticket_type_has_tickets_left(client, db, organizer) -> None:
    event = await make_event(db, organizer)
    # No ticket type yet: nothing is on sale, but nothing is sold out either.
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "upcoming"
    empty = await make_ticket_type(db, event, quantity_available=0)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "sold_out"
    inactive = await make_ticket_type(db, event, quantity_available=10, is_active=False)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "sold_out"
    assert names(await client.get("/api/events/?status=sold_out")) == [event.name]
    await set_columns(db, TicketType, inactive.id, is_active=True)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "upcoming"
    await set_columns(db, TicketType, inactive.id, quantity_available=0)
    await set_columns(db, TicketType, empty.id, quantity_available=1)
    assert names(await client.get("/api/events/?status=upcoming")) == [event.name]


async def test_sold_out_when_tickets_sold_reaches_capacity(client, db, organizer) -> None:
    event = await make_event(db, organizer, total_capacity=3)
    await make_ticket_type(db, event, quantity_available=10)
    await set_columns(db, Event, event.id, tickets_sold=2)
    assert (await client.get(f"/api/events/{event.id}/")).json()["status"] == "upcoming"
    await set_columns(db, Event, event.id, tickets_sold=3)
    body = (await client.get(f"/api/events/{event.id}/")).json()
    assert body["status"] == "sold_out" and body["tickets_remaining"] == 0


# --- filters --------------------------------------------------------------


async def test_location_is_case_insensitive_exact(client, db, organizer) -> None:
    await make_event(db, organizer, name="a", location="Berlin")
    await make_event(db, organizer, name="b", location="BERLIN")
    await make_event(db, organizer, name="c", location="Berlin Mitte")
    assert sorted(names(await client.get("/api/events/?location=berlin"))) == ["a", "b"]
    assert names(await client.get("/api/events/?location=Berlin%20Mitte")) == ["c"]
    assert names(await client.get("/api/events/?location=Ber")) == []


async def test_search_matches_name_or_description_case_insensitively(client, db, organizer) -> None:
    await make_event(db, organizer, name="Summer Jazz Festival", description="Open air")
    await make_event(db, organizer, name="Python Conference", description="Talks about JAZZ")
    await make_event(db, organizer, name="Rock Night", description="Loud guitars")
    assert sorted(names(await client.get("/api/events/?search=jazz"))) == [
        "Python Conference",
        "Summer Jazz Festival",
    ]
    assert names(await client.get("/api/events/?search=FESTIVAL")) == ["Summer Jazz Festival"]
    # A word's beginning is enough, and every word must match.
    assert names(await client.get("/api/events/?search=conf")) == ["Python Conference"]
    assert names(await client.get("/api/events/?search=summer%20fest")) == ["Summer Jazz Festival"]
    assert names(await client.get("/api/events/?search=summer%20rock")) == []
    assert names(await client.get("/api/events/?search=guitar")) == ["Rock Night"]
    assert names(await client.get("/api/events/?search=opera")) == []


async def test_search_with_punctuation_never_fails(client, db, organizer) -> None:
    await make_event(db, organizer, name="C++ & Rust: a meetup!")
    for term in ["!!!", "'", "a & | !b", "(:*)", "100%", "\\", "meetup!", "rust:*"]:
        r = await client.get("/api/events/", params={"search": term})
        assert r.status_code == 200, term
    assert names(await client.get("/api/events/", params={"search": "meetup!"})) == [
        "C++ & Rust: a meetup!"
    ]
    assert names(await client.get("/api/events/", params={"search": "++"})) == [
        "C++ & Rust: a meetup!"
    ]
    assert names(await client.get("/api/events/", params={"search": "%"})) == []


async def test_start_after_and_before(client, db, organizer) -> None:
    for days in (1, 5, 10):
        await make_event(db, organizer, name=f"day{days}", start_time=NOW + timedelta(days=days))
    after = quote((NOW + timedelta(days=2)).isoformat())
    before = quote((NOW + timedelta(days=9)).isoformat())
    assert names(await client.get(f"/api/events/?start_after={after}")) == ["day5", "day10"]
    assert names(await client.get(f"/api/events/?start_before={before}")) == ["day1", "day5"]
    assert names(await client.get(f"/api/events/?start_after={after}&start_before={before}")) == [
        "day5"
    ]
    # An unencoded `+` of an offset arrives as a space: still understood.
    raw = (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert names(await client.get(f"/api/events/?start_after={raw}")) == ["day5", "day10"]


async def test_naive_or_invalid_datetime_filter_is_422(client) -> None:
    assert error_fields(await client.get("/api/events/?start_after=2031-01-01T10:00:00")) == [
        "query.start_after"
    ]
    assert error_fields(await client.get("/api/events/?start_before=2031-01-01")) == [
        "query.start_before"
    ]
    assert error_fields(await client.get("/api/events/?start_before=tomorrow")) == [
        "query.start_before"
    ]


async def test_organizer_filter_by_id_and_me(client, db, create_user) -> None:
    alice = await create_user("organizer")
    bob = await create_user("organizer")
    await make_event(db, alice, name="alice's")
    await make_event(db, bob, name="bob's")
    assert names(await client.get(f"/api/events/?organizer={alice.id}")) == ["alice's"]
    assert names(await client.get("/api/events/?organizer=me", headers=auth(bob))) == ["bob's"]
    assert names(await client.get("/api/events/?organizer=123456")) == []


async def test_organizer_me_needs_a_token(client) -> None:
    r = await client.get("/api/events/?organizer=me")
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_invalid_organizer_is_422(client) -> None:
    assert error_fields(await client.get("/api/events/?organizer=alice")) == ["query.organizer"]


# --- ordering -------------------------------------------------------------


@pytest.fixture
async def three_events(db, organizer) -> None:
    # Created in the order b, a, c; starting a, b, c; capacities c < a < b.
    await make_event(db, organizer, name="b", start_time=NOW + timedelta(days=2), total_capacity=30)
    await make_event(db, organizer, name="a", start_time=NOW + timedelta(days=1), total_capacity=20)
    await make_event(db, organizer, name="c", start_time=NOW + timedelta(days=3), total_capacity=10)


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        (None, ["a", "b", "c"]),
        ("start_time", ["a", "b", "c"]),
        ("-start_time", ["c", "b", "a"]),
        ("total_capacity", ["c", "a", "b"]),
        ("-total_capacity", ["b", "a", "c"]),
        ("created_at", ["b", "a", "c"]),
        ("-created_at", ["c", "a", "b"]),
    ],
)
async def test_ordering(client, three_events, ordering, expected) -> None:
    query = f"?ordering={ordering}" if ordering else ""
    assert names(await client.get(f"/api/events/{query}")) == expected


async def test_ties_are_broken_by_id(client, db, organizer) -> None:
    start = NOW + timedelta(days=1)
    ids = [(await make_event(db, organizer, start_time=start)).id for _ in range(5)]
    r = await client.get("/api/events/?ordering=start_time&page_size=2&page=2")
    assert [e["id"] for e in r.json()["results"]] == ids[2:4]
    r = await client.get("/api/events/?ordering=-start_time")
    assert [e["id"] for e in r.json()["results"]] == ids[::-1]


async def test_invalid_ordering_is_422(client) -> None:
    assert error_fields(await client.get("/api/events/?ordering=name")) == ["query.ordering"]


# --- pagination -----------------------------------------------------------


async def test_pagination_links_keep_the_filters(client, db, organizer) -> None:
    for day in range(1, 6):
        await make_event(db, organizer, location="Berlin", start_time=NOW + timedelta(days=day))
    await make_event(db, organizer, location="Paris")
    r = await client.get("/api/events/?location=Berlin&ordering=-start_time&page_size=2")
    body = r.json()
    assert body["count"] == 5 and len(body["results"]) == 2
    assert body["previous"] is None
    assert (
        body["next"]
        == "http://testserver/api/events/?location=Berlin&ordering=-start_time&page_size=2&page=2"
    )
    r = await client.get(body["next"])
    body = r.json()
    assert (
        body["next"]
        == "http://testserver/api/events/?location=Berlin&ordering=-start_time&page_size=2&page=3"
    )
    assert (
        body["previous"]
        == "http://testserver/api/events/?location=Berlin&ordering=-start_time&page_size=2&page=1"
    )
    r = await client.get(body["next"])
    assert len(r.json()["results"]) == 1 and r.json()["next"] is None


async def test_links_without_trailing_slash_and_repeated_status(client, db, organizer) -> None:
    for _ in range(3):
        await make_event(db, organizer)
    r = await client.get("/api/events?status=upcoming&status=past&page=2&page_size=1")
    body = r.json()
    assert (
        body["next"]
        == "http://testserver/api/events/?status=upcoming&status=past&page_size=1&page=3"
    )
    assert (
        body["previous"]
        == "http://testserver/api/events/?status=upcoming&status=past&page_size=1&page=1"
    )


async def test_default_page_size_is_10(client, db, organizer) -> None:
    for _ in range(11):
        await make_event(db, organizer)
    body = (await client.get("/api/events/")).json()
    assert body["count"] == 11 and len(body["results"]) == 10
    assert body["next"] == "http://testserver/api/events/?page=2&page_size=10"


async def test_page_past_the_end_is_empty(client, db, organizer) -> None:
    await make_event(db, organizer)
    r = await client.get("/api/events/?page=5")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1 and body["results"] == [] and body["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=101", "query.page_size"),
        ("page_size=0", "query.page_size"),
        ("page=0", "query.page"),
        ("page=x", "query.page"),
    ],
)
async def test_invalid_page_parameters_are_422(client, query, field) -> None:
    assert error_fields(await client.get(f"/api/events/?{query}")) == [field]


# --- query count ----------------------------------------------------------


@contextmanager
def count_statements(app) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    def log_query(query) -> None:
        statements.append(query.query)

    # Statements sent through SQLAlchemy, and those sent on a unit of work's asyncpg
    # connection (UnitOfWork.driver), which SQLAlchemy does not see.
    original_driver = UnitOfWork.driver

    @asynccontextmanager
    async def logged_driver(self):
        async with original_driver(self) as conn:
            conn.add_query_logger(log_query)
            try:
                yield conn
            finally:
                await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
                conn.remove_query_logger(log_query)

    engine = app.state.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", record)
    UnitOfWork.driver = logged_driver
    try:
        yield statements
    finally:
        UnitOfWork.driver = original_driver
        sa_event.remove(engine, "before_cursor_execute", record)


async def test_list_and_detail_use_a_constant_number_of_statements(
    app, client, db, create_user
) -> None:
    organizers = [await create_user("organizer") for _ in range(5)]
    async with db() as session:
        session.add_all(
            Event(
                organizer_id=organizers[i % 5].id,
                name=f"Event {i}",
                location="Berlin",
                start_time=NOW + timedelta(days=1 + i),
                total_capacity=10 + i,
            )
            for i in range(100)
        )
        await session.commit()
    first = (await client.get("/api/events/?page_size=1")).json()["results"][0]["id"]
    for _ in range(3):
        await make_ticket_type(db, first)

    for page_size in (1, 100):
        with count_statements(app) as statements:
            r = await client.get(f"/api/events/?page_size={page_size}&search=event")
        assert r.status_code == 200
        assert len(r.json()["results"]) == page_size
        assert len(statements) == 1, statements  # the count and the page together

    for event_id, expected_types in ((first, 3), (first + 1, 0)):
        with count_statements(app) as statements:
            r = await client.get(f"/api/events/{event_id}/")
        assert len(r.json()["ticket_types"]) == expected_types
        assert len(statements) == 2, statements


async def test_list_items_are_the_event_as_its_detail_shows_it(client, db, organizer) -> None:
    """The list reads rows straight from asyncpg; the detail goes through the ORM."""
    first = await make_event(
        db, organizer, name="first", start_time=NOW + timedelta(days=1, microseconds=120_000)
    )
    second = await make_event(
        db,
        organizer,
        name="second",
        start_time=NOW + timedelta(days=2),
        end_time=NOW + timedelta(days=3),
        description="Talks",
        location="Berlin",
    )
    await make_ticket_type(db, second.id)
    await set_columns(db, Event, second.id, tickets_sold=second.total_capacity)
    listed = (await client.get("/api/events/?ordering=-start_time")).json()["results"]
    assert [e["id"] for e in listed] == [second.id, first.id]
    for item in listed:
        detail = (await client.get(f"/api/events/{item['id']}/")).json()
        detail.pop("ticket_types")
        assert item == detail
    assert listed[0]["status"] == "sold_out" and listed[0]["tickets_remaining"] == 0
