"""What bookings tell the outside: the attendee's emails and the organizer's webhooks.

Each function records its messages in the outbox inside the caller's transaction (the
booking's asyncpg connection or a session): the messages exist exactly when the
booking was confirmed or cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import bindparam, text

from app.bookings.schemas import BookingRead
from app.notifications.service import (
    CancelReason,
    EventDetails,
    Recipient,
    booking_cancelled_email,
    booking_confirmed_email,
)
from app.outbox.service import (
    Transaction,
    email_payload,
    fetch_rows,
    record_event,
    webhook_payload,
)
from app.webhooks.schemas import WebhookEventType

# Bookings with what their messages need: the attendee, the event, the items.
_BOOKINGS_TO_TELL = text(
    """
    SELECT b.id, b.booking_reference, b.event_id, e.name AS event_name, b.status,
           b.total_price, b.created_at, b.updated_at, b.cancelled_at, b.payment_reference,
           u.email, u.username, e.start_time, e.end_time, e.location,
           (SELECT json_agg(json_build_object(
                       'id', i.id, 'ticket_type_id', i.ticket_type_id,
                       'ticket_type_name', t.name, 'quantity', i.quantity,
                       'price_at_booking', i.price_at_booking::text) ORDER BY i.id)
            FROM booking_items i JOIN ticket_types t ON t.id = i.ticket_type_id
            WHERE i.booking_id = b.id)::text AS items
    FROM bookings b
    JOIN users u ON u.id = b.user_id
    JOIN events e ON e.id = b.event_id
    WHERE b.id = ANY(:booking_ids)
    ORDER BY b.id
    """
).bindparams(bindparam("booking_ids"))

_EVENT_DETAILS = text(
    "SELECT start_time, end_time, location FROM events WHERE id = :event_id"
).bindparams(bindparam("event_id"))


async def event_details(db: Transaction, event_id: int) -> EventDetails:
    """When and where the event takes place, for the emails about its bookings."""
    [row] = await fetch_rows(db, _EVENT_DETAILS, {"event_id": event_id})
    return EventDetails(start=row["start_time"], end=row["end_time"], location=row["location"])


async def record_booking_confirmed(
    db: Transaction, booking: BookingRead, to: Recipient, event: EventDetails
) -> frozenset[str]:
    """``booking.confirmed`` and the confirmation email of ``booking``.

    Returns the event types the organizer's endpoints subscribe to."""
    return await record_event(
        db,
        WebhookEventType.booking_confirmed,
        event_id=booking.event_id,
        data=booking.model_dump(mode="json"),
        emails=[booking_confirmed_email(booking, to, event)],
    )


def booking_confirmed_payloads(
    booking: BookingRead, to: Recipient, event: EventDetails
) -> tuple[str, str, str]:
    """What ``record_booking_confirmed`` stores, for a write that stores it itself
    (``book_tickets_many()`` in PostgreSQL): the webhook topic, its body, the emails."""
    topic = WebhookEventType.booking_confirmed
    return (
        topic.value,
        webhook_payload(topic, booking.model_dump(mode="json")),
        email_payload([booking_confirmed_email(booking, to, event)]),
    )


async def record_booking_cancelled(
    db: Transaction,
    booking: BookingRead,
    to: Recipient,
    event: EventDetails,
    *,
    reason: CancelReason = "attendee",
) -> None:
    """``booking.cancelled`` and the cancellation email of ``booking``."""
    await record_event(
        db,
        WebhookEventType.booking_cancelled,
        event_id=booking.event_id,
        data=booking.model_dump(mode="json"),
        emails=[booking_cancelled_email(booking, to, event, reason=reason)],
    )


async def record_bookings_cancelled(
    db: Transaction, booking_ids: Sequence[int], *, reason: CancelReason
) -> None:
    """``booking.cancelled`` and an email for each of ``booking_ids`` (read back here)."""
    if not booking_ids:
        return
    rows = await fetch_rows(db, _BOOKINGS_TO_TELL, {"booking_ids": list(booking_ids)})
    for row in rows:
        booking = BookingRead.model_validate({**row, "items": orjson.loads(row["items"] or "[]")})
        await record_booking_cancelled(
            db,
            booking,
            Recipient(email=row["email"], username=row["username"]),
            EventDetails(start=row["start_time"], end=row["end_time"], location=row["location"]),
            reason=reason,
        )
