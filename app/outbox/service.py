"""Recording messages in the outbox, inside the transaction of the change they report.

    await outbox.record_event(conn, WebhookEventType.booking_confirmed, event_id=42,
                              data=booking_json, emails=[confirmation])

One statement stores a webhook message for every active endpoint of the event's
organizer subscribed to the type, and the emails; at commit PostgreSQL wakes the
dispatchers (NOTIFY is delivered only if the transaction commits). A rolled-back
change leaves no message; a committed one always has its messages.

A transaction that notifies holds a database-wide lock through its commit, so
notifying transactions commit one at a time. As in book_tickets_many() (migration 0009),
a write whose ``pg_try_advisory_xact_lock(WAKE_UP_LOCK)`` finds another transaction's
NOTIFY on its way leaves the wake-up to that one; its messages are then taken by the
dispatcher's gathering during a stream of commits or, at the latest, by its poll
(``OUTBOX_POLL_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import Executable, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import compile_statement
from app.notifications.emails import Email
from app.webhooks.schemas import WebhookEventType

# What a domain service holds inside its transaction: the unit of work's session, or
# the asyncpg connection of a hot path (``UnitOfWork.driver``).
Transaction = AsyncSession | asyncpg.Connection

NOTIFY_CHANNEL = "outbox"
# Held by the transaction whose NOTIFY wakes the dispatchers (book_tickets_many() in
# migration 0009 takes the same one); see the module's docstring.
WAKE_UP_LOCK = 723804562
# Wake the dispatchers unless another transaction's NOTIFY is on its way.
_WAKE_UP = (
    f"CASE WHEN pg_try_advisory_xact_lock({WAKE_UP_LOCK}) "
    f"THEN pg_notify('{NOTIFY_CHANNEL}', '') END"
)

# Also answers which event types the organizer's active endpoints take, so a caller
# can skip building a message nobody subscribed to (event.sold_out after a booking).
_RECORD = text(
    f"""
    WITH organizer AS (
        SELECT organizer_id AS id FROM events WHERE id = :event_id
    ), hooks AS (
        INSERT INTO outbox_messages (channel, topic, endpoint_id, payload)
        SELECT 'webhook', CAST(:event_type AS varchar), w.id, CAST(:payload AS jsonb)
        FROM webhook_endpoints w
        WHERE w.organizer_id = (SELECT id FROM organizer)
          AND w.is_active AND CAST(:event_type AS varchar) = ANY(w.event_types)
        -- An endpoint being deleted is waited for, then skipped: never a message
        -- pointing at a deleted endpoint (a foreign-key error).
        FOR KEY SHARE OF w
        RETURNING id
    ), mails AS (
        INSERT INTO outbox_messages (channel, topic, payload)
        SELECT 'email', m ->> 'kind', m
        FROM jsonb_array_elements(CAST(:emails AS jsonb)) AS m
        RETURNING id
    )
    SELECT ARRAY(
               SELECT DISTINCT t FROM webhook_endpoints w, unnest(w.event_types) AS t
               WHERE w.organizer_id = (SELECT id FROM organizer) AND w.is_active
           ) AS subscribed,
           CASE WHEN EXISTS (SELECT FROM hooks) OR EXISTS (SELECT FROM mails) THEN {_WAKE_UP}
           END IS NULL AS notified
    """  # noqa: S608 (_WAKE_UP is this module's constant)
)

_RECORD_EMAILS = text(
    f"""
    WITH mails AS (
        INSERT INTO outbox_messages (channel, topic, payload)
        SELECT 'email', m ->> 'kind', m
        FROM jsonb_array_elements(CAST(:emails AS jsonb)) AS m
        RETURNING id
    )
    SELECT {_WAKE_UP} WHERE EXISTS (SELECT FROM mails)
    """  # noqa: S608 (_WAKE_UP is this module's constant)
)


def webhook_payload(event_type: WebhookEventType, data: Mapping[str, Any]) -> str:
    """The body receivers get: ``{type, timestamp, data}``."""
    return orjson.dumps(
        {
            "type": event_type.value,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": data,
        }
    ).decode()


def email_payload(emails: Sequence[Email]) -> str:
    fields = [{"kind": e.kind, "to": e.to, "context": e.context} for e in emails]
    return orjson.dumps(fields).decode()


async def record_event(
    db: Transaction,
    event_type: WebhookEventType,
    *,
    event_id: int,
    data: Mapping[str, Any],
    emails: Sequence[Email] = (),
) -> frozenset[str]:
    """Store ``event_type`` about event ``event_id`` (``data``: the booking, event, hold
    or entry as the API shows it, JSON-ready) for its organizer's endpoints, and
    ``emails``, in the caller's transaction.

    Returns the event types the organizer's active endpoints subscribe to.
    """
    rows = await fetch_rows(
        db,
        _RECORD,
        {
            "event_type": event_type.value,
            "event_id": event_id,
            "payload": webhook_payload(event_type, data),
            "emails": email_payload(emails),
        },
    )
    return frozenset(rows[0]["subscribed"]) if rows else frozenset()


async def record_emails(db: Transaction, emails: Sequence[Email]) -> None:
    """Store ``emails`` in the caller's transaction."""
    if emails:
        await _execute(db, _RECORD_EMAILS, {"emails": email_payload(emails)})


async def _execute(db: Transaction, statement: TextClause, values: dict[str, Any]) -> None:
    if isinstance(db, AsyncSession):
        await db.execute(statement, values)
        return
    await db.execute(*_sql_and_args(statement, values))


async def fetch_rows(
    db: Transaction, statement: Executable, values: dict[str, Any]
) -> list[Mapping[str, Any]]:
    """Rows of a Core statement with named parameters, on the session or asyncpg alike."""
    if isinstance(db, AsyncSession):
        return [row._mapping for row in await db.execute(statement, values)]
    return list(await db.fetch(*_sql_and_args(statement, values)))


def _sql_and_args(statement: Executable, values: dict[str, Any]) -> tuple[Any, ...]:
    compiled = compile_statement(statement)  # type: ignore[arg-type]
    return (compiled.sql, *compiled.args(values))
