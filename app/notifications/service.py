"""The emails users get, built from what a domain service holds, and stored in the outbox.

    email = notifications.booking_email("booking_confirmed", booking, user)
    await outbox.record_event(conn, ..., emails=[email])      # in the change's transaction

Emails are outbox rows (app/outbox): stored with the change they report, sent by the
dispatcher, retried with backoff when SMTP fails; nothing is lost to a dead process or
an unreachable Redis once the change committed. The queued payload is ready to
render, so sending never reads the database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.auth.models import User
from app.bookings.models import Booking, BookingItem
from app.core.config import Settings
from app.events.models import Event, TicketType
from app.notifications.emails import Email
from app.outbox.service import record_emails

if TYPE_CHECKING:
    from app.core.db import UnitOfWork

logger = logging.getLogger("app.notifications")

BookingKind = Literal["booking_confirmed", "booking_cancelled"]
CancelReason = Literal["attendee", "event_cancelled"]


async def booking_confirmed(
    app: Any,
    booking: Any,
    user: Any = None,
    *,
    event_start: datetime | None = None,
    location: str | None = None,
) -> None:
    """Store the confirmation email of the committed ``booking`` in the outbox."""
    email = booking_email(
        "booking_confirmed", booking, user, event_start=event_start, location=location
    )
    await _record(app, [email])


async def booking_cancelled(
    app: Any,
    booking: Any,
    user: Any = None,
    *,
    reason: CancelReason = "attendee",
) -> None:
    """Store one cancellation email per cancelled booking: ``booking`` and its ``user``,
    or the ids an event cancellation returned (read back)."""
    if isinstance(booking, list | tuple | set | frozenset):
        if not booking:
            return
        emails = await load_booking_emails(
            _state(app).sessionmaker, list(booking), kind="booking_cancelled", reason=reason
        )
    else:
        emails = [booking_email("booking_cancelled", booking, user, reason=reason)]
    await _record(app, emails)


async def _record(app: Any, emails: list[Email]) -> None:
    async with _state(app).sessionmaker.begin() as session:
        await record_emails(session, emails)


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
