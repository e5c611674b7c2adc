"""What holds tell the organizer's webhooks: ``hold.expired``, in the expiring transaction."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import bindparam, text

from app.holds.schemas import HoldRead
from app.outbox.service import Transaction, fetch_rows, record_event
from app.webhooks.schemas import WebhookEventType

# The holds as the API shows them (HoldRead), items included.
_HOLDS_AS_SHOWN = text(
    """
    SELECT h.hold_reference, h.event_id, e.name AS event_name, h.status, h.total_price,
           h.expires_at, h.created_at, b.booking_reference,
           (SELECT json_agg(json_build_object(
                       'ticket_type_id', i.ticket_type_id, 'ticket_type_name', t.name,
                       'quantity', i.quantity, 'unit_price', i.unit_price::text)
                   ORDER BY i.ticket_type_id)
            FROM hold_items i JOIN ticket_types t ON t.id = i.ticket_type_id
            WHERE i.hold_id = h.id)::text AS items
    FROM holds h
    JOIN events e ON e.id = h.event_id
    LEFT JOIN bookings b ON b.id = h.booking_id
    WHERE h.id = ANY(:hold_ids)
    ORDER BY h.id
    """
).bindparams(bindparam("hold_ids"))


async def record_holds_expired(db: Transaction, event_id: int, hold_ids: Sequence[int]) -> None:
    """``hold.expired`` for each of ``hold_ids`` (holds of event ``event_id`` that just
    expired), with the hold as the API shows it."""
    if not hold_ids:
        return
    for row in await fetch_rows(db, _HOLDS_AS_SHOWN, {"hold_ids": list(hold_ids)}):
        hold = HoldRead.model_validate({**row, "items": orjson.loads(row["items"] or "[]")})
        await record_event(
            db,
            WebhookEventType.hold_expired,
            event_id=event_id,
            data=hold.model_dump(mode="json"),
        )
