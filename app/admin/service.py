"""What staff can do in the console, each through the domain's own service function.

A staff action never changes a counter or a status itself: cancelling a booking is
the bookings service's cancel (event lock, then the booking row, tickets released
exactly once), cancelling an event is the events service's update with `status:
cancelled`, deactivating an account is the auth service's deactivate (tokens
revoked). Each action writes one audit row (who, what, which object, before, after)
in the same transaction as the change, so an action without its audit row (or an
audit row without its action) cannot be committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.admin.models import AuditLog
from app.auth import service as auth_service
from app.auth.models import User
from app.auth.passwords import password_stamp
from app.bookings import service as bookings_service
from app.bookings.models import Booking
from app.bookings.service import BookingView
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.errors import InvalidCredentials, NotFound, PermissionDenied
from app.events import service as events_service
from app.events.models import Event
from app.events.schemas import EventUpdate
from app.events.service import EventChange
from app.events.status import EVENT_STATUS, EventStatus
from app.inventory.service import Aftermath

Sessionmaker = async_sessionmaker[AsyncSession]
# Reads the changed object inside the action's transaction; returns its "after" state,
# or None while the object is not changed yet (a read-only transaction of the action).
AfterState = Callable[[AsyncSession], Awaitable[dict[str, Any] | None]]


class AuditedUnitOfWork(UnitOfWork):
    """The unit of work handed to a domain service for a staff action.

    Just before the transaction that made the change commits, it reads the object's
    state after the change and adds the audit row to that same transaction (once).
    """

    def __init__(
        self, sessionmaker: Sessionmaker, audit: dict[str, Any], after_state: AfterState
    ) -> None:
        super().__init__(sessionmaker)
        self._audit = audit
        self._after_state = after_state
        self.audited = False

    async def before_commit(self) -> None:
        if not self.audited:
            after = await self._after_state(self.session)
            if after is not None:
                self.session.add(AuditLog(**self._audit, after=after))
                await self.session.flush()
                self.audited = True


async def _act(
    sessionmaker: Sessionmaker,
    action: Callable[[UnitOfWork], Awaitable[Any]],
    audit: dict[str, Any],
    after_state: AfterState,
) -> Any:
    uow = AuditedUnitOfWork(sessionmaker, audit, after_state)
    result = await action(uow)
    if not uow.audited:
        # The service made its change outside the session (on the driver connection):
        # the audit row follows in a transaction of its own.
        async with UnitOfWork(sessionmaker) as own:
            session = own.session
            session.add(AuditLog(**audit, after=await after_state(session) or {}))
    return result


def _audit(
    staff: User, action: str, object_type: str, object_id: object, before: dict[str, Any]
) -> dict[str, Any]:
    return {
        "actor_id": staff.id,
        "actor_username": staff.username,
        "action": action,
        "object_type": object_type,
        "object_id": str(object_id),
        "before": before,
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------- signing in


async def sign_in(uow: UnitOfWork, identifier: str, password: str) -> User:
    """The staff account of these credentials; anyone else is refused like a wrong password."""
    user = await auth_service.authenticate(uow, identifier, password)
    if not user.is_staff:
        raise InvalidCredentials()
    async with uow:
        uow.session.add(
            AuditLog(
                **_audit(user, "sign_in", "user", user.id, {}),
                after={"username": user.username},
            )
        )
    return user


async def staff_member(uow: UnitOfWork, user_id: int, stamp: int) -> User | None:
    """The signed-in staff member of a console session, while the session is still valid.

    A session ends when the account is deactivated, loses its staff flag or its password
    changes (the session keeps the password version it was opened with).
    """
    async with uow:
        user = await uow.session.get(User, user_id)
    if user is None or not user.is_active or not user.is_staff:
        return None
    if password_stamp(user) != stamp:
        return None
    return user


# ---------------------------------------------------------------- users


async def deactivate_user(sessionmaker: Sessionmaker, staff: User, user_id: int) -> User:
    """Deactivate an account as its owner would: refresh tokens revoked, access tokens dead."""
    if user_id == staff.id:
        raise PermissionDenied("You cannot deactivate your own account from the console.")
    async with UnitOfWork(sessionmaker) as uow:
        user = await uow.session.get(User, user_id)
    if user is None:
        raise NotFound("No user with this id.")

    async def after(session: AsyncSession) -> dict[str, Any] | None:
        active = await session.scalar(select(User.is_active).where(User.id == user_id))
        return None if active else {"is_active": False}

    await _act(
        sessionmaker,
        lambda uow: auth_service.deactivate(uow, user),
        _audit(staff, "deactivate_user", "user", user_id, {"is_active": user.is_active}),
        after,
    )
    user.is_active = False
    return user


# ---------------------------------------------------------------- bookings


async def _booking_state(session: AsyncSession, reference: uuid.UUID) -> dict[str, Any] | None:
    row = (
        await session.execute(
            select(Booking.status, Booking.cancelled_at).where(
                Booking.booking_reference == reference
            )
        )
    ).first()
    if row is None:
        return None
    return {"status": row.status, "cancelled_at": _iso(row.cancelled_at)}


async def cancel_booking(
    sessionmaker: Sessionmaker,
    staff: User,
    reference: uuid.UUID,
    *,
    settings: Settings,
    aftermath: Aftermath | None = None,
) -> tuple[BookingView, User]:
    """Cancel a booking on its attendee's behalf, with the rules of the attendee's own cancel.

    Returns the cancelled booking and its attendee (for the email); the waiting-list
    offers its tickets made go into ``aftermath``.
    """
    async with UnitOfWork(sessionmaker) as uow:
        row = (
            await uow.session.execute(
                select(User, Booking.status)
                .join(Booking, Booking.user_id == User.id)
                .where(Booking.booking_reference == reference)
            )
        ).first()
    if row is None:
        raise NotFound("No booking with this reference.")
    attendee, status = row

    async def after(session: AsyncSession) -> dict[str, Any] | None:
        state = await _booking_state(session, reference)
        return state if state is not None and state["status"] == "cancelled" else None

    booking = await _act(
        sessionmaker,
        lambda uow: bookings_service.cancel_booking(
            uow, attendee, reference, settings=settings, aftermath=aftermath
        ),
        _audit(staff, "cancel_booking", "booking", reference, {"status": status}),
        after,
    )
    return booking, attendee


# ---------------------------------------------------------------- events


async def _event_state(session: AsyncSession, event_id: int) -> dict[str, Any]:
    row = (
        await session.execute(
            select(
                EVENT_STATUS.label("status"),
                Event.tickets_sold,
                Event.cancelled_at,
                select(func.count())
                .where(Booking.event_id == Event.id, Booking.status == "confirmed")
                .correlate(Event)
                .scalar_subquery()
                .label("confirmed_bookings"),
            ).where(Event.id == event_id)
        )
    ).one()
    return {
        "status": row.status,
        "tickets_sold": row.tickets_sold,
        "confirmed_bookings": row.confirmed_bookings,
        "cancelled_at": _iso(row.cancelled_at),
    }


async def cancel_event(sessionmaker: Sessionmaker, staff: User, event_id: int) -> EventChange:
    """Cancel an event as its organizer would: every confirmed booking cancelled, tickets back.

    Returns the change, whose cancelled booking ids the caller notifies.
    """
    async with UnitOfWork(sessionmaker) as uow:
        if await uow.session.get(Event, event_id) is None:
            raise NotFound("No event with this id.")
        before = await _event_state(uow.session, event_id)

    async def after(session: AsyncSession) -> dict[str, Any] | None:
        state = await _event_state(session, event_id)
        return state if state["status"] == EventStatus.cancelled else None

    return await _act(
        sessionmaker,
        lambda uow: events_service.update_event(
            uow, event_id, EventUpdate(status=EventStatus.cancelled.value)
        ),
        _audit(staff, "cancel_event", "event", event_id, before),
        after,
    )


async def record_door_list_export(sessionmaker: Sessionmaker, staff: User, event_id: int) -> None:
    """A staff member downloads an event's door list (personal data): it is logged."""
    async with UnitOfWork(sessionmaker) as uow:
        if await uow.session.get(Event, event_id) is None:
            raise NotFound("No event with this id.")
        uow.session.add(
            AuditLog(
                **_audit(staff, "export_door_list", "event", event_id, {}),
                after={"format": "csv"},
            )
        )
