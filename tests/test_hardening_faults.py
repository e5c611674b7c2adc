"""Faults lose nothing: broken connections, a busy pool, slow statements, Redis away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.errors import Busy
from app.notifications.emails import Email
from tests.factories import asgi_client, auth, make_event, started_app
from tests.redis_server import free_port


async def running_app(settings: Settings, **overrides: Any) -> AsyncIterator[Any]:
    async with started_app(settings.model_copy(update=overrides)) as app:
        yield app


def client_for(app: Any) -> httpx.AsyncClient:
    return asgi_client(app, raise_app_exceptions=False)


async def _backend_pids(app: Any) -> list[int]:
    async with app.state.engine.connect() as conn:
        return [await conn.scalar(text("SELECT pg_backend_pid()"))]


@pytest.mark.parametrize(
    "request_args",
    [
        ("GET", "/api/events/"),  # the asyncpg hot path
        ("GET", "/api/events/1/"),  # the ORM session
    ],
)
async def test_a_connection_closed_by_the_server_is_503_then_discarded(
    settings, db, organizer, request_args
) -> None:
    await make_event(db, organizer)
    async for app in running_app(settings, db_pool_size=1, db_max_overflow=0):
        async with client_for(app) as c:
            assert (await c.request(*request_args)).status_code == 200
            await asyncio.sleep(0.5)  # the maintenance tasks' first run at startup is over
            (pid,) = await _backend_pids(app)
            async with db() as s:
                await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                for _ in range(100):  # the signal is asynchronous: wait until it is gone
                    gone = await s.scalar(
                        text("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :p)"),
                        {"p": pid},
                    )
                    if gone:
                        break
                    await asyncio.sleep(0.02)
            r = await c.request(*request_args)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "service_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            # The broken connection was discarded: the next request gets a new one.
            assert (await c.request(*request_args)).status_code == 200


async def _hold_a_connection(app: Any, held: asyncio.Event, release: asyncio.Event) -> None:
    async with UnitOfWork(app.state.sessionmaker).driver():
        held.set()
        await release.wait()


async def test_waiting_for_a_connection_is_bounded_by_the_pool_timeout(settings) -> None:
    async for app in running_app(settings, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.5):
        async with client_for(app) as c:
            assert (await c.get("/api/events/")).status_code == 200
            held = asyncio.Event()
            release = asyncio.Event()

            holder = asyncio.create_task(_hold_a_connection(app, held, release))
            await held.wait()
            try:
                started = time.monotonic()
                r = await c.get("/api/events/")
                waited = time.monotonic() - started
            finally:
                release.set()
                await holder
            assert r.status_code == 503 and r.json()["code"] == "busy", r.text
            assert r.headers["retry-after"]
            assert 0.4 < waited < 3, waited
            assert (await c.get("/api/events/")).status_code == 200


async def test_request_statements_are_bounded_by_statement_timeout(settings) -> None:
    async for app in running_app(settings, statement_timeout_ms=300):
        async with app.state.engine.connect() as conn:
            assert await conn.scalar(text("SHOW statement_timeout")) == "300ms"
        started = time.monotonic()
        with pytest.raises(Busy):
            async with UnitOfWork(app.state.sessionmaker) as uow:
                await uow.session.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 2


async def test_ready_while_redis_is_down_reports_it_degraded_and_warns_once(
    settings, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="app.redis")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async for app in running_app(settings, redis_url=dead):
        async with client_for(app) as c:
            for _ in range(10):
                r = await c.get("/health/ready")
                assert r.status_code == 200, r.text
                assert r.json() == {
                    "status": "degraded",
                    "checks": {"database": "ok", "redis": "degraded"},
                }
            metrics = (await c.get("/metrics")).text
    warnings = [r for r in caplog.records if r.name == "app.redis"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "\nredis_up 0.0" in metrics


async def test_ready_is_503_when_the_database_does_not_answer(settings) -> None:
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async for app in running_app(settings, database_url=unreachable, db_pool_timeout=1):
        async with client_for(app) as c:
            started = time.monotonic()
            r = await c.get("/health/ready")
            assert r.status_code == 503 and r.json()["code"] == "service_unavailable"
            r = await c.get("/api/events/")
            assert r.status_code == 503 and r.json()["code"] == "service_unavailable"
            assert r.headers["retry-after"]
            assert time.monotonic() - started < 5


async def test_queued_emails_are_json_not_pickle(settings, redis_url, redis_prefix) -> None:
    # Emails now wait in the outbox table; the worker still runs email jobs an earlier
    # version queued, and reads and writes its jobs as JSON.
    from arq.connections import ArqRedis
    from redis.asyncio import Redis

    from app.worker import WorkerSettings

    redis = Redis.from_url(redis_url)
    queue = ArqRedis(
        redis.connection_pool,
        default_queue_name=f"{redis_prefix}-json",
        job_serializer=WorkerSettings.job_serializer,
        job_deserializer=WorkerSettings.job_deserializer,
    )
    email = Email(kind="password_reset", to="a@example.com", context={"link": "x"}, job_id="j-1")
    try:
        await queue.enqueue_job("send_email", email, _job_id="j-1")
        stored = await redis.get("arq:job:j-1")
        assert stored is not None
        job = orjson.loads(stored)
        assert job["f"] == "send_email"
        assert job["a"][0] == {
            "kind": "password_reset",
            "to": "a@example.com",
            "context": {"link": "x"},
            "job_id": "j-1",
        }
    finally:
        await redis.delete("arq:job:j-1")
        await redis.aclose()


async def test_reset_links_are_not_logged_when_smtp_is_configured(
    settings, smtp_sink, create_user, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    user = await create_user()
    async for app in running_app(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_starttls=False,
        outbox_in_process=True,  # this app sends the outbox's email itself
    ):
        async with client_for(app) as c:
            r = await c.post("/api/auth/password-reset-request/", json={"email": user.email})
            assert r.status_code == 202
            [message] = await smtp_sink.wait_for(1, to=user.email)
    body = message.get_body(("plain",)).get_content()
    link = next(word for word in body.split() if "password-reset-confirm" in word)
    token = link.rstrip("/").rsplit("/", 1)[1]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in logged and "password-reset-confirm" not in logged


async def test_bookings_go_on_while_redis_is_down(
    settings, db, organizer, attendee, create_user
) -> None:
    from tests.factories import make_ticket_type

    event = await make_event(db, organizer)
    ticket_type = await make_ticket_type(db, event)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async for app in running_app(settings, redis_url=dead, rate_limit_enabled=True):
        async with client_for(app) as c:
            body = {
                "event_id": event.id,
                "items": [{"ticket_type_id": ticket_type.id, "quantity": 1}],
            }
            for _ in range(3):
                r = await c.post("/api/bookings/", json=body, headers=auth(attendee))
                assert r.status_code == 201, r.text
