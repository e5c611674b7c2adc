"""CATALOGUE_CACHE_SECONDS: anonymous catalogue reads from a short-lived in-process cache.

Each test runs its own app with the cache on (the shared fixtures turn it off). A change
made in the database directly, behind the app's back, shows which answers came from the
cache: they still show the old value until the cache expires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.catalogue_cache import CatalogueCache, CatalogueCacheMiddleware
from tests.conftest import auth, make_settings
from tests.factories import book, client_of, make_event, make_ticket_type

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cached_client(database_url: str) -> Callable[..., object]:
    """An HTTP client on a fresh app with CATALOGUE_CACHE_SECONDS as given."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def _client(seconds: int) -> AsyncIterator[httpx.AsyncClient]:
        async with client_of(
            make_settings(database_url, catalogue_cache_seconds=seconds), raise_app_exceptions=False
        ) as c:
            yield c

    return _client


async def _rename_behind_the_apps_back(
    db: async_sessionmaker[AsyncSession], event_id: int, name: str
) -> None:
    async with db() as session:
        await session.execute(
            text("UPDATE events SET name = :name WHERE id = :id"), {"name": name, "id": event_id}
        )
        await session.commit()


CATALOGUE_PATHS = ("/api/events/", "/api/events/{id}/", "/api/events/{id}/ticket-types/")


async def test_anonymous_catalogue_reads_carry_a_strong_etag_and_public_max_age(
    cached_client, db, organizer
) -> None:
    event = await make_event(db, organizer)
    await make_ticket_type(db, event)
    async with cached_client(5) as client:
        for template in CATALOGUE_PATHS:
            path = template.format(id=event.id)
            r = await client.get(path)
            assert r.status_code == 200, path
            etag = r.headers["etag"]
            assert etag.startswith('"') and etag.endswith('"'), etag  # strong, not W/
            assert r.headers["cache-control"] == "public, max-age=5"
            assert r.headers["x-content-type-options"] == "nosniff"

            again = await client.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304, path
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert again.headers["cache-control"] == "public, max-age=5"

            other = await client.get(path, headers={"If-None-Match": '"something-else"'})
            assert other.status_code == 200
            assert other.json() == r.json()


async def test_catalogue_is_served_from_the_cache_until_it_expires(
    cached_client, db, organizer
) -> None:
    event = await make_event(db, organizer, name="Before")
    async with cached_client(1) as client:
        first = await client.get(f"/api/events/{event.id}/")
        await _rename_behind_the_apps_back(db, event.id, "After")

        cached = await client.get(f"/api/events/{event.id}/")
        assert cached.json()["name"] == "Before"
        assert cached.headers["etag"] == first.headers["etag"]

        await asyncio.sleep(1.2)
        fresh = await client.get(f"/api/events/{event.id}/")
        assert fresh.json()["name"] == "After"
        assert fresh.headers["etag"] != first.headers["etag"]
        stale = await client.get(
            f"/api/events/{event.id}/", headers={"If-None-Match": first.headers["etag"]}
        )
        assert stale.status_code == 200


async def test_a_booking_in_the_same_process_shows_in_the_catalogue_at_once(
    cached_client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer)
    ticket_type = await make_ticket_type(db, event, quantity_available=10)
    async with cached_client(60) as client:
        before = await client.get(f"/api/events/{event.id}/")
        listed = await client.get("/api/events/")
        types = await client.get(f"/api/events/{event.id}/ticket-types/")
        assert before.json()["tickets_sold"] == 0

        r = await book(client, attendee, event.id, (ticket_type.id, 3))
        assert r.status_code == 201, r.text

        after = await client.get(
            f"/api/events/{event.id}/", headers={"If-None-Match": before.headers["etag"]}
        )
        assert after.status_code == 200
        assert after.json()["tickets_sold"] == 3
        listed_after = await client.get("/api/events/")
        assert listed_after.json()["results"][0]["tickets_sold"] == 3
        assert listed_after.headers["etag"] != listed.headers["etag"]
        types_after = await client.get(f"/api/events/{event.id}/ticket-types/")
        assert types_after.json()[0]["quantity_sold"] == 3
        assert types_after.headers["etag"] != types.headers["etag"]


async def test_an_organizers_change_shows_in_the_catalogue_at_once(
    cached_client, db, organizer
) -> None:
    event = await make_event(db, organizer, name="Old name")
    async with cached_client(60) as client:
        assert (await client.get("/api/events/")).json()["results"][0]["name"] == "Old name"
        r = await client.patch(
            f"/api/events/{event.id}/", json={"name": "New name"}, headers=auth(organizer)
        )
        assert r.status_code == 200, r.text

        assert (await client.get("/api/events/")).json()["results"][0]["name"] == "New name"
        assert (await client.get(f"/api/events/{event.id}")).json()["name"] == "New name"


