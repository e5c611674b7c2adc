"""The concert the booking and hold tests book (fixtures, loaded by conftest.py), and the
invariant checks of the booking counters, run in SQL after every storm."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.events.models import Event, TicketType
from tests.factories import ROOT, make_event, make_ticket_type


@pytest.fixture
async def event(db, organizer) -> Event:
    """A concert of 10 seats (a test module may define its own ``event``)."""
    return await make_event(db, organizer.id, name="Concert", total_capacity=10)


@pytest.fixture
async def standard(db, event) -> TicketType:
    return await make_ticket_type(
        db, event.id, name="Standard", price="25.00", quantity_available=8
    )


@pytest.fixture
async def vip(db, event) -> TicketType:
    return await make_ticket_type(db, event.id, name="VIP", price="99.50", quantity_available=5)


INVARIANTS = (ROOT / "bench" / "sql" / "invariants.sql").read_text()


async def check_invariants(
    db: async_sessionmaker[AsyncSession], issued: dict[int, int] | None = None
) -> None:
    """Counters agree with the confirmed bookings and the active holds; nothing oversold.

    Per ticket type, sold = tickets of confirmed bookings and held = tickets of active
    holds (each active hold counted once); per event, sold + held <= capacity; a
    converted hold has its booking; an offered waiting entry has its active hold.
    `issued` maps ticket-type ids to what was put on sale: available + held + sold must
    equal it.
    """
    async with db() as session:
        await session.execute(
            text(
                "CREATE TEMP TABLE issued_tickets (ticket_type_id bigint, quantity bigint)"
                " ON COMMIT DROP"
            )
        )
        for tt_id, total in (issued or {}).items():
            await session.execute(
                text("INSERT INTO issued_tickets VALUES (:i, :q)"), {"i": tt_id, "q": total}
            )
        broken = (await session.execute(text(INVARIANTS))).scalars().all()
        await session.rollback()
    assert broken == []
