"""Events and ticket types inserted straight into the database for booking tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.events.models import Event, TicketType


async def add_event(
    db: async_sessionmaker[AsyncSession], organizer_id: int, **fields: Any
) -> Event:
    values: dict[str, Any] = {
        "name": "Concert",
        "location": "Berlin",
        "start_time": datetime.now(UTC) + timedelta(days=30),
        "total_capacity": 100,
    }
    values.update(fields)
    async with db() as session:
        event = Event(organizer_id=organizer_id, **values)
        session.add(event)
        await session.commit()
        await session.refresh(event)
    return event


async def add_ticket_type(
    db: async_sessionmaker[AsyncSession], event_id: int, **fields: Any
) -> TicketType:
    values: dict[str, Any] = {
        "name": "Standard",
        "price": Decimal("25.00"),
        "quantity_available": 50,
    }
    values.update(fields)
    async with db() as session:
        tt = TicketType(event_id=event_id, **values)
        session.add(tt)
        await session.commit()
        await session.refresh(tt)
    return tt


INVARIANTS = text(
    """
    SELECT
      (SELECT count(*) FROM ticket_types t WHERE t.quantity_sold <>
         coalesce((SELECT sum(i.quantity) FROM booking_items i
                   JOIN bookings b ON b.id = i.booking_id
                   WHERE i.ticket_type_id = t.id AND b.status = 'confirmed'), 0)) AS bad_sold,
      (SELECT count(*) FROM events e WHERE e.tickets_sold <>
         coalesce((SELECT sum(t.quantity_sold) FROM ticket_types t WHERE t.event_id = e.id), 0)
         OR e.tickets_sold > e.total_capacity) AS bad_events,
      (SELECT count(*) FROM ticket_types WHERE quantity_available < 0) AS negative
    """
)


async def check_invariants(
    db: async_sessionmaker[AsyncSession], issued: dict[int, int] | None = None
) -> None:
    """Counters agree with the confirmed bookings; nothing oversold.

    `issued` maps ticket-type ids to what was put on sale: available + sold must equal it.
    """
    async with db() as session:
        row = (await session.execute(INVARIANTS)).one()
        assert (row.bad_sold, row.bad_events, row.negative) == (0, 0, 0), row
        for tt_id, total in (issued or {}).items():
            got = (
                await session.execute(
                    text("SELECT quantity_available + quantity_sold FROM ticket_types WHERE id=:i"),
                    {"i": tt_id},
                )
            ).scalar_one()
            assert got == total, (tt_id, got, total)
