"""The booking rules and their transactions.

Lock order, everywhere: the event row, then booking rows, then ticket-type rows
by ascending id. Every transaction that takes more than one of these locks takes
them in this order, so two of them can never wait on each other (no deadlock).
Lock waits are bounded by the connection's ``lock_timeout`` (LOCK_TIMEOUT_MS):
a request that cannot get its locks in time fails as 503 ``busy``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.deps import check_role, check_token_user
from app.auth.models import Role, User
from app.bookings.models import Booking, BookingItem
from app.bookings.schemas import BookingCreate, BookingFilters
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.db_errors import sqlstate
from app.core.errors import (
    AlreadyCancelled,
    CapacityExceeded,
    EventNotBookable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
    SoldOut,
    TicketTypeInactive,
    ValidationFailed,
)
from app.core.security import TokenClaims
from app.events.models import Event, TicketType


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
    id: int = 0
    user: dict[str, Any] | None = None


@dataclass(slots=True)
class BookingResult:
    booking: BookingView
    replayed: bool = False
    user: User | None = None


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


# The booking's statements go straight to asyncpg (``UnitOfWork.driver``): they are
# prepared once per connection and run without SQLAlchemy's execution layer, which
# was a fifth of the CPU of a booking. Parameters are positional ($n).

# Lock-free, before the transaction: the caller's account (the access token was only
# verified, not looked up) and whether the event exists and owns the ticket types.
# ``own_ids`` is NULL when there is no such event.
_ACCOUNT_EVENT_AND_TYPES = """
    SELECT u.id, u.username, u.email, u.role, u.is_active, u.password_changed_at,
           (SELECT ARRAY(SELECT t.id FROM ticket_types t
                         WHERE t.event_id = e.id AND t.id = ANY($3::bigint[]))
            FROM events e WHERE e.id = $2) AS own_ids
    FROM users u WHERE u.id = $1
"""

# The locks, in one statement and in the global order: the event row (outer side of
# the nested loop, which LATERAL forces), then its ticket types sorted by id.
_LOCK_EVENT_AND_TYPES = """
    SELECT e.name, e.start_time, e.cancelled_at, e.total_capacity, e.tickets_sold,
           t.id, t.name AS type_name, t.price, t.quantity_available, t.is_active
    FROM (SELECT id, name, start_time, cancelled_at, total_capacity, tickets_sold
          FROM events WHERE id = $1 FOR UPDATE) e
    CROSS JOIN LATERAL (
        SELECT id, name, price, quantity_available, is_active FROM ticket_types
        WHERE event_id = e.id AND id = ANY($2::bigint[]) ORDER BY id FOR UPDATE
    ) t
"""

_LOCK_EVENT = text(
    "SELECT name, start_time, cancelled_at, total_capacity, tickets_sold "
    "FROM events WHERE id = :event_id FOR UPDATE"
)

# One round trip writes everything: counters moved in SQL (guarded by CHECKs),
# the booking and its items inserted, the idempotency key pointed at the booking.
_WRITE_BOOKING = """
    WITH lines AS (
        SELECT * FROM unnest($1::bigint[], $2::int[], $3::numeric[])
                 AS l(ticket_type_id, quantity, price)
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available - l.quantity,
            quantity_sold = t.quantity_sold + l.quantity,
            updated_at = now()
        FROM lines l WHERE t.id = l.ticket_type_id
        RETURNING t.id
    ), ev AS (
        UPDATE events SET tickets_sold = tickets_sold + $4, updated_at = now()
        WHERE id = $5 RETURNING id
    ), b AS (
        INSERT INTO bookings (user_id, event_id, status, total_price)
        VALUES ($6, $5, 'confirmed', $7)
        RETURNING id, booking_reference, created_at, updated_at
    ), items AS (
        INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_at_booking)
        SELECT b.id, l.ticket_type_id, l.quantity, l.price FROM b, lines l
        RETURNING id, ticket_type_id
    ), idem AS (
        UPDATE idempotency_keys SET booking_id = (SELECT id FROM b)
        WHERE user_id = $6 AND key = $8
    )
    SELECT b.id, b.booking_reference, b.created_at, b.updated_at, items.id AS item_id,
           items.ticket_type_id
    FROM b, items
    ORDER BY items.id
