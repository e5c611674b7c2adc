"""An event's door list as CSV: one line per ticket type of each booking, streamed.

The rows come through a server-side cursor in batches and leave as CSV text batch by
batch, so an event with many thousands of bookings is never held in memory whole.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import User
from app.bookings.models import Booking, BookingItem
from app.events.models import TicketType

COLUMNS = ("booking_reference", "attendee", "ticket_type", "quantity", "status", "booked_at")
BATCH_ROWS = 200
MEDIA_TYPE = "text/csv; charset=utf-8"

_DOOR_LIST = (
    select(
        Booking.booking_reference,
        User.username,
        TicketType.name,
        BookingItem.quantity,
        Booking.status,
        Booking.created_at,
    )
    .join(BookingItem, BookingItem.booking_id == Booking.id)
    .join(TicketType, TicketType.id == BookingItem.ticket_type_id)
    .join(User, User.id == Booking.user_id)
    .order_by(Booking.created_at, Booking.id, BookingItem.id)
)

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection);
# a leading apostrophe makes it text. Ticket-type names are free text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def filename(event_id: int) -> str:
    return f"event-{event_id}-door-list.csv"


async def door_list(
    sessionmaker: async_sessionmaker[AsyncSession], event_id: int
) -> AsyncIterator[str]:
    """The CSV text, header first, in batches of BATCH_ROWS lines.

    It opens its own session: the response is sent after the request's handler (and
    its unit of work) has finished.
    """
    yield _csv([COLUMNS])
    async with sessionmaker() as session:
        result = await session.stream(
            _DOOR_LIST.where(Booking.event_id == event_id).execution_options(yield_per=BATCH_ROWS)
        )
        async for batch in result.partitions():
            yield _csv(batch)
