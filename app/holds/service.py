"""The hold rules: placing a hold like a booking, reading, releasing, checking out.

Taking, releasing and converting the held tickets belongs to ``app.inventory.service``
(the locks, their order, the checks, the counters); this module owns who may do what
with a hold, its Idempotency-Key (route ``holds``) and how a hold reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Uuid, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import ACCOUNT_COLUMNS, account_of, check_token_user
from app.auth.models import User
from app.bookings import messages as booking_messages
from app.bookings import repository
from app.bookings import service as bookings
from app.bookings.models import Booking
from app.bookings.schemas import BookingCreate, BookingRead
from app.core.config import Settings
from app.core.db import UnitOfWork, compile_statement, param, raw_connection
from app.core.errors import NotFound
from app.core.pagination import count_and_page
from app.core.security import TokenClaims
from app.events.models import Event
from app.holds.models import Hold, HoldItem
from app.inventory import service as inventory
from app.inventory.service import Aftermath
from app.notifications.service import EventDetails, Recipient

# How a hold reads: `active` rows past their time are `expired` at once, whatever the
# sweeper has done yet (now() is the statement's transaction clock).
HOLD_STATUS = case(
    (
        (Hold.status == "active") & (Hold.expires_at <= func.now()),
        literal("expired"),
    ),
    else_=Hold.status,
)


@dataclass(slots=True)
class HoldView:
    hold_reference: uuid.UUID
    event_id: int
    event_name: str
    status: str
    items: list[dict[str, Any]]
    total_price: Decimal
    expires_at: datetime
    created_at: datetime
    booking_reference: uuid.UUID | None
    id: int = 0


@dataclass(slots=True)
class HoldResult:
    hold: HoldView
    replayed: bool = False
    aftermath: Aftermath = field(default_factory=Aftermath)


async def place_hold(
    uow: UnitOfWork,
    claims: TokenClaims,
    data: BookingCreate,
    *,
    settings: Settings,
    idempotency_key: str | None = None,
) -> HoldResult:
    """Hold tickets for the attendee of ``claims``: the booking's request, checks and
    conflicts, plus one active hold per attendee and event."""
    aftermath = Aftermath()
    async with uow.driver() as conn:
        user = await bookings.check_account(conn, claims, data, settings)
        replay: int | None = None
        async with conn.transaction():
            if idempotency_key is not None:
                replay = await bookings.claim_idempotency_key(
                    conn, user.id, "holds", idempotency_key, bookings.request_fingerprint(data)
                )
            if replay is None:
                order, hold = await inventory.place_hold(
                    conn,
                    data.event_id,
                    bookings.lines_of(data),
                    user_id=user.id,
                    ttl_seconds=settings.hold_ttl_seconds,
                    offer_ttl=settings.waitlist_offer_ttl_seconds,
                    idempotency_key=idempotency_key,
                    aftermath=aftermath,
                )
    if replay is not None:
        async with uow:
            return HoldResult(await _load_hold(uow.session, Hold.id == replay), replayed=True)
    return HoldResult(
        HoldView(
            id=hold["id"],
            hold_reference=hold["hold_reference"],
            event_id=data.event_id,
            event_name=order.event_name,
            status="active",
            items=[
                {
                    "ticket_type_id": i,
                    "ticket_type_name": order.names[i],
                    "quantity": order.wanted[i],
                    "unit_price": order.unit_prices[i],
                }
                for i in order.ids
            ],
            total_price=order.total_price,
            expires_at=hold["expires_at"],
            created_at=hold["created_at"],
            booking_reference=None,
        ),
        aftermath=aftermath,
    )


async def get_hold(uow: UnitOfWork, user: User, reference: uuid.UUID) -> HoldView:
    """One's own hold; anyone else's (its event's organizer too) is not found."""
    async with uow:
        return await _load_hold(
            uow.session, Hold.hold_reference == reference, Hold.user_id == user.id
        )


async def release_hold(
    uow: UnitOfWork, user: User, reference: uuid.UUID, *, settings: Settings
) -> Aftermath:
    """Release one's own active hold: its tickets go back (to the waiting list first)."""
    aftermath = Aftermath()
    async with uow:
        hold = await _find_hold(uow.session, reference, user.id)
        await inventory.release_hold(
            await raw_connection(uow.session),
            hold.id,
            hold.event_id,
            offer_ttl=settings.waitlist_offer_ttl_seconds,
            aftermath=aftermath,
        )
    return aftermath


async def checkout_hold(
    uow: UnitOfWork,
    claims: TokenClaims,
    reference: uuid.UUID,
    *,
    settings: Settings,
    payment_reference: str | None,
) -> tuple[bookings.BookingView, bool]:
    """Turn one's own active hold into a confirmed booking (at the hold's prices).
    Returns the booking and whether it was made now (a hold checked out before
    returns its booking).

    Round trips on one pooled connection, as a booking's: the lock-free read of the
    account and the hold, then BEGIN, the locks, the write, the messages, COMMIT.
    """
    async with uow.driver() as conn:
        row = await compile_statement(ACCOUNT_AND_HOLD).fetchrow(
            conn, user_id=claims.user_id, hold_reference=reference
        )
        user = check_token_user(account_of(row), claims, settings)
        if row is None or row["hold_id"] is None:
            raise NotFound("No hold with this reference.")
        async with conn.transaction():
            done = await inventory.checkout_hold(
                conn, row["hold_id"], row["event_id"], payment_reference=payment_reference
            )
            if done.created:
                booking = _checked_out_view(row["event_id"], done)
                # booking.confirmed and its email, with the checkout's transaction.
                await booking_messages.record_booking_confirmed(
                    conn,
                    BookingRead.model_validate(booking, from_attributes=True),
                    Recipient(email=user.email, username=user.username),
                    EventDetails(
                        start=done.event["start_time"],
                        end=done.event["end_time"],
                        location=done.event["location"],
                    ),
                )
    if done.created:
        return booking, True
    async with uow:
        return await bookings.load_booking(uow.session, Booking.id == done.booking_id), False


def _checked_out_view(event_id: int, done: inventory.Checkout) -> bookings.BookingView:
    """The booking a checkout just wrote, from the rows its statement returned."""
    first = done.written[0]
    return bookings.BookingView(
        id=first["id"],
        booking_reference=first["booking_reference"],
        event_id=event_id,
        event_name=done.event["name"],
        status="confirmed",
        items=[
            {
                "id": row["item_id"],
                "ticket_type_id": row["ticket_type_id"],
                "ticket_type_name": row["ticket_type_name"],
                "quantity": row["quantity"],
                "price_at_booking": row["price_at_booking"],
            }
            for row in done.written
        ],
        total_price=first["total_price"],
        created_at=first["created_at"],
        updated_at=first["updated_at"],
        cancelled_at=None,
        payment_reference=first["payment_reference"],
    )


async def list_holds(
    uow: UnitOfWork, user: User, *, offset: int, limit: int, status: str | None
) -> tuple[int, list[HoldView]]:
    """One's own holds, newest first."""
    conditions: list[Any] = [Hold.user_id == user.id]
    if status is not None:
        conditions.append(status == HOLD_STATUS)
    async with uow:
        count, rows = await count_and_page(
            uow.session,
            Hold,
            _hold_query(),
            conditions,
            order_by=(Hold.created_at.desc(), Hold.id.desc()),
            offset=offset,
            limit=limit,
        )
        return count, await _with_items(uow.session, rows)


# ---------------------------------------------------------------- reading


# Lock-free, before a checkout's transaction: the caller's account (the access token was
# only verified) and their hold by its reference (someone else's is not found).
ACCOUNT_AND_HOLD = (
    select(*ACCOUNT_COLUMNS, Hold.id.label("hold_id"), Hold.event_id)
    .select_from(User)
    .outerjoin(
        Hold,
        (Hold.user_id == User.id) & (Hold.hold_reference == param("hold_reference", Uuid)),
    )
    .where(User.id == param("user_id", BigInteger))
)

# Lock-free: the caller's hold by its reference (someone else's is not found).
FIND_HOLD = select(Hold.id, Hold.event_id).where(
    Hold.hold_reference == param("hold_reference", Uuid),
    Hold.user_id == param("user_id", BigInteger),
)


async def _find_hold(session: AsyncSession, reference: uuid.UUID, user_id: int) -> Any:
    row = (
        await session.execute(FIND_HOLD, {"hold_reference": reference, "user_id": user_id})
    ).first()
    if row is None:
        raise NotFound("No hold with this reference.")
    return row


def _hold_query() -> Any:
    return (
        select(
            Hold.id,
            Hold.hold_reference,
            Hold.event_id,
            Event.name.label("event_name"),
            HOLD_STATUS.label("status"),
            Hold.total_price,
            Hold.expires_at,
            Hold.created_at,
            Booking.booking_reference,
        )
        .join(Event, Event.id == Hold.event_id)
        .outerjoin(Booking, Booking.id == Hold.booking_id)
    )


async def _with_items(session: AsyncSession, rows: Any) -> list[HoldView]:
    items = await repository.read_items(
        session,
        HoldItem.hold_id,
        [r.id for r in rows],
        HoldItem.ticket_type_id,
        repository.TICKET_TYPE_NAME,
        HoldItem.quantity,
        HoldItem.unit_price,
        order_by=HoldItem.ticket_type_id,
    )
    return [HoldView(**row._mapping, items=items[row.id]) for row in rows]


async def _load_hold(session: AsyncSession, *where: ColumnElement[bool]) -> HoldView:
    """The hold that matches ``where`` (NotFound if none does)."""
    row = (await session.execute(_hold_query().where(*where))).first()
    if row is None:
        raise NotFound("No hold with this reference.")
    return (await _with_items(session, [row]))[0]