"""

_CLAIM_KEY = """
    INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING key
"""

_HELD_KEY = "SELECT request_hash, booking_id FROM idempotency_keys WHERE user_id = $1 AND key = $2"


async def _claim_idempotency_key(
    conn: asyncpg.Connection, user_id: int, key: str, fingerprint: str
) -> int | None:
    """Claim the key for this request, or return the booking of the request that holds it.

    Two requests with one key serialise on the key's row: the second waits for the
    first to commit (then replays its booking) or roll back (then claims the key).
    """
    try:
        claimed = await conn.fetchval(_CLAIM_KEY, user_id, key, fingerprint)
    except asyncpg.PostgresError as exc:
        if sqlstate(exc) == "55P03":  # still held by a request in flight
            raise IdempotencyKeyInUse() from exc
        raise
    if claimed is not None:
        return None
    row = await conn.fetchrow(_HELD_KEY, user_id, key)
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyReused()
    if row["booking_id"] is None:
        raise IdempotencyKeyInUse()
    return row["booking_id"]


async def book_tickets(
    uow: UnitOfWork,
    claims: TokenClaims,
    data: BookingCreate,
    *,
    settings: Settings,
    idempotency_key: str | None = None,
) -> BookingResult:
    """Book tickets for one event, whole or not at all, for the attendee of ``claims``.

    Round trips on one pooled connection: the lock-free read of the account and the
    event, then BEGIN, (the idempotency key), the locks, the write, COMMIT.
    """
    ids = sorted(item.ticket_type_id for item in data.items)
    async with uow.driver() as conn:
        row = await conn.fetchrow(_ACCOUNT_EVENT_AND_TYPES, claims.user_id, data.event_id, ids)
        account = None
        if row is not None:
            account = User(
                id=row["id"],
                username=row["username"],
                email=row["email"],
                role=row["role"],
                is_active=row["is_active"],
                password_changed_at=row["password_changed_at"],
            )
        user = check_role(check_token_user(account, claims, settings), Role.attendee)
        _check_shape(data, settings.max_tickets_per_booking)
        own_ids = row["own_ids"]
        if own_ids is None:
            raise NotFound("No event with this id.")
        _check_owned(data, set(own_ids))

        replay: int | None = None
        async with conn.transaction():
            if idempotency_key is not None:
                replay = await _claim_idempotency_key(
                    conn, user.id, idempotency_key, request_fingerprint(data)
                )
            if replay is None:
                locked = await conn.fetch(_LOCK_EVENT_AND_TYPES, data.event_id, ids)
                booking = _check_and_price(data, ids, locked)
                written = await conn.fetch(
                    _WRITE_BOOKING,
                    ids,
                    [booking.wanted[i] for i in ids],
                    [booking.unit_prices[i] for i in ids],
                    booking.total,
                    data.event_id,
                    user.id,
                    booking.total_price,
                    idempotency_key,
                )
    if replay is not None:
        async with uow:
            return BookingResult(await _load_booking(uow.session, booking_id=replay), True, user)
    first = written[0]
    return BookingResult(
        BookingView(
            id=first["id"],
            booking_reference=first["booking_reference"],
            event_id=data.event_id,
            event_name=booking.event_name,
            status="confirmed",
            items=[
                {
                    "id": line["item_id"],
                    "ticket_type_id": line["ticket_type_id"],
                    "ticket_type_name": booking.names[line["ticket_type_id"]],
                    "quantity": booking.wanted[line["ticket_type_id"]],
                    "price_at_booking": booking.unit_prices[line["ticket_type_id"]],
                }
                for line in written
            ],
            total_price=booking.total_price,
            created_at=first["created_at"],
            updated_at=first["updated_at"],
            cancelled_at=None,
        ),
        user=user,
    )


def _check_owned(data: BookingCreate, owned: Collection[int]) -> None:
    for index, item in enumerate(data.items):
        if item.ticket_type_id not in owned:
            raise ValidationFailed(
                "This ticket type does not belong to the event.",
                field=f"body.items.{index}.ticket_type_id",
            )


@dataclass(slots=True)
class _PricedBooking:
    event_name: str
    wanted: dict[int, int]
    names: dict[int, str]
    unit_prices: dict[int, Decimal]
    total: int
    total_price: Decimal


def _check_and_price(
    data: BookingCreate, ids: list[int], locked: Sequence[asyncpg.Record]
) -> _PricedBooking:
    """The checks made under the locks: the event is bookable, every ticket type is on
    sale with enough left, the event's capacity holds. Then the prices."""
    if not locked:  # deleted since the lock-free read
        raise NotFound("No event with this id.")
    event = locked[0]
    types = {r["id"]: r for r in locked}
    _check_owned(data, types.keys())  # a type deleted since the lock-free read
    if event["cancelled_at"] is not None or event["start_time"] <= datetime.now(UTC):
        raise EventNotBookable()
    wanted = {item.ticket_type_id: item.quantity for item in data.items}
    for type_id in ids:
        if not types[type_id]["is_active"]:
            raise TicketTypeInactive(f"{types[type_id]['type_name']} is not on sale.")
    for type_id in ids:
        left = types[type_id]["quantity_available"]
        if left < wanted[type_id]:
            raise SoldOut(
                f"Not enough tickets left for {types[type_id]['type_name']} "
                f"({left} left, {wanted[type_id]} asked)."
            )
    total = sum(wanted.values())
    if event["tickets_sold"] + total > event["total_capacity"]:
        left = event["total_capacity"] - event["tickets_sold"]
        raise CapacityExceeded(f"The event has {left} tickets left in total, {total} asked.")
    unit_prices = {i: types[i]["price"] for i in ids}
    return _PricedBooking(
        event_name=event["name"],
        wanted=wanted,
        names={i: types[i]["type_name"] for i in ids},
        unit_prices=unit_prices,
        total=total,
        total_price=sum((unit_prices[i] * wanted[i] for i in ids), start=Decimal("0.00")),
    )


