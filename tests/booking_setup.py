"""Invariant checks of the booking counters, run in SQL after every storm."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import make_event as add_event
from tests.factories import make_ticket_type as add_ticket_type

__all__ = ["add_event", "add_ticket_type", "check_invariants"]

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