async def test_authenticated_catalogue_reads_are_never_cached(
    cached_client, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer, name="Before")
    async with cached_client(60) as client:
        anonymous = await client.get(f"/api/events/{event.id}/")
        await _rename_behind_the_apps_back(db, event.id, "After")

        for user in (attendee, organizer):
            r = await client.get(f"/api/events/{event.id}/", headers=auth(user))
            assert r.status_code == 200
            assert r.json()["name"] == "After"
            assert "etag" not in r.headers
            assert r.headers["cache-control"] == "private, no-store"
        mine = await client.get("/api/events/", params={"organizer": "me"}, headers=auth(organizer))
        assert mine.headers["cache-control"] == "private, no-store"
        assert mine.json()["results"][0]["name"] == "After"
        # What an authenticated request read was not put in the cache either.
        assert (await client.get(f"/api/events/{event.id}/")).json()["name"] == "Before"
        # A bad token is still refused, though the anonymous answer is cached.
        bad = await client.get(
            f"/api/events/{event.id}/", headers={"Authorization": "Bearer not-a-token"}
        )
        assert bad.status_code == 401
        assert bad.json()["code"] == "invalid_token"
        assert anonymous.headers["cache-control"].startswith("public")


async def test_errors_are_not_cached(cached_client, db, organizer) -> None:
    async with cached_client(60) as client:
        missing = await client.get("/api/events/999999/")
        assert missing.status_code == 404
        assert "etag" not in missing.headers
        event = await make_event(db, organizer)
        assert (await client.get(f"/api/events/{event.id}/")).status_code == 200
        bad = await client.get("/api/events/", params={"page": "x"})
        assert bad.status_code == 422
        assert "public" not in bad.headers.get("cache-control", "")


async def test_catalogue_cache_seconds_zero_turns_the_cache_off(
    cached_client, db, organizer
) -> None:
    event = await make_event(db, organizer, name="Before")
    async with cached_client(0) as client:
        first = await client.get(f"/api/events/{event.id}/")
        assert "etag" not in first.headers
        assert "public" not in first.headers.get("cache-control", "")
        await _rename_behind_the_apps_back(db, event.id, "After")

        assert (await client.get(f"/api/events/{event.id}/")).json()["name"] == "After"


def _events_list_count(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{") and 'route="/api/events"' in line
    )


async def test_cache_hits_are_counted_under_their_route_in_metrics(
    cached_client, db, organizer
) -> None:
    await make_event(db, organizer)
    async with cached_client(30) as client:
        before = _events_list_count((await client.get("/metrics")).text)
        for _ in range(5):
            assert (await client.get("/api/events/")).status_code == 200
        after = _events_list_count((await client.get("/metrics")).text)
    assert after - before == 5


class _SlowCatalogue:
    """An ASGI app that answers after a pause and counts the requests it ran."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.runs += 1
        run = self.runs
        self.started.set()
        await self.release.wait()
        body = f'{{"run": {run}}}'.encode()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def _during_a_fill(
    app: _SlowCatalogue, others: int, meanwhile: Callable[[CatalogueCache], None] = lambda _: None
) -> list[httpx.Response]:
    """GET /api/events/ once, then ``others`` times while that first request is being
    answered (after ``meanwhile`` ran); the answers, the first one first."""
    cache = CatalogueCache(1)
    transport = httpx.ASGITransport(app=CatalogueCacheMiddleware(app, cache=cache))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = asyncio.create_task(client.get("/api/events/"))
        await app.started.wait()
        meanwhile(cache)
        later = [asyncio.create_task(client.get("/api/events/")) for _ in range(others)]
        await asyncio.sleep(0.05)  # the others have arrived
        app.release.set()
        return await asyncio.gather(first, *later)


async def test_a_miss_is_filled_once_for_the_requests_that_arrive_meanwhile() -> None:
    app = _SlowCatalogue()
    answers = await _during_a_fill(app, 20)
    assert app.runs == 1
    assert {(a.status_code, a.text) for a in answers} == {(200, '{"run": 1}')}
    assert len({a.headers["etag"] for a in answers}) == 1


async def test_waiters_run_their_own_request_when_the_answer_is_not_kept() -> None:
    app = _SlowCatalogue(status=503)
    answers = await _during_a_fill(app, 3)
    assert app.runs == 4
    assert all(a.status_code == 503 for a in answers)


async def test_a_change_made_during_a_fill_is_not_hidden_by_it() -> None:
    app = _SlowCatalogue()
    # A booking committed while the first read was running.
    answers = await _during_a_fill(app, 1, meanwhile=CatalogueCache.invalidate)
    assert app.runs == 2  # the later request made its own read
    assert [a.json()["run"] for a in answers] == [1, 2]
