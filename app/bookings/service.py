"""The booking rules and their transactions.

Lock order, everywhere: the event row, then booking rows, then ticket-type rows
by ascending id. Every transaction that takes more than one of these locks takes
them in this order, so two of them can never wait on each other (no deadlock).
"""

from __future__ import annotations

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.models import Booking
from app.events.models import TicketType

_RELEASE_ITEMS = text(
    """
    WITH released AS (
        SELECT ticket_type_id, sum(quantity)::int AS quantity
        FROM booking_items WHERE booking_id = ANY(:booking_ids)
        GROUP BY ticket_type_id
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available + r.quantity,
            quantity_sold = t.quantity_sold - r.quantity,
            updated_at = now()
        FROM released r WHERE t.id = r.ticket_type_id
        RETURNING r.quantity
    )
    UPDATE events SET tickets_sold = tickets_sold - (SELECT coalesce(sum(quantity), 0) FROM tt),
                      updated_at = now()
    WHERE id = :event_id
    """
)


async def cancel_event_bookings(session: AsyncSession, event_id: int) -> list[int]:
    """Cancel every confirmed booking of an event and release their tickets.

    The caller holds the event row's lock (``SELECT ... FOR UPDATE``), so no
    booking of this event can land or be cancelled concurrently. Returns the ids
    of the bookings cancelled (for the notification emails sent after commit).
    """
    cancelled = list(
        (
            await session.execute(
                update(Booking)
                .where(Booking.event_id == event_id, Booking.status == "confirmed")
                .values(status="cancelled", cancelled_at=func.now(), updated_at=func.now())
                .returning(Booking.id)
            )
        ).scalars()
    )
    if cancelled:
        await session.execute(
            select(TicketType.id)
            .where(TicketType.event_id == event_id)
            .order_by(TicketType.id)
            .with_for_update()
        )
        await session.execute(_RELEASE_ITEMS, {"booking_ids": cancelled, "event_id": event_id})
    return cancelled


async def event_has_confirmed_bookings(session: AsyncSession, event_id: int) -> bool:
    return bool(
        await session.scalar(
            select(
                select(Booking.id)
                .where(Booking.event_id == event_id, Booking.status == "confirmed")
                .exists()
            )
        )
    )
