"""What the other domains call to email users, after their transaction has committed.

    notifications.booking_confirmed(request.app, booking.id)
    notifications.booking_cancelled(request.app, booking.id)
    notifications.booking_cancelled(request.app, cancelled_ids, reason="event_cancelled")

None of these waits: the booking is read (in a session of its own, so only
committed data is seen) and the email queued in a background task of the
process, and the arq worker sends it (or, without REDIS_URL, the same task
does). The queued job carries a ready payload: the worker never reads the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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
from app.notifications.emails import Email
from app.notifications.jobs import send_with_retries
from app.notifications.outbox import Outbox, get_outbox, outbox_for

logger = logging.getLogger("app.notifications")

CancelReason = Literal["attendee", "event_cancelled"]


def booking_confirmed(app: Any, booking_id: int) -> None:
    """Email the attendee the confirmation of a booking (reference, items, total)."""
    outbox = _outbox(app)
    sessionmaker = _sessionmaker(app)
    outbox.post(lambda: booking_emails(sessionmaker, [booking_id], kind="booking_confirmed"))


def booking_cancelled(
    app: Any, booking_ids: int | Iterable[int], *, reason: CancelReason = "attendee"
) -> None:
    """Email each attendee that a booking is cancelled: one email per booking."""
    ids = [booking_ids] if isinstance(booking_ids, int) else list(booking_ids)
    if not ids:
        return
    outbox = _outbox(app)
    sessionmaker = _sessionmaker(app)
    outbox.post(lambda: booking_emails(sessionmaker, ids, kind="booking_cancelled", reason=reason))


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


async def booking_emails(
    sessionmaker: async_sessionmaker[AsyncSession],
    booking_ids: Sequence[int],
    *,
    kind: Literal["booking_confirmed", "booking_cancelled"],
    reason: CancelReason = "attendee",
) -> list[Email]:
    """One email per booking, with everything its template shows (two queries)."""
    async with sessionmaker() as session:
        bookings = (
            await session.execute(
                select(
                    Booking.id,
                    Booking.booking_reference,
                    Booking.total_price,
                    User.email,
                    User.username,
                    Event.name,
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
                    TicketType.name,
                    BookingItem.quantity,
                    BookingItem.price_at_booking,
                )
                .join(TicketType, TicketType.id == BookingItem.ticket_type_id)
                .where(BookingItem.booking_id.in_(booking_ids))
                .order_by(BookingItem.id)
            )
        ).all()
    lines: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        lines.setdefault(item.booking_id, []).append(
            {
                "name": item.name,
                "quantity": item.quantity,
                "unit_price": _money(item.price_at_booking),
                "amount": _money(item.price_at_booking * item.quantity),
            }
        )
    emails = []
    for booking in bookings:
        reference = str(booking.booking_reference)
        emails.append(
            Email(
                kind=kind,
                to=booking.email,
                context={
                    "username": booking.username,
                    "reference": reference,
                    "event_name": booking.name,
                    "event_start": _when(booking.start_time),
                    "location": booking.location,
                    "items": lines.get(booking.id, []),
                    "total": _money(booking.total_price),
                    "reason": reason,
                },
                # A booking is confirmed once and cancelled once: never email it twice.
                job_id=f"{kind}:{reference}",
            )
        )
    missing = len(booking_ids) - len(emails)
    if missing:
        logger.warning("%d booking(s) to email about were not found", missing)
    return emails


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


def _state(app: Any) -> Any:
    """``app.state`` of an application, or of a request's application."""
    return app.app.state if isinstance(app, HTTPConnection) else app.state


def _outbox(app: Any) -> Outbox:
    return get_outbox(_state(app))


def _sessionmaker(app: Any) -> async_sessionmaker[AsyncSession]:
    return _state(app).sessionmaker
