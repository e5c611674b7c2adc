"""The waiting-list rules: joining, leaving, reading one's own entries and the line.

Offers (holds made for waiting entries when tickets come back) are made by
``app.inventory.service.offer_to_waitlist`` in the transaction that frees the tickets.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, insert, literal, select, tuple_
from sqlalchemy.orm import aliased

from app.auth.models import User
from app.core.config import Settings
from app.core.db import UnitOfWork, raw_connection
from app.core.errors import AlreadyWaiting, NotFound, ValidationFailed
from app.core.pagination import count_and_page
from app.holds.models import Hold
from app.inventory import service as inventory
from app.inventory.service import Aftermath
from app.waitlist.models import WaitlistEntry as W
from app.waitlist.schemas import WaitlistJoin

_ahead = aliased(W)

# How an entry reads: an offer whose hold ran out is `expired` at once, like the hold.
ENTRY_STATUS = case(
    (
        and_(W.status == "offered", Hold.status == "active", Hold.expires_at <= func.now()),
        literal("expired"),
    ),
    else_=W.status,
)

# The 1-based place among the waiting entries of the same ticket type (joining order).
POSITION = case(
    (
        W.status == "waiting",
        select(func.count())
        .where(
            _ahead.ticket_type_id == W.ticket_type_id,
            _ahead.status == "waiting",
            tuple_(_ahead.created_at, _ahead.id) <= tuple_(W.created_at, W.id),
        )
        .correlate(W)
        .scalar_subquery(),
    ),
    else_=None,
)


def _entries() -> Any:
    return (
        select(
            W.id,
            W.event_id,
            W.ticket_type_id,
            W.quantity,
            ENTRY_STATUS.label("status"),
            POSITION.label("position"),
            Hold.hold_reference,
            W.created_at,
            W.offered_at,
            W.user_id,
            User.username,
        )
        .outerjoin(Hold, Hold.id == W.hold_id)
        .join(User, User.id == W.user_id)
    )


def _view(row: Any) -> dict[str, Any]:
    view = dict(row._mapping)
    view["user"] = {"id": view.pop("user_id"), "username": view.pop("username")}
    return view


async def join(
    uow: UnitOfWork, user: User, event_id: int, data: WaitlistJoin, *, settings: Settings
) -> tuple[dict[str, Any], Aftermath]:
    """Join the line of a ticket type that has not enough tickets on sale."""
    if data.quantity > settings.max_tickets_per_booking:
        raise ValidationFailed(
            f"At most {settings.max_tickets_per_booking} tickets (asked for {data.quantity}).",
            field="body.quantity",
        )
    aftermath = Aftermath()
    async with uow:
        session = uow.session
        conn = await raw_connection(session)
        await inventory.lock_for_waiting(
            conn,
            event_id,
            data.ticket_type_id,
            offer_ttl=settings.waitlist_offer_ttl_seconds,
            aftermath=aftermath,
        )
        open_entry = await session.scalar(
            select(W.id).where(
                W.user_id == user.id,
                W.ticket_type_id == data.ticket_type_id,
                W.status.in_(("waiting", "offered")),
            )
        )
        if open_entry is not None:
            raise AlreadyWaiting()
        await inventory.check_nothing_on_sale(conn, event_id, data.ticket_type_id, data.quantity)
        entry_id = await session.scalar(
            insert(W)
            .values(
                event_id=event_id,
                ticket_type_id=data.ticket_type_id,
                user_id=user.id,
                quantity=data.quantity,
            )
            .returning(W.id)
        )
        row = (await session.execute(_entries().where(W.id == entry_id))).one()
    return _view(row), aftermath


async def get_entry(uow: UnitOfWork, user: User, entry_id: int) -> dict[str, Any]:
    async with uow:
        row = (
            await uow.session.execute(_entries().where(W.id == entry_id, W.user_id == user.id))
        ).first()
    if row is None:
        raise NotFound("No waiting-list entry with this id.")
    return _view(row)


async def leave(uow: UnitOfWork, user: User, entry_id: int, *, settings: Settings) -> Aftermath:
    """Leave the line; an offered hold is released (its tickets go to the next entry).
    An entry that already ended stays as it is."""
    aftermath = Aftermath()
    async with uow:
        session = uow.session
        found = (
            await session.execute(select(W.event_id).where(W.id == entry_id, W.user_id == user.id))
        ).first()
        if found is None:
            raise NotFound("No waiting-list entry with this id.")
        await inventory.leave_waitlist(
            await raw_connection(session),
            found.event_id,
            entry_id,
            offer_ttl=settings.waitlist_offer_ttl_seconds,
            aftermath=aftermath,
        )
    return aftermath


async def list_mine(
    uow: UnitOfWork, user: User, *, offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """One's own entries, newest first."""
    async with uow:
        count, rows = await count_and_page(
            uow.session,
            W,
            _entries(),
            [W.user_id == user.id],
            order_by=(W.created_at.desc(), W.id.desc()),
            offset=offset,
            limit=limit,
        )
    return count, [_view(r) for r in rows]


async def list_line(
    uow: UnitOfWork, event_id: int, *, offset: int, limit: int, status: str | None
) -> tuple[int, list[dict[str, Any]]]:
    """Every entry of an event in line order (joining time), for its organizer."""
    query = _entries().where(W.event_id == event_id)
    if status is not None:
        query = query.where(status == ENTRY_STATUS)
    async with uow:
        session = uow.session
        count = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            await session.execute(query.order_by(W.created_at, W.id).offset(offset).limit(limit))
        ).all()
    return count or 0, [_view(r) for r in rows]
