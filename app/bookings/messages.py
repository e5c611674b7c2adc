"""What bookings tell the outside: the attendee's emails and the organizer's webhooks.

Each function records its messages in the outbox inside the caller's transaction (the
booking's asyncpg connection or a session): the messages exist exactly when the
booking was confirmed or cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, text

from app.bookings.schemas import BookingRead
from app.notifications.service import BookingKind, CancelReason, booking_email
from app.outbox.service import Transaction, fetch_rows, record_event
from app.webhooks.schemas import WebhookEventType

# Bookings with what their messages need: the attendee, the event, the items.
_BOOKINGS_TO_TELL = text(
    """
    SELECT b.id, b.booking_reference, b.event_id, e.name AS event_name, b.status,
           b.total_price, b.created_at, b.updated_at, b.cancelled_at, b.payment_reference,
           u.email, u.username, e.start_time AS event_start, e.location,
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


async def record_booking_confirmed(
    db: Transaction,
    booking: Any,
    *,
    email: str,
    username: str,
    event_start: datetime | None = None,
    location: str | None = None,
) -> frozenset[str]:
    """``booking.confirmed`` and the confirmation email of ``booking`` (as the API shows it).

    Returns the event types the organizer's endpoints subscribe to."""
    return await _record(
        db,
        WebhookEventType.booking_confirmed,
        booking,
        {"email": email, "username": username},
        event_start=event_start,
        location=location,
    )


async def record_booking_cancelled(
    db: Transaction,
    booking: Any,
    *,
    email: str,
    username: str,
    reason: CancelReason = "attendee",
) -> None:
    """``booking.cancelled`` and the cancellation email of ``booking``."""
    await _record(
        db,
        WebhookEventType.booking_cancelled,
        booking,
        {"email": email, "username": username},
        reason=reason,
    )


async def record_bookings_cancelled(
    db: Transaction, booking_ids: Sequence[int], *, reason: CancelReason
) -> None:
    """``booking.cancelled`` and an email for each of ``booking_ids`` (read back here)."""
    if not booking_ids:
        return
    rows = await fetch_rows(db, _BOOKINGS_TO_TELL, {"booking_ids": list(booking_ids)})
    for row in rows:
        booking = {**row, "items": orjson.loads(row["items"] or "[]")}
        await _record(
            db,
            WebhookEventType.booking_cancelled,
            booking,
            row,
            reason=reason,
            event_start=row["event_start"],
            location=row["location"],
        )


async def _record(
    db: Transaction,
    event_type: WebhookEventType,
    booking: Any,
    user: Mapping[str, Any],
    **email_fields: Any,
) -> frozenset[str]:
    shown = BookingRead.model_validate(booking, from_attributes=True)
    kind: BookingKind = (
        "booking_confirmed"
        if event_type is WebhookEventType.booking_confirmed
        else "booking_cancelled"
    )
    return await record_event(
        db,
        event_type,
        event_id=shown.event_id,
        data=shown.model_dump(mode="json"),
        emails=[booking_email(kind, booking, user, **email_fields)],
    )
