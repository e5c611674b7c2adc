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
      (SELECT count(*) FROM ticket_types WHERE quantity_available < 0) AS negative,
      (SELECT count(*) FROM ticket_types t WHERE t.quantity_held <>
         coalesce((SELECT sum(i.quantity) FROM hold_items i
                   JOIN holds h ON h.id = i.hold_id
                   WHERE i.ticket_type_id = t.id AND h.status = 'active'), 0)) AS bad_held,
      (SELECT count(*) FROM events e WHERE e.tickets_held <>
         coalesce((SELECT sum(t.quantity_held) FROM ticket_types t WHERE t.event_id = e.id), 0)
         OR e.tickets_sold + e.tickets_held > e.total_capacity) AS bad_events_held,
      (SELECT count(*) FROM holds h WHERE (h.status = 'converted') <> (h.booking_id IS NOT NULL)
         OR (h.status = 'converted' AND NOT EXISTS (
               SELECT 1 FROM booking_items bi JOIN bookings b ON b.id = bi.booking_id
               WHERE b.id = h.booking_id))) AS bad_converted,
      (SELECT count(*) FROM waitlist_entries w WHERE w.status = 'offered' AND NOT EXISTS (
         SELECT 1 FROM holds h WHERE h.id = w.hold_id AND h.status = 'active')) AS bad_offers
    """
)


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
        row = (await session.execute(INVARIANTS)).one()
        assert tuple(row) == (0,) * len(row), row._asdict()
        for tt_id, total in (issued or {}).items():
            got = (
                await session.execute(
                    text(
                        "SELECT quantity_available + quantity_held + quantity_sold "
                        "FROM ticket_types WHERE id=:i"
                    ),
                    {"i": tt_id},
                )
            ).scalar_one()
            assert got == total, (tt_id, got, total)
