"""The emails users get, built from what a domain service holds, and stored in the outbox.

    email = notifications.booking_confirmed_email(booking, recipient, event)
    await outbox.record_event(conn, ..., emails=[email])      # in the change's transaction

Emails are outbox rows (app/outbox): stored with the change they report, sent by the
dispatcher, retried with backoff when SMTP fails; nothing is lost to a dead process or
an unreachable Redis once the change committed. The queued payload is ready to
render, so sending never reads the database.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from app.bookings.schemas import BookingRead
from app.core.config import Settings
from app.notifications.emails import Email
from app.outbox.service import record_emails

if TYPE_CHECKING:
    from app.core.db import UnitOfWork

logger = logging.getLogger("app.notifications")

BookingKind = Literal["booking_confirmed", "booking_cancelled"]
CancelReason = Literal["attendee", "event_cancelled"]


class OfferNotice(Protocol):
    """What the waiting-list offer email says (the inventory's Offer has these fields);
    a protocol, so that notifications depend on no domain that sends them."""

    @property
    def email(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def event_name(self) -> str: ...
    @property
    def event_start(self) -> datetime: ...
    @property
    def location(self) -> str: ...
    @property
    def ticket_type_name(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def unit_price(self) -> Decimal: ...
    @property
    def hold_reference(self) -> uuid.UUID: ...
    @property
    def expires_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who an email goes to."""

    email: str
    username: str


@dataclass(frozen=True, slots=True)
class EventDetails:
    """When and where the event of a booking takes place, as its emails tell it."""

    start: datetime
    end: datetime | None
    location: str


def booking_confirmed_email(booking: BookingRead, to: Recipient, event: EventDetails) -> Email:
    return _booking_email("booking_confirmed", booking, to, event, reason="attendee")


def booking_cancelled_email(
    booking: BookingRead, to: Recipient, event: EventDetails, *, reason: CancelReason
) -> Email:
    return _booking_email("booking_cancelled", booking, to, event, reason=reason)


def _booking_email(
    kind: BookingKind,
    booking: BookingRead,
    to: Recipient,
    event: EventDetails,
    *,
    reason: CancelReason,
) -> Email:
    reference = str(booking.booking_reference)
    return Email(
        kind=kind,
        to=to.email,
        context={
            "username": to.username,
            "reference": reference,
            "event_name": booking.event_name,
            "event_start": _when(event.start),
            "event_end": _when(event.end) if event.end is not None else None,
            "location": event.location,
            "items": [
                _line(item.ticket_type_name, item.quantity, Decimal(item.price_at_booking))
                for item in booking.items
            ],
            "total": _money(Decimal(booking.total_price)),
            "reason": reason,
        },
        # A booking is confirmed once and cancelled once: never email it twice.
        job_id=f"{kind}:{reference}",
    )


def waitlist_offer_email(offer: OfferNotice) -> Email:
    return Email(
        kind="waitlist_offered",
        to=offer.email,
        context={
            "username": offer.username,
            "reference": str(offer.hold_reference),
            "deadline": _when(offer.expires_at),
            "event_name": offer.event_name,
            "event_start": _when(offer.event_start),
            "location": offer.location,
            "ticket_type_name": offer.ticket_type_name,
            "quantity": offer.quantity,
            "total": _money(offer.unit_price * offer.quantity),
        },
        # One email per offer (its hold), however often the job is queued.
        job_id=f"waitlist_offered:{offer.hold_reference}",
    )


def password_reset_email(settings: Settings, *, email: str, username: str, link: str) -> Email:
    return Email(
        kind="password_reset",
        to=email,
        context={
            "username": username,
            "link": link,
            "expire_minutes": settings.password_reset_expire_minutes,
        },
    )


async def send_password_reset(
    settings: Settings, *, email: str, username: str, link: str, uow: UnitOfWork
) -> None:
    """Store the password reset email with ``link`` in the outbox (its own transaction)."""
    message = password_reset_email(settings, email=email, username=username, link=link)
    async with uow:
        await record_emails(uow.session, [message])


def _line(name: str, quantity: int, unit_price: Decimal) -> dict[str, Any]:
    return {
        "name": name,
        "quantity": quantity,
        "unit_price": _money(unit_price),
        "amount": _money(unit_price * quantity),
    }


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")
