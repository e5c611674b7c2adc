"""One batch of the outbox, finished in one statement: mixed outcomes, an endpoint deleted
mid-send, emails sharing SMTP connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.auth.models import User
from app.notifications import smtp
from app.notifications.emails import Email
from app.outbox.dispatcher import Dispatcher
from app.outbox.service import WAKE_UP_LOCK, record_emails, record_event
from app.webhooks.schemas import WebhookEventType
from app.webhooks.signing import new_secret
from tests.conftest_webhooks import hook_settings
from tests.factories import make_event, make_settings
from tests.redis_server import SmtpSink
from tests.webhook_receiver import Receiver, serve


@contextlib.contextmanager
def receivers(count: int) -> Iterator[list[Receiver]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(contextlib.contextmanager(serve)()) for _ in range(count)]


async def add_endpoint(db: Any, organizer: User, url: str) -> int:
    async with db() as session:
        endpoint = await session.scalar(
            text(
                "INSERT INTO webhook_endpoints (organizer_id, url, secret, event_types) "
                "VALUES (:organizer, :url, :secret, ARRAY['booking.confirmed']) RETURNING id"
            ),
            {"organizer": organizer.id, "url": url, "secret": new_secret()},
        )
        await session.commit()
    return endpoint


def reset_email(n: int) -> Email:
    return Email(
        "password_reset",
        f"user{n}@example.com",
        {"username": f"user{n}", "link": f"http://x/{n}", "expire_minutes": 60},
    )


async def messages_by_endpoint(db: Any) -> dict[int | None, tuple[Any, ...]]:
    async with db() as session:
        rows = await session.execute(
            text(
                "SELECT endpoint_id, status, attempts, last_error, "
                "CASE WHEN status = 'pending' THEN next_attempt_at > updated_at END AS retry_later "
                "FROM outbox_messages"
            )
        )
        return {row.endpoint_id: tuple(row)[1:] for row in rows}


async def test_a_batch_of_mixed_outcomes_is_recorded_in_full(
    database_url: str, db: Any, organizer: User
) -> None:
    with receivers(3) as (ok, failing, gone):
        failing.default, gone.default = 500, 410
        endpoints = [await add_endpoint(db, organizer, r.url) for r in (ok, failing, gone)]
        event = await make_event(db, organizer)
        async with db() as session:
            await record_event(
                session,
                WebhookEventType.booking_confirmed,
                event_id=event.id,
                data={"n": 1},
                emails=[reset_email(1)],
            )
            await session.commit()
        dispatcher = Dispatcher(hook_settings(database_url, outbox_in_process=False), database_url)
        try:
            assert await dispatcher.dispatch_due() == 4  # three webhooks and the email
        finally:
            await dispatcher.close()
        assert [len(r.requests) for r in (ok, failing, gone)] == [1, 1, 1]

    rows = await messages_by_endpoint(db)
    assert rows[endpoints[0]] == ("delivered", 1, None, None)
    assert rows[endpoints[1]] == ("pending", 1, "HTTP 500", True)
    assert rows[endpoints[2]] == ("dead", 1, "HTTP 410", None)
    assert rows[None] == ("delivered", 1, None, None)  # the email (logged: no SMTP_HOST)
    async with db() as session:
        active = dict(
            (await session.execute(text("SELECT id, is_active FROM webhook_endpoints"))).all()
        )
        logged = {
            row.endpoint_id: tuple(row)[1:]
            for row in await session.execute(
                text(
                    "SELECT endpoint_id, attempt, status_code, error, "
                    "next_attempt_at IS NOT NULL AS retry FROM webhook_deliveries"
                )
            )
        }
    assert active == {endpoints[0]: True, endpoints[1]: True, endpoints[2]: False}
    assert logged == {
        endpoints[0]: (1, 200, None, False),
        endpoints[1]: (1, 500, "HTTP 500", True),
        endpoints[2]: (1, 410, "HTTP 410", False),
    }


async def test_an_endpoint_deleted_mid_send_drops_its_outcome_and_keeps_the_others(
    database_url: str, db: Any, organizer: User
) -> None:
    with receivers(2) as (slow, fast):
        slow.delay = 1.0
        doomed = await add_endpoint(db, organizer, slow.url)
        kept = await add_endpoint(db, organizer, fast.url)
        event = await make_event(db, organizer)
        async with db() as session:
            await record_event(
                session, WebhookEventType.booking_confirmed, event_id=event.id, data={"n": 1}
            )
            await session.commit()
        dispatcher = Dispatcher(hook_settings(database_url, outbox_in_process=False), database_url)
        try:
            batch = asyncio.create_task(dispatcher.dispatch_due())
            deadline = asyncio.get_running_loop().time() + 10
            while slow.in_flight == 0:
                assert asyncio.get_running_loop().time() < deadline, "never sent"
                await asyncio.sleep(0.01)
            async with db() as session:  # its messages go with it (ON DELETE CASCADE)
                await session.execute(
                    text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": doomed}
                )
                await session.commit()
            assert await batch == 2
        finally:
            await dispatcher.close()

    assert await messages_by_endpoint(db) == {kept: ("delivered", 1, None, None)}
    async with db() as session:
        logged = (await session.execute(text("SELECT endpoint_id FROM webhook_deliveries"))).all()
    assert [tuple(r) for r in logged] == [(kept,)]


async def test_a_batch_of_emails_shares_smtp_connections_and_a_refused_one_is_retried(
    database_url: str, db: Any, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = 0
    connect = smtp.aiosmtplib.SMTP.connect

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal connections
        connections += 1
        return await connect(self, *args, **kwargs)

    monkeypatch.setattr(smtp.aiosmtplib.SMTP, "connect", counting)
    settings = make_settings(
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_starttls=False,
        outbox_retry_first_seconds=0.2,
    )
    async with db() as session:
        await record_emails(session, [reset_email(n) for n in range(12)])
        await session.commit()
    smtp_sink.fail_next = 1  # the server refuses the first message it is given

    dispatcher = Dispatcher(settings, database_url)
    try:
        assert await dispatcher.dispatch_due() == 12
        assert len(smtp_sink.messages) == 11
        assert connections == smtp.BATCH_CONNECTIONS  # not one per email
        async with db() as session:
            statuses = sorted(
                tuple(r)
                for r in await session.execute(
                    text("SELECT status, last_error LIKE '%451%' FROM outbox_messages")
                )
            )
        assert statuses == [("delivered", None)] * 11 + [("pending", True)]
        await asyncio.sleep(0.3)  # its retry is due
        await dispatcher.run_until_idle()
    finally:
        await dispatcher.close()
    assert sorted(m["To"] for m in smtp_sink.messages) == sorted(
        f"user{n}@example.com" for n in range(12)
    )


async def test_a_recorded_message_notifies_unless_another_notify_is_on_its_way(
    database_url: str, db: Any, organizer: User
) -> None:
    import asyncpg

    event = await make_event(db, organizer)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    listener, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def record(n: int) -> None:
        async with db() as session:
            if n % 2:
                await record_emails(session, [reset_email(n)])
            else:
                await record_event(
                    session,
                    WebhookEventType.booking_cancelled,
                    event_id=event.id,
                    data={"n": n},
                    emails=[reset_email(n)],
                )
            await session.commit()

    try:
        await listener.add_listener("outbox", lambda *args: heard.put_nowait(args[2]))
        for n in (0, 1):  # alone: each commit wakes the dispatchers
            await record(n)
            await asyncio.wait_for(heard.get(), 5)
        # Another transaction's NOTIFY is on its way: these commit without one.
        await other.execute("SELECT pg_advisory_lock($1)", WAKE_UP_LOCK)
        for n in (2, 3):
            await record(n)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heard.get(), 0.5)
        await other.execute("SELECT pg_advisory_unlock($1)", WAKE_UP_LOCK)
        await record(4)
        await asyncio.wait_for(heard.get(), 5)
        # Every message is stored all the same, for the dispatcher's gathering or poll.
        assert await other.fetchval("SELECT count(*) FROM outbox_messages") == 5
        # A write with no message takes no lock and notifies nothing.
        async with db() as session:
            await record_emails(session, [])
            await session.commit()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heard.get(), 0.3)
    finally:
        await other.close()
        await listener.close()
