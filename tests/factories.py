"""Events and ticket types inserted straight into the database, for any domain's tests.

Plain async functions taking the `db` sessionmaker fixture:
`event = await make_event(db, organizer, total_capacity=50)`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.events.models import Event, TicketType

_numbers = count(1)


async def make_event(
    db: async_sessionmaker[AsyncSession], organizer: User | int, **overrides: Any
) -> Event:
    """An event starting in 30 days, capacity 100; any column can be overridden."""
    n = next(_numbers)
    values: dict[str, Any] = {
        "name": f"Event {n}",
        "description": "",
        "location": "Berlin",
        "start_time": datetime.now(UTC) + timedelta(days=30),
        "total_capacity": 100,
    }
    values.update(overrides)
    organizer_id = organizer if isinstance(organizer, int) else organizer.id
    async with db() as session:
        event = Event(organizer_id=organizer_id, **values)
        session.add(event)
        await session.commit()
        await session.refresh(event)
    return event


async def make_ticket_type(
    db: async_sessionmaker[AsyncSession], event: Event | int, **overrides: Any
) -> TicketType:
    """A ticket type at 25.00 with 50 tickets to sell; any column can be overridden."""
    n = next(_numbers)
    values: dict[str, Any] = {
        "name": f"Ticket {n}",
        "description": "",
        "price": Decimal("25.00"),
        "quantity_available": 50,
    }
    values.update(overrides)
    event_id = event if isinstance(event, int) else event.id
    async with db() as session:
        ticket_type = TicketType(event_id=event_id, **values)
        session.add(ticket_type)
        await session.commit()
        await session.refresh(ticket_type)
    return ticket_type
