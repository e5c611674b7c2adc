"""What an event's changes tell its organizer's webhooks: cancelled, sold out.

Called inside the transaction of the change, so the message exists exactly when the
change committed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, select

from app.auth.models import User
from app.events.models import Event
from app.events.schemas import EventRead
from app.events.status import EVENT_STATUS, EventStatus
from app.outbox.service import Transaction, fetch_rows, record_event
from app.webhooks.schemas import WebhookEventType

# The columns of an event as the API shows it (EventRead.from_record reads them); the
# events list selects the same.
EVENT_COLUMNS = (
    Event.id,
    Event.organizer_id,
    User.username.label("organizer_username"),
    Event.name,
    Event.description,
    Event.location,
    Event.start_time,
    Event.end_time,
    Event.total_capacity,
    Event.tickets_sold,
    Event.tickets_held,
    EVENT_STATUS.label("status"),
    Event.created_at,
    Event.updated_at,
)


@lru_cache(maxsize=1)
def _event_as_shown() -> Select[Any]:
    """The event as the API shows it: the events list's columns (what
    EventRead.from_record reads), with its status now."""
    return (
        select(*EVENT_COLUMNS)
        .join(User, User.id == Event.organizer_id)
        .where(Event.id == bindparam("event_id"))
    )


async def event_as_shown(db: Transaction, event_id: int) -> EventRead | None:
    rows = await fetch_rows(db, _event_as_shown(), {"event_id": event_id})
    return EventRead.from_record(rows[0]) if rows else None


async def record_event_cancelled(db: Transaction, event_id: int) -> None:
    """``event.cancelled`` with the event as it now is."""
    event = await event_as_shown(db, event_id)
    if event is not None:
        await record_event(
            db,
            WebhookEventType.event_cancelled,
            event_id=event_id,
            data=event.model_dump(mode="json"),
        )


_STATUS = select(EVENT_STATUS).where(Event.id == bindparam("event_id"))


async def status_of(db: Transaction, event_id: int) -> str | None:
    """The event's status now (before a change that may sell it out)."""
    rows = await fetch_rows(db, _STATUS, {"event_id": event_id})
    return next(iter(rows[0].values())) if rows else None


async def record_if_sold_out(db: Transaction, event_id: int) -> bool:
    """``event.sold_out`` when the event's status is now ``sold_out``; the caller knows
    it was not before its change. Returns whether it was recorded."""
    event = await event_as_shown(db, event_id)
    if event is None:
        return False
    return await record_sold_out(db, event)


async def record_sold_out(db: Transaction, event: EventRead) -> bool:
    """``event.sold_out`` with ``event`` (as the API shows it) if its status is sold out."""
    if event.status != EventStatus.sold_out:
        return False
    await record_event(
        db, WebhookEventType.event_sold_out, event_id=event.id, data=event.model_dump(mode="json")
    )
    return True
