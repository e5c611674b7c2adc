"""The one owner of taking tickets off sale and giving them back.

Lock order, everywhere: the event row, then booking (and hold) rows, then ticket-type
rows by ascending id. Every transaction that takes more than one of these locks
takes them in this order, so two of them can never wait on each other (no deadlock);
and since each of them takes the event row first, the event's lock alone decides who
changes its counters next. Lock waits are bounded by the connection's
``lock_timeout`` (LOCK_TIMEOUT_MS): past it the request fails as 503 ``busy``.

The checks under the locks (``event_not_bookable``, ``ticket_type_inactive``,
``sold_out``, ``capacity_exceeded``) and every counter move live here; bookings,
cancels and event changes call these functions inside their own transaction, on
its asyncpg connection.

Where something happens that others may want to hear of (a booking confirmed or
cancelled), it happens in one named function: ``confirm_booking``,
``cancel_bookings``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from app.core.db import compile_statement
from app.core.errors import (
    AlreadyCancelled,
    CapacityExceeded,
    EventNotBookable,
    NotFound,
    SoldOut,
    TicketTypeInactive,
    ValidationFailed,
)
from app.inventory import repository as sql


@dataclass(frozen=True, slots=True)
class Line:
    """One ticket type and how many of it."""

    ticket_type_id: int
    quantity: int


@dataclass(slots=True)
class PricedOrder:
    """What the checks under the locks found: names and prices of an order's lines."""

    event_id: int
    event_name: str
    event_start: datetime
    ids: list[int]  # ascending
    wanted: dict[int, int]
    names: dict[int, str]
    unit_prices: dict[int, Decimal]
    total: int
    total_price: Decimal


def check_owned(lines: Sequence[Line], owned: Collection[int]) -> None:
    """422 for a ticket type that is not the event's (``items.<i>.ticket_type_id``)."""
    for index, line in enumerate(lines):
        if line.ticket_type_id not in owned:
            raise ValidationFailed(
                "This ticket type does not belong to the event.",
                field=f"body.items.{index}.ticket_type_id",
            )


async def read_account_event_and_types(
    conn: asyncpg.Connection, user_id: int, event_id: int, ids: list[int]
) -> asyncpg.Record | None:
    """Lock-free: the caller's account and which of ``ids`` the event owns (``own_ids``)."""
    return await compile_statement(sql.ACCOUNT_EVENT_AND_TYPES).fetchrow(
        conn, user_id=user_id, event_id=event_id, ids=ids
    )


async def lock_and_check(
    conn: asyncpg.Connection, event_id: int, lines: Sequence[Line]
) -> PricedOrder:
    """Lock the event row and the lines' ticket types (in that order) and check that
    the order can be taken: the event is bookable, every type is on sale with enough
    left, the event's capacity holds. Then price it. Raises before anything is written."""
    ids = sorted(line.ticket_type_id for line in lines)
    locked = await compile_statement(sql.LOCK_EVENT_AND_TYPES).fetch(
        conn, event_id=event_id, ids=ids
    )
    return _check_and_price(event_id, lines, ids, locked)


def _check_and_price(
    event_id: int, lines: Sequence[Line], ids: list[int], locked: Sequence[asyncpg.Record]
) -> PricedOrder:
    if not locked:  # deleted since the lock-free read
        raise NotFound("No event with this id.")
    event = locked[0]
    types = {r["id"]: r for r in locked}
    check_owned(lines, types.keys())  # a type deleted since the lock-free read
    if event["cancelled_at"] is not None or event["start_time"] <= datetime.now(UTC):
        raise EventNotBookable()
    wanted = {line.ticket_type_id: line.quantity for line in lines}
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
    return PricedOrder(
        event_id=event_id,
        event_name=event["name"],
        event_start=event["start_time"],
        ids=ids,
        wanted=wanted,
        names={i: types[i]["type_name"] for i in ids},
        unit_prices=unit_prices,
        total=total,
        total_price=sum((unit_prices[i] * wanted[i] for i in ids), start=Decimal("0.00")),
    )


async def confirm_booking(
    conn: asyncpg.Connection,
    order: PricedOrder,
    *,
    user_id: int,
    idempotency_key: str | None,
) -> list[asyncpg.Record]:
    """A booking is confirmed: its tickets move from on sale to sold, the booking and its
    items are written, the idempotency key points at it. One round trip; the caller
    holds the locks of ``lock_and_check``. Rows: one per item (booking columns repeated).
    """
    return await compile_statement(sql.CONFIRM_BOOKING).fetch(
        conn,
        ids=order.ids,
        quantities=[order.wanted[i] for i in order.ids],
        prices=[order.unit_prices[i] for i in order.ids],
        total=order.total,
        event_id=order.event_id,
        user_id=user_id,
        total_price=order.total_price,
        idempotency_key=idempotency_key,
    )


async def lock_event(conn: asyncpg.Connection, event_id: int) -> asyncpg.Record:
    """The event row, locked (first in the global order); 404 when it is gone."""
    event = await compile_statement(sql.LOCK_EVENT).fetchrow(conn, event_id=event_id)
    if event is None:
        raise NotFound("No event with this id.")
    return event


async def cancel_booking(
    conn: asyncpg.Connection, booking_id: int, event_id: int
) -> asyncpg.Record:
    """Cancel one confirmed booking of an event that has not started; release its
    tickets, exactly once. Returns the booking's new ``cancelled_at``/``updated_at``.

    The event row is locked first (the global lock order), then the booking row,
    whose status is checked only under its lock: of two concurrent cancels, one
    releases the tickets and the other is ``already_cancelled``.
    """
    event = await lock_event(conn, event_id)
    status = await compile_statement(sql.LOCK_BOOKING).fetchval(conn, booking_id=booking_id)
    if status != "confirmed":
        raise AlreadyCancelled()
    if event["start_time"] <= datetime.now(UTC):
        raise EventNotBookable("The event has started; the booking can no longer be cancelled.")
    cancelled = await cancel_bookings(conn, event_id, [booking_id])
    return cancelled[0]


async def cancel_bookings(
    conn: asyncpg.Connection, event_id: int, booking_ids: list[int]
) -> list[asyncpg.Record]:
    """Bookings are cancelled: the still confirmed ones among ``booking_ids`` leave
    `confirmed` and their tickets go back on sale. The caller holds the event's lock.
    Rows: ``id, cancelled_at, updated_at`` of each booking cancelled."""
    cancelled = await compile_statement(sql.CANCEL_BOOKINGS).fetch(conn, booking_ids=booking_ids)
    await _release_sold(conn, event_id, [r["id"] for r in cancelled])
    return cancelled


async def cancel_event(conn: asyncpg.Connection, event_id: int) -> list[int]:
    """An event is cancelled: every confirmed booking of it is cancelled and its tickets
    released, in the caller's transaction, under the event lock the caller holds.
    Returns the ids of the bookings cancelled (for the emails sent after commit)."""
    rows = await compile_statement(sql.CANCEL_EVENT_BOOKINGS).fetch(conn, event_id=event_id)
    ids = [r["id"] for r in rows]
    await _release_sold(conn, event_id, ids)
    return ids


async def _release_sold(conn: asyncpg.Connection, event_id: int, booking_ids: list[int]) -> None:
    if not booking_ids:
        return
    await compile_statement(sql.LOCK_TYPES_OF_BOOKINGS).execute(conn, booking_ids=booking_ids)
    await compile_statement(sql.RELEASE_SOLD).execute(
        conn, booking_ids=booking_ids, event_id=event_id
    )
