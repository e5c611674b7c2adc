"""What the other domains call to email users, after their transaction has committed.

    notifications.booking_confirmed(request.app, booking, user)
    notifications.booking_cancelled(request.app, booking, user)
    notifications.booking_cancelled(request.app, cancelled_ids, reason="event_cancelled")

None of these waits: the email is queued (or, without REDIS_URL, sent) by a
background task of the process, and the arq worker sends it. The queued job
carries a ready payload, so the worker never reads the database. The booking
emails are built from the booking the request already holds; only an event
cancellation, which knows just the ids of the bookings it cancelled, reads
them back (in a session of its own, so only committed data is seen).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.auth.models import User
from app.bookings.models import Booking, BookingItem
from app.core.config import Settings
from app.events.models import Event, TicketType
from app.inventory.service import Offer
from app.notifications.emails import Email
from app.notifications.jobs import send_with_retries
from app.notifications.outbox import Outbox, get_outbox, outbox_for

logger = logging.getLogger("app.notifications")

BookingKind = Literal["booking_confirmed", "booking_cancelled"]
CancelReason = Literal["attendee", "event_cancelled"]


def booking_confirmed(
    app: Any,
    booking: Any,
    user: Any = None,
    *,
    event_start: datetime | None = None,
    location: str | None = None,
) -> None:
    """Email the attendee the confirmation of ``booking`` (reference, items, prices, total).

    ``booking`` is the committed booking as the response shows it (``booking_reference``,
    ``event_name``, ``items`` with ``ticket_type_name``, ``quantity``, ``price_at_booking``,
    and ``total_price``) and ``user`` its attendee (``email``, ``username``); the event's
    start and location are shown when given. A booking id instead reads it back.
    """
    if isinstance(booking, int):
        _post_loaded(app, [booking], "booking_confirmed", "attendee")
        return
    email = booking_email(
        "booking_confirmed", booking, user, event_start=event_start, location=location
    )
    outbox = _outbox(app)
    outbox.spawn(outbox.send(email))


def booking_cancelled(
    app: Any,
    booking: Any,
    user: Any = None,
    *,
    reason: CancelReason = "attendee",
    event_start: datetime | None = None,
    location: str | None = None,
) -> None:
    """Email the attendee of each cancelled booking: one email per booking.

    ``booking`` and ``user`` as for booking_confirmed; or a booking id, or the list of
    ids an event cancellation returned (``reason="event_cancelled"``): those are read back.
    """
    if isinstance(booking, int | list | tuple | set | frozenset):
        ids = [booking] if isinstance(booking, int) else list(booking)
        _post_loaded(app, ids, "booking_cancelled", reason)
        return
    email = booking_email(
        "booking_cancelled",
        booking,
        user,
        reason=reason,
        event_start=event_start,
        location=location,
    )
    outbox = _outbox(app)
    outbox.spawn(outbox.send(email))


def _post_loaded(app: Any, ids: list[int], kind: BookingKind, reason: CancelReason) -> None:
    if not ids:
        return
    sessionmaker = _state(app).sessionmaker
    _outbox(app).post(lambda: load_booking_emails(sessionmaker, ids, kind=kind, reason=reason))


def booking_email(
    kind: BookingKind,
    booking: Any,
    user: Any,
    *,
    reason: CancelReason = "attendee",
    event_start: datetime | None = None,
    location: str | None = None,
) -> Email:
    reference = str(_field(booking, "booking_reference"))
    return Email(
        kind=kind,
        to=_field(user, "email"),
        context={
            "username": _field(user, "username"),
            "reference": reference,
            "event_name": _field(booking, "event_name"),
            "event_start": _when(event_start) if event_start else None,
            "location": location,
            "items": [
                _line(
                    _field(item, "ticket_type_name"),
                    _field(item, "quantity"),
                    Decimal(_field(item, "price_at_booking")),
                )
                for item in _field(booking, "items")
            ],
            "total": _money(Decimal(_field(booking, "total_price"))),
            "reason": reason,
        },
        # A booking is confirmed once and cancelled once: never email it twice.
        job_id=f"{kind}:{reference}",
    )


def waitlist_offered(app: Any, offers: Sequence[Offer]) -> None:
    """Email each waiting attendee whose entry was just offered a hold (after commit):
    the hold's reference and its deadline."""
    if not offers:
        return
    outbox = _outbox(app)
    for offer in offers:
        outbox.spawn(outbox.send(waitlist_offer_email(offer)))


def waitlist_offer_email(offer: Offer) -> Email:
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


async def send_password_reset(settings: Settings, *, email: str, username: str, link: str) -> None:
    """Deliver the password reset link to ``email``; called after the response is sent.

    Queued for the worker when the application runs with Redis, else sent from here
    (retrying with backoff when SMTP fails).
    """
    message = password_reset_email(settings, email=email, username=username, link=link)
    outbox = outbox_for(settings)
    if outbox is not None:
        await outbox.send(message)
    else:
        await send_with_retries(settings, message)


async def load_booking_emails(
    sessionmaker: async_sessionmaker[AsyncSession],
    booking_ids: Sequence[int],
    *,
    kind: BookingKind,
    reason: CancelReason = "attendee",
) -> list[Email]:
    """One email per booking, read back from the database (two queries)."""
    async with sessionmaker() as session:
        bookings = (
            await session.execute(
                select(
                    Booking.id,
                    Booking.booking_reference,
                    Booking.total_price,
                    User.email,
                    User.username,
                    Event.name.label("event_name"),
                    Event.start_time,
                    Event.location,
                )
                .join(User, User.id == Booking.user_id)
                .join(Event, Event.id == Booking.event_id)
                .where(Booking.id.in_(booking_ids))
                .order_by(Booking.id)
            )
        ).all()
        items = (
            await session.execute(
                select(
                    BookingItem.booking_id,
                    TicketType.name.label("ticket_type_name"),
                    BookingItem.quantity,
                    BookingItem.price_at_booking,
                )
                .join(TicketType, TicketType.id == BookingItem.ticket_type_id)
                .where(BookingItem.booking_id.in_(booking_ids))
                .order_by(BookingItem.id)
            )
        ).all()
    lines: dict[int, list[Any]] = {}
    for item in items:
        lines.setdefault(item.booking_id, []).append(item)
    emails = [
        booking_email(
            kind,
            {**row._asdict(), "items": lines.get(row.id, [])},
            row,
            reason=reason,
            event_start=row.start_time,
            location=row.location,
        )
        for row in bookings
    ]
    if missing := len(booking_ids) - len(emails):
        logger.warning("%d booking(s) to email about were not found", missing)
    return emails


def _field(source: Any, name: str) -> Any:
    return source[name] if isinstance(source, Mapping) else getattr(source, name)


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


def _state(app: Any) -> Any:
    """``app.state`` of an application, or of a request's application."""
    return app.app.state if isinstance(app, HTTPConnection) else app.state


def _outbox(app: Any) -> Outbox:
    return get_outbox(_state(app))