# ---------------------------------------------------------------- cancelling

_RELEASE_ITEMS = text(
    """
    WITH released AS (
        SELECT ticket_type_id, sum(quantity)::int AS quantity
        FROM booking_items WHERE booking_id = ANY(CAST(:booking_ids AS bigint[]))
        GROUP BY ticket_type_id
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available + r.quantity,
            quantity_sold = t.quantity_sold - r.quantity,
            updated_at = now()
        FROM released r WHERE t.id = r.ticket_type_id
        RETURNING r.quantity
    )
    UPDATE events SET tickets_sold = tickets_sold - (SELECT coalesce(sum(quantity), 0) FROM tt),
                      updated_at = now()
    WHERE id = :event_id
    """
)

_LOCK_TYPES_OF_BOOKINGS = text(
    """
    SELECT id FROM ticket_types
    WHERE id IN (SELECT ticket_type_id FROM booking_items
                 WHERE booking_id = ANY(CAST(:booking_ids AS bigint[])))
    ORDER BY id FOR UPDATE
    """
)


async def _release_tickets(session: AsyncSession, event_id: int, booking_ids: list[int]) -> None:
    """Give the tickets of these (just cancelled) bookings back; caller holds the event lock."""
    await session.execute(_LOCK_TYPES_OF_BOOKINGS, {"booking_ids": booking_ids})
    await session.execute(_RELEASE_ITEMS, {"booking_ids": booking_ids, "event_id": event_id})


async def cancel_booking(uow: UnitOfWork, user: User, reference: uuid.UUID) -> BookingView:
    """Cancel one's own confirmed booking and release its tickets, exactly once."""
    async with uow:
        session = uow.session
        booking = await _load_booking(session, reference=reference, user_id=user.id)
        # Event row first (the global lock order), then the booking row, whose status
        # is checked only under its lock: two concurrent cancels cannot both pass.
        event = (await session.execute(_LOCK_EVENT, {"event_id": booking.event_id})).one()
        status = await session.scalar(
            select(Booking.status).where(Booking.id == booking.id).with_for_update()
        )
        if status != "confirmed":
            raise AlreadyCancelled()
        if event.start_time <= datetime.now(UTC):
            raise EventNotBookable("The event has started; the booking can no longer be cancelled.")
        changed = (
            await session.execute(
                update(Booking)
                .where(Booking.id == booking.id)
                .values(status="cancelled", cancelled_at=func.now(), updated_at=func.now())
                .returning(Booking.cancelled_at, Booking.updated_at)
            )
        ).one()
        await _release_tickets(session, booking.event_id, [booking.id])
    booking.status = "cancelled"
    booking.cancelled_at = changed.cancelled_at
    booking.updated_at = changed.updated_at
    return booking


