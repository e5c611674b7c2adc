"""The booking rules: who may book what, idempotent retries, reading and listing.

Taking and giving back tickets (the locks, their order, the checks and the counters)
belongs to ``app.inventory.service``; this module calls it inside its transactions.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import account_of, check_role, check_token_user
from app.auth.models import Role, User
from app.bookings import messages, repository
from app.bookings.models import Booking, BookingItem
from app.bookings.schemas import BookingCreate, BookingFilters, BookingRead
from app.core.config import Settings
from app.core.db import UnitOfWork, compile_statement, raw_connection
from app.core.db_errors import sqlstate
from app.core.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from app.core.pagination import count_and_page
from app.core.security import TokenClaims
from app.events.models import Event
from app.inventory import service as inventory
from app.inventory.service import Aftermath, Line
from app.notifications.service import EventDetails, Recipient


@dataclass(slots=True)
class BookingView:
    """A booking with what its response needs (event and ticket-type names)."""

    booking_reference: uuid.UUID
    event_id: int
    event_name: str
    status: str
    items: list[dict[str, Any]]
    total_price: Decimal
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    payment_reference: str | None = None
    id: int = 0
    user: dict[str, Any] | None = None


@dataclass(slots=True)
class BookingResult:
    booking: BookingView | BookingRead  # BookingRead: made once, for the answer and messages
    replayed: bool = False
    user: User | None = None
    aftermath: Aftermath = field(default_factory=Aftermath)


# ---------------------------------------------------------------- booking


def _check_shape(data: BookingCreate, max_tickets: int) -> None:
    seen: set[int] = set()
    for index, item in enumerate(data.items):
        if item.ticket_type_id in seen:
            raise ValidationFailed(
                "A ticket type appears twice; give each ticket type once with its quantity.",
                field=f"body.items.{index}.ticket_type_id",
            )
        seen.add(item.ticket_type_id)
    total = sum(item.quantity for item in data.items)
    if total > max_tickets:
        raise ValidationFailed(
            f"At most {max_tickets} tickets per booking (asked for {total}).", field="body.items"
        )


def request_fingerprint(data: BookingCreate) -> str:
    """The same booking request gives the same hash, whatever the order of its items."""
    canonical = {
        "event_id": data.event_id,
        "items": sorted((i.ticket_type_id, i.quantity) for i in data.items),
    }
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()


async def claim_idempotency_key(
    conn: asyncpg.Connection, user_id: int, scope: str, key: str, fingerprint: str
) -> int | None:
    """Claim the key of route ``scope`` (``bookings``, ``holds``) for this request, or
    return the booking (or hold) id of the request that holds it.

    Two requests with one key serialise on the key's row: the second waits for the
    first to commit (then replays its result) or roll back (then claims the key).
    """
    try:
        claimed = await compile_statement(repository.CLAIM_KEY).fetchval(
            conn, user_id=user_id, scope=scope, key=key, request_hash=fingerprint
        )
    except asyncpg.PostgresError as exc:
        if sqlstate(exc) == "55P03":  # still held by a request in flight
            raise IdempotencyKeyInUse() from exc
        raise
    if claimed is not None:
        return None
    row = await compile_statement(repository.HELD_KEY).fetchrow(
        conn, user_id=user_id, scope=scope, key=key
    )
    assert row is not None
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyReused()
    held = row["booking_id"] if scope == "bookings" else row["hold_id"]
    if held is None:
        raise IdempotencyKeyInUse()
    return held


def lines_of(data: BookingCreate) -> list[Line]:
    return [Line(item.ticket_type_id, item.quantity) for item in data.items]


async def check_account(
    conn: asyncpg.Connection, claims: TokenClaims, data: BookingCreate, settings: Settings
) -> User:
    """Lock-free, one statement: the attendee behind the token (401/403), the request's
    shape (422), the event (404) and its ownership of the ticket types (422)."""
    ids = sorted(item.ticket_type_id for item in data.items)
    row = await inventory.read_account_event_and_types(conn, claims.user_id, data.event_id, ids)
    return _checked(row, claims, data, settings)


def _checked(
    row: asyncpg.Record | None, claims: TokenClaims, data: BookingCreate, settings: Settings
) -> User:
    user = check_role(check_token_user(account_of(row), claims, settings), Role.attendee)
    _check_shape(data, settings.max_tickets_per_booking)
    own_ids = row["own_ids"] if row is not None else None
    if own_ids is None:
        raise NotFound("No event with this id.")
    inventory.check_owned(lines_of(data), set(own_ids))
    return user


async def book_tickets(
    uow: UnitOfWork,
    claims: TokenClaims,
    data: BookingCreate,
    *,
    settings: Settings,
    idempotency_key: str | None = None,
) -> BookingResult:
    """Book tickets for one event, whole or not at all, for the attendee of ``claims``.

    The common case: the lock-free read of the account and the order, then the booking
    in one call (``BookingsTogether``, with the other bookings of the event that arrived
    meanwhile), its response and messages made ready before it. Anything else (a
    refusal, the last tickets, a key used before) runs the general transaction: BEGIN,
    (the idempotency key), the locks, the write, (the sold-out check), the messages,
    COMMIT.
    """
    ids = sorted(item.ticket_type_id for item in data.items)
    async with uow.driver() as conn:
        row = await inventory.read_account_and_order(
            conn, claims.user_id, data.event_id, ids, lines=len(ids)
        )
        user = _checked(row, claims, data, settings)
        assert row is not None
        order = _order_as_read(data, row)
        if order.room_after <= 0:  # likely refused, or the last tickets: the general way
            result = await _book_in_transaction(conn, user, data, settings, idempotency_key)
    if order.room_after > 0:
        booking, prepared = _ready(data, order, row, user)
        together = inventory.bookings_together(uow.sessionmaker)
        if await together.book(
            uow.sessionmaker,
            order,
            prepared,
            user_id=user.id,
            idempotency_key=idempotency_key,
            request_hash=request_fingerprint(data) if idempotency_key is not None else None,
        ):
            return BookingResult(booking, user=user)
        async with uow.driver() as conn:
            result = await _book_in_transaction(conn, user, data, settings, idempotency_key)
    if isinstance(result, int):  # the key's booking, read once the connection is back
        async with uow:
            return BookingResult(await load_booking(uow.session, Booking.id == result), True, user)
    return result


def _ready(
    data: BookingCreate, order: inventory.PricedOrder, row: asyncpg.Record, user: User
) -> tuple[BookingRead, inventory.Prepared]:
    """The booking as it will be answered, and what its call writes (its ids, reference,
    time and messages), made before any lock is taken."""
    view = _confirmed_view(
        data,
        order,
        booking_id=row["booking_id"],
        reference=uuid.uuid4(),
        at=datetime.now(UTC),
        items=list(zip(row["item_ids"], order.ids, strict=True)),
    )
    booking = BookingRead.model_validate(view, from_attributes=True)
    topic, webhook, emails = messages.booking_confirmed_payloads(
        booking,
        Recipient(email=user.email, username=user.username),
        EventDetails(start=order.event_start, end=order.event_end, location=order.location),
    )
    prepared = inventory.Prepared(
        booking_id=view.id,
        item_ids=row["item_ids"],
        reference=view.booking_reference,
        at=view.created_at,
        webhook_topic=topic,
        webhook=webhook,
        emails=emails,
    )
    return booking, prepared


def _order_as_read(data: BookingCreate, row: asyncpg.Record) -> inventory.PricedOrder:
    """The order as the lock-free read saw it (``book_tickets_many()`` checks it again under
    the locks)."""
    return inventory.priced(
        data.event_id,
        row,
        {item.ticket_type_id: item.quantity for item in data.items},
        names=dict(zip(row["own_ids"], row["names"], strict=True)),
        unit_prices=dict(zip(row["own_ids"], row["prices"], strict=True)),
        room=row["room"],
        types_emptied=False,  # not known without the locks
    )


async def _book_in_transaction(
    conn: asyncpg.Connection,
    user: User,
    data: BookingCreate,
    settings: Settings,
    idempotency_key: str | None,
) -> BookingResult | int:
    """The general booking transaction, for whatever is not the common case. The id of
    the booking the Idempotency-Key was used for, when the request is a retry."""
    aftermath = Aftermath()
    replay: int | None = None
    async with conn.transaction():
        if idempotency_key is not None:
            replay = await claim_idempotency_key(
                conn, user.id, "bookings", idempotency_key, request_fingerprint(data)
            )
        if replay is None:
            order = await inventory.lock_and_check(
                conn,
                data.event_id,
                lines_of(data),
                offer_ttl=settings.waitlist_offer_ttl_seconds,
                aftermath=aftermath,
            )
            written = await inventory.confirm_booking(
                conn, order, user_id=user.id, idempotency_key=idempotency_key
            )
            first = written[0]
            booking = _confirmed_view(
                data,
                order,
                booking_id=first["id"],
                reference=first["booking_reference"],
                at=first["created_at"],
                items=[(line["item_id"], line["ticket_type_id"]) for line in written],
            )
            # In the booking's transaction: the email and webhooks exist exactly
            # when the booking does (a replay or a refusal records nothing).
            await messages.record_booking_confirmed(
                conn,
                BookingRead.model_validate(booking, from_attributes=True),
                Recipient(email=user.email, username=user.username),
                EventDetails(start=order.event_start, end=order.event_end, location=order.location),
            )
    if replay is not None:
        return replay
    return BookingResult(booking, user=user, aftermath=aftermath)


def _confirmed_view(
    data: BookingCreate,
    order: inventory.PricedOrder,
    *,
    booking_id: int,
    reference: uuid.UUID,
    at: datetime,
    items: Sequence[tuple[int, int]],
) -> BookingView:
    """A booking just confirmed: its ``items`` (item id, ticket type id) at the order's
    prices."""
    return BookingView(
        id=booking_id,
        booking_reference=reference,
        event_id=data.event_id,
        event_name=order.event_name,
        status="confirmed",
        items=[
            {
                "id": item_id,
                "ticket_type_id": type_id,
                "ticket_type_name": order.names[type_id],
                "quantity": order.wanted[type_id],
                "price_at_booking": order.unit_prices[type_id],
            }
            for item_id, type_id in items
        ],
        total_price=order.total_price,
        created_at=at,
        updated_at=at,
        cancelled_at=None,
        payment_reference=None,
    )


# ---------------------------------------------------------------- cancelling


async def cancel_booking(
    uow: UnitOfWork,
    user: User,
    reference: uuid.UUID,
    *,
    settings: Settings,
    aftermath: Aftermath | None = None,
) -> BookingView:
    """Cancel one's own confirmed booking and release its tickets, exactly once (to the
    waiting list first: the offers made go into ``aftermath``, to email after commit)."""
    async with uow:
        booking = await load_booking(
            uow.session, Booking.booking_reference == reference, Booking.user_id == user.id
        )
        conn = await raw_connection(uow.session)
        changed = await inventory.cancel_booking(
            conn,
            booking.id,
            booking.event_id,
            offer_ttl=settings.waitlist_offer_ttl_seconds,
            aftermath=aftermath if aftermath is not None else Aftermath(),
        )
        booking.status = "cancelled"
        booking.cancelled_at = changed["cancelled_at"]
        booking.updated_at = changed["updated_at"]
        await messages.record_booking_cancelled(
            conn,
            BookingRead.model_validate(booking, from_attributes=True),
            Recipient(email=user.email, username=user.username),
            await messages.event_details(conn, booking.event_id),
        )
    return booking


async def event_has_confirmed_bookings(session: AsyncSession, event_id: int) -> bool:
    return bool(
        await session.scalar(
            select(
                select(Booking.id)
                .where(Booking.event_id == event_id, Booking.status == "confirmed")
                .exists()
            )
        )
    )


# ---------------------------------------------------------------- reading


def _booking_columns() -> Sequence[Any]:
    return (
        Booking.id,
        Booking.booking_reference,
        Booking.event_id,
        Event.name.label("event_name"),
        Booking.status,
        Booking.total_price,
        Booking.created_at,
        Booking.updated_at,
        Booking.cancelled_at,
        Booking.payment_reference,
        Booking.user_id,
        User.username,
    )


async def _with_items(session: AsyncSession, rows: Sequence[Any]) -> list[BookingView]:
    """Attach items to booking rows with one query, whatever the number of bookings."""
    items = await repository.read_items(
        session,
        BookingItem.booking_id,
        [r.id for r in rows],
        BookingItem.id,
        BookingItem.ticket_type_id,
        repository.TICKET_TYPE_NAME,
        BookingItem.quantity,
        BookingItem.price_at_booking,
        order_by=BookingItem.id,
    )
    views = []
    for row in rows:
        fields = dict(row._mapping)
        user = {"id": fields.pop("user_id"), "username": fields.pop("username")}
        views.append(BookingView(**fields, items=items[row.id], user=user))
    return views


def _booking_query() -> Any:
    return (
        select(*_booking_columns())
        .join(Event, Event.id == Booking.event_id)
        .join(User, User.id == Booking.user_id)
    )


async def load_booking(session: AsyncSession, *where: ColumnElement[bool]) -> BookingView:
    """The booking that matches ``where`` (NotFound if none does)."""
    row = (await session.execute(_booking_query().where(*where))).first()
    if row is None:
        raise NotFound("No booking with this reference.")
    return (await _with_items(session, [row]))[0]


async def get_booking(uow: UnitOfWork, user: User, reference: uuid.UUID) -> BookingView:
    """One's own booking; someone else's is reported as not found."""
    async with uow:
        return await load_booking(
            uow.session, Booking.booking_reference == reference, Booking.user_id == user.id
        )


async def list_bookings(
    uow: UnitOfWork,
    *,
    offset: int,
    limit: int,
    user_id: int | None = None,
    event_id: int | None = None,
    filters: BookingFilters | None = None,
) -> tuple[int, list[BookingView]]:
    """Bookings newest first, in three queries whatever the page size."""
    conditions = []
    if user_id is not None:
        conditions.append(Booking.user_id == user_id)
    if event_id is not None:
        conditions.append(Booking.event_id == event_id)
    if filters is not None:
        if filters.status is not None:
            conditions.append(Booking.status == filters.status)
        if filters.event is not None:
            conditions.append(Booking.event_id == filters.event)
        if filters.created_at__gte is not None:
            conditions.append(Booking.created_at >= filters.created_at__gte)
        if filters.created_at__lte is not None:
            conditions.append(Booking.created_at <= filters.created_at__lte)
    async with uow:
        count, rows = await count_and_page(
            uow.session,
            Booking,
            _booking_query(),
            conditions,
            order_by=(Booking.created_at.desc(), Booking.id.desc()),
            offset=offset,
            limit=limit,
        )
        return count, await _with_items(uow.session, rows)


async def purge_expired_idempotency_keys(session: AsyncSession, ttl_hours: int) -> int:
    result = await session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => :h)"),
        {"h": ttl_hours},
    )
    return result.rowcount or 0


async def check_event_organizer(uow: UnitOfWork, user: User, event_id: int) -> None:
    """Only the event's organizer reads its bookings (404 for an unknown event)."""
    async with uow:
        organizer_id = await uow.session.scalar(
            select(Event.organizer_id).where(Event.id == event_id)
        )
    if organizer_id is None:
        raise NotFound("No event with this id.")
    if organizer_id != user.id:
        raise PermissionDenied("Only the event's organizer can see its bookings.")


async def list_event_bookings(
    uow: UnitOfWork,
    user: User,
    event_id: int,
    filters: BookingFilters,
    *,
    offset: int,
    limit: int,
) -> tuple[int, list[BookingView]]:
    """The bookings of an event, for its organizer only."""
    await check_event_organizer(uow, user, event_id)
    return await list_bookings(uow, offset=offset, limit=limit, event_id=event_id, filters=filters)
