"""Finished outbox messages are deleted after OUTBOX_RETENTION_HOURS, by the dispatcher."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from app.auth.models import User
from app.outbox.dispatcher import Dispatcher
from tests.conftest_webhooks import hook_settings

# (topic, channel, status, hours since the last change); the topic names the row.
ROWS = [
    ("old-delivered", "email", "delivered", 3),
    ("old-dead", "email", "dead", 3),
    ("old-skipped", "webhook", "skipped", 3),
    ("old-delivered-hook", "webhook", "delivered", 3),
    ("new-delivered", "email", "delivered", 0.5),
    ("new-dead", "webhook", "dead", 0.5),
    # Pending is kept however old: it has not been sent yet (due again tomorrow).
    ("old-pending", "email", "pending", 50),
]
PURGED = {"old-delivered", "old-dead", "old-skipped", "old-delivered-hook"}


async def store_rows(db: Any, organizer: User) -> None:
    async with db() as session:
        endpoint = await session.scalar(
            text(
                "INSERT INTO webhook_endpoints (organizer_id, url, secret, event_types) "
                "VALUES (:organizer, 'http://127.0.0.1:9/hooks', 'whsec_QUJD', "
                "ARRAY['booking.confirmed']) RETURNING id"
            ),
            {"organizer": organizer.id},
        )
        for topic, channel, status, hours in ROWS:
            message = await session.scalar(
                text(
                    "INSERT INTO outbox_messages (channel, topic, endpoint_id, payload, status, "
                    "attempts, next_attempt_at, created_at, updated_at) "
                    "VALUES (:channel, :topic, :endpoint, '{}', :status, 1, "
                    "now() + interval '1 day', now() - make_interval(secs => :seconds), "
                    "now() - make_interval(secs => :seconds)) RETURNING id"
                ),
                {
                    "channel": channel,
                    "topic": topic,
                    "endpoint": endpoint if channel == "webhook" else None,
                    "status": status,
                    "seconds": hours * 3600,
                },
            )
            if channel == "webhook" and status != "skipped":
                await session.execute(
                    text(
                        "INSERT INTO webhook_deliveries (endpoint_id, outbox_message_id, "
                        "message_id, event_type, attempt, status_code, duration_ms) "
                        "VALUES (:endpoint, :message, 'msg_x', :topic, 1, 200, 1)"
                    ),
                    {"endpoint": endpoint, "message": message, "topic": topic},
                )
        await session.commit()


async def remaining(db: Any) -> tuple[set[str], set[str]]:
    """(topics of the messages left, topics of the deliveries logged left)."""
    async with db() as session:
        messages = set(await session.scalars(text("SELECT topic FROM outbox_messages")))
        logged = set(await session.scalars(text("SELECT event_type FROM webhook_deliveries")))
    return messages, logged


async def test_a_running_dispatcher_purges_finished_messages_past_the_retention(
    database_url: str, db: Any, organizer: User
) -> None:
    await store_rows(db, organizer)
    settings = hook_settings(database_url, outbox_in_process=False, outbox_retention_hours=1)
    dispatcher = Dispatcher(settings, database_url)
    dispatcher.start()  # purges on its first round, then every PURGE_EVERY_SECONDS
    try:
        deadline = time.monotonic() + 20
        while (await remaining(db))[0] & PURGED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await dispatcher.close()
    messages, logged = await remaining(db)
    assert messages == {"new-delivered", "new-dead", "old-pending"}
    assert logged == {"new-dead"}  # the deliveries log of a purged message goes with it


async def test_purge_counts_what_it_deleted_and_keeps_what_is_within_the_retention(
    database_url: str, db: Any, organizer: User
) -> None:
    await store_rows(db, organizer)
    # 4 hours: nothing finished is old enough yet.
    dispatcher = Dispatcher(
        hook_settings(database_url, outbox_in_process=False, outbox_retention_hours=4),
        database_url,
    )
    try:
        assert await dispatcher.purge() == 0
        assert (await remaining(db))[0] == {topic for topic, *_ in ROWS}
        dispatcher.settings = hook_settings(
            database_url, outbox_in_process=False, outbox_retention_hours=1
        )
        assert await dispatcher.purge() == len(PURGED)
        assert await dispatcher.purge() == 0
    finally:
        await dispatcher.close()
    assert (await remaining(db))[0] == {"new-delivered", "new-dead", "old-pending"}
