"""DATABASE_READ_URL: anonymous catalogue reads from the replica, the rest from the primary.

The "replica" here is a second migrated database of the test server with its own
rows, so a response shows which database it was read from; the replica going away
and coming back is a TCP relay in front of it being stopped and started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core import replica
from app.core.db import create_engine, make_sessionmaker
from tests import pg
from tests.factories import (
    TEST_PASSWORD_HASH,
    auth,
    client_of,
    make_event,
    make_settings,
    make_ticket_type,
)
from tests.redis_server import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def replica_url(database_url: str) -> AsyncIterator[str]:
    async with pg.throwaway_database() as url:
        yield url


@pytest.fixture
async def replica_event(replica_url: str):
    """An event that exists only in the "replica" database (emptied afterwards)."""
    from sqlalchemy import text

    from app.auth.models import User

    engine = create_engine(make_settings(replica_url), pool_size=1)
    db = make_sessionmaker(engine)
    async with db() as s:
        user = User(
            username="replicaorg",
            email="replicaorg@example.com",
            hashed_password=TEST_PASSWORD_HASH,
            role="organizer",
        )
        s.add(user)
        await s.commit()
        await s.refresh(user)
    event = await make_event(db, user, name="Only on the replica")
    await make_ticket_type(db, event, name="Replica seat")
    yield event
    async with db() as s:
        await s.execute(text("TRUNCATE ticket_types, events, users RESTART IDENTITY CASCADE"))
        await s.commit()
    await engine.dispose()


async def _client(settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(settings, "http://t", raise_app_exceptions=False) as c:
        yield c


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["name"] for e in response.json()["results"]]


async def test_anonymous_catalogue_reads_the_replica_and_the_rest_the_primary(
    database_url, replica_url, replica_event, db, organizer, attendee
) -> None:
    event = await make_event(db, organizer, name="On the primary")
    standard = await make_ticket_type(db, event, quantity_available=5)
    settings = make_settings(database_url, database_read_url=replica_url)
    async for c in _client(settings):
        assert names(await c.get("/api/events/")) == ["Only on the replica"]
        r = await c.get(f"/api/events/{replica_event.id}/")
        assert r.status_code == 200 and r.json()["name"] == "Only on the replica"
        assert r.json()["ticket_types"][0]["name"] == "Replica seat"
        r = await c.get(f"/api/events/{replica_event.id}/ticket-types/")
        assert [t["name"] for t in r.json()] == ["Replica seat"]
        # A request with a token reads the primary: an organizer sees their own writes.
        assert names(await c.get("/api/events/", headers=auth(organizer))) == ["On the primary"]
        r = await c.get(f"/api/events/{event.id}/", headers=auth(organizer))
        assert r.status_code == 200 and r.json()["name"] == "On the primary"
        r = await c.get(f"/api/events/{event.id}/ticket-types/", headers=auth(attendee))
        assert [t["id"] for t in r.json()] == [standard.id]
        # Bookings lock and write the primary.
        r = await c.post(
            "/api/bookings/",
            json={"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 2}]},
            headers=auth(attendee),
        )
        assert r.status_code == 201, r.text
        r = await c.get(f"/api/events/{event.id}/", headers=auth(attendee))
        assert r.json()["tickets_sold"] == 2


def metric(text: str, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + label + '}') if label else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@contextlib.asynccontextmanager
async def relay(port: int, target_url: str) -> AsyncIterator[None]:
    """A TCP relay on 127.0.0.1:port to the server of ``target_url``."""
    url = make_url(target_url)
    socket_dir = url.query.get("host")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if url.host:
            up_reader, up_writer = await asyncio.open_connection(url.host, url.port or 5432)
        else:
            path = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
            up_reader, up_writer = await asyncio.open_unix_connection(path)
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            tasks.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_replica_down_falls_back_to_the_primary_logged_once_and_counted(
    database_url, replica_url, replica_event, db, organizer, caplog, monkeypatch
) -> None:
    await make_event(db, organizer, name="On the primary")
    monkeypatch.setattr(replica, "RETRY_SECONDS", 0.3)
    port = free_port()
    dead = make_url(replica_url)
    query = {k: v for k, v in dead.query.items() if k != "host"}
    relayed_url = dead.set(host="127.0.0.1", port=port, query=query).render_as_string(False)
    settings = make_settings(database_url, database_read_url=relayed_url, db_pool_size=2)
    caplog.set_level(logging.WARNING, logger="app.db.replica")
    async for c in _client(settings):
        before = (await c.get("/metrics")).text
        # Nothing listens at the read URL: every anonymous read answers from the primary.
        for _ in range(12):
            assert names(await c.get("/api/events/")) == ["On the primary"]
        await asyncio.sleep(0.4)
        for _ in range(3):
            assert names(await c.get("/api/events/")) == ["On the primary"]
        after = (await c.get("/metrics")).text
        down = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(down) == 1, [r.getMessage() for r in caplog.records]
        name = "db_read_replica_state_changes_total"
        assert metric(after, name, state="down") - metric(before, name, state="down") == 1
        fallbacks = "db_read_replica_fallback_connections_total"
        assert metric(after, fallbacks) > metric(before, fallbacks)
        # The replica answers again: within the retry interval, reads go back to it.
        async with relay(port, replica_url):
            await asyncio.sleep(0.4)
            seen = [names(await c.get("/api/events/")) for _ in range(4)]
            assert seen[-1] == ["Only on the replica"], seen
            back = [r for r in caplog.records if "answers again" in r.getMessage()]
            assert len(back) == 1
            assert metric((await c.get("/metrics")).text, name, state="up") >= 1
        # And away again: the next reads fall back once more (an in-flight read may be 503).
        await asyncio.sleep(0.1)
        results = [await c.get("/api/events/") for _ in range(4)]
        assert results[-1].status_code == 200, results[-1].text
        assert names(results[-1]) == ["On the primary"]
        assert all(r.status_code in (200, 503) for r in results)
