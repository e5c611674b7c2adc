"""What waiting lists tell: the attendee's offer email and the organizer's
``waitlist.offered`` webhook, in the transaction that makes the offer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, text

from app.notifications.service import waitlist_offer_email
from app.outbox.service import Transaction, fetch_rows, record_event
from app.waitlist.schemas import WaitlistEntryRead
from app.webhooks.schemas import WebhookEventType

if TYPE_CHECKING:
    from app.inventory.offer import Offer

# The entry as the API shows it (an offered entry has no position in the line).
_ENTRY_AS_SHOWN = text(
    """
    SELECT w.id, w.event_id, w.ticket_type_id, w.quantity, w.status, NULL AS position,
           h.hold_reference, w.created_at, w.offered_at
    FROM waitlist_entries w LEFT JOIN holds h ON h.id = w.hold_id
    WHERE w.id = :entry_id
    """
).bindparams(bindparam("entry_id"))


async def record_offer(db: Transaction, offer: Offer) -> None:
    """``waitlist.offered`` with the entry, and the email telling its attendee."""
    rows = await fetch_rows(db, _ENTRY_AS_SHOWN, {"entry_id": offer.entry_id})
    entry = WaitlistEntryRead.model_validate(dict(rows[0]))
    await record_event(
        db,
        WebhookEventType.waitlist_offered,
        event_id=offer.event_id,
        data=entry.model_dump(mode="json"),
        emails=[waitlist_offer_email(offer)],
    )