async def cancel_event_bookings(session: AsyncSession, event_id: int) -> list[int]:
    """Cancel every confirmed booking of an event and release their tickets.

    The caller holds the event row's lock, so no booking of this event can land or
    be cancelled concurrently. Returns the ids of the bookings cancelled (for the
    notification emails sent after commit).
    """
    cancelled = list(
        (
            await session.execute(
                update(Booking)
                .where(Booking.event_id == event_id, Booking.status == "confirmed")
                .values(status="cancelled", cancelled_at=func.now(), updated_at=func.now())
                .returning(Booking.id)
            )
        ).scalars()
    )
    if cancelled:
        await _release_tickets(session, event_id, cancelled)
    return cancelled


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
        Booking.user_id,
        User.username,
    )


async def _with_items(session: AsyncSession, rows: Sequence[Any]) -> list[BookingView]:
    """Attach items to booking rows with one query, whatever the number of bookings."""
    ids = [r.id for r in rows]
    items: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        result = await session.execute(
            select(
                BookingItem.booking_id,
                BookingItem.id,
                BookingItem.ticket_type_id,
                TicketType.name,
                BookingItem.quantity,
                BookingItem.price_at_booking,
            )
            .join(TicketType, TicketType.id == BookingItem.ticket_type_id)
            .where(BookingItem.booking_id.in_(ids))
            .order_by(BookingItem.id)
        )
        for it in result:
            items[it.booking_id].append(
                {
                    "id": it.id,
                    "ticket_type_id": it.ticket_type_id,
                    "ticket_type_name": it.name,
                    "quantity": it.quantity,
                    "price_at_booking": it.price_at_booking,
                }
            )
    return [
        BookingView(
            id=r.id,
            booking_reference=r.booking_reference,
            event_id=r.event_id,
            event_name=r.event_name,
            status=r.status,
            items=items[r.id],
            total_price=r.total_price,
            created_at=r.created_at,
            updated_at=r.updated_at,
            cancelled_at=r.cancelled_at,
            user={"id": r.user_id, "username": r.username},
        )
        for r in rows
    ]


async def _load_booking(
    session: AsyncSession,
    *,
    booking_id: int | None = None,
    reference: uuid.UUID | None = None,
    user_id: int | None = None,
) -> BookingView:
    query = (
        select(*_booking_columns())
        .join(Event, Event.id == Booking.event_id)
        .join(User, User.id == Booking.user_id)
    )
    if booking_id is not None:
        query = query.where(Booking.id == booking_id)
    if reference is not None:
        query = query.where(Booking.booking_reference == reference)
    if user_id is not None:
        query = query.where(Booking.user_id == user_id)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("No booking with this reference.")
    return (await _with_items(session, [row]))[0]


async def get_booking(uow: UnitOfWork, user: User, reference: uuid.UUID) -> BookingView:
    """One's own booking; someone else's is reported as not found."""
    async with uow:
        return await _load_booking(uow.session, reference=reference, user_id=user.id)


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
        session = uow.session
        count = await session.scalar(select(func.count()).select_from(Booking).where(*conditions))
        rows = (
            await session.execute(
                select(*_booking_columns())
                .join(Event, Event.id == Booking.event_id)
                .join(User, User.id == Booking.user_id)
                .where(*conditions)
                .order_by(Booking.created_at.desc(), Booking.id.desc())
                .offset(offset)
                .limit(limit)
            )
        ).all()
        return count or 0, await _with_items(session, rows)


async def purge_expired_idempotency_keys(session: AsyncSession, ttl_hours: int) -> int:
    result = await session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => :h)"),
        {"h": ttl_hours},
    )
    return result.rowcount or 0


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
    async with uow:
        organizer_id = await uow.session.scalar(
            select(Event.organizer_id).where(Event.id == event_id)
        )
    if organizer_id is None:
        raise NotFound("No event with this id.")
    if organizer_id != user.id:
        raise PermissionDenied("Only the event's organizer can see its bookings.")
    return await list_bookings(uow, offset=offset, limit=limit, event_id=event_id, filters=filters)
