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

Holds take tickets from on sale to held (``quantity_held``, ``tickets_held``) and end
exactly one way: ``checkout_hold`` moves them to sold, ``release_hold`` and
``expire_holds`` put them back on sale. Tickets that come back go to the waiting list
first (``offer_to_waitlist``), in the same transaction.

Where something happens that others may want to hear of, it happens in one named
function: ``confirm_booking``, ``cancel_bookings``, ``expire_holds``, ``make_offer``,
``event_sold_out``.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import UnitOfWork, compile_statement
from app.core.errors import (
    AlreadyCancelled,
    CapacityExceeded,
    EventNotBookable,
    HoldExists,
    HoldExpired,
    HoldNotActive,
    IdempotencyKeyInUse,
    NotFound,
    SoldOut,
    TicketsAvailable,
    TicketTypeInactive,
    ValidationFailed,
)
from app.core.together import Together
from app.inventory import repository as sql
from app.inventory.offer import Offer


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
    event_end: datetime | None
    location: str
    ids: list[int]  # ascending
    wanted: dict[int, int]
    names: dict[int, str]
    unit_prices: dict[int, Decimal]
    total: int
    total_price: Decimal
    room_after: int  # the event's capacity left once the order is taken
    types_emptied: bool  # the order takes the last tickets of one of its types


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


async def read_account_and_order(
    conn: asyncpg.Connection, user_id: int, event_id: int, ids: list[int], *, lines: int
) -> asyncpg.Record | None:
    """Lock-free: what ``read_account_event_and_types`` reads, and the order as it reads
    now (``ACCOUNT_AND_ORDER``), with ids for a booking of ``lines`` items."""
    return await compile_statement(sql.ACCOUNT_AND_ORDER).fetchrow(
        conn, user_id=user_id, event_id=event_id, ids=ids, lines=lines
    )


@dataclass(slots=True)
class Aftermath:
    """What a transaction of the inventory did that is told to people after its commit."""

    offers: list[Offer] = field(default_factory=list)


async def lock_and_check(
    conn: asyncpg.Connection,
    event_id: int,
    lines: Sequence[Line],
    *,
    offer_ttl: int,
    aftermath: Aftermath,
    holder_id: int | None = None,
) -> PricedOrder:
    """Lock the event row and the lines' ticket types (in that order) and check that
    the order can be taken: the event is bookable, every type is on sale with enough
    left, the event's capacity holds. Then price it. Raises before anything is written.

    An order refused for lack of tickets first releases the event's expired holds
    (under the event lock it already holds; their tickets go to the waiting list
    first) and is checked again: expired holds never cause ``sold_out``. With
    ``holder_id`` (a hold being placed), a refused order is ``hold_exists`` first when
    that attendee holds tickets of the event; whether they hold some already is
    otherwise told by the hold's write (``place_hold``), not by a statement here.
    """
    ids = sorted(line.ticket_type_id for line in lines)
    lock = compile_statement(sql.LOCK_EVENT_AND_TYPES)
    locked = await lock.fetch(conn, event_id=event_id, ids=ids)
    try:
        return _check_and_price(event_id, lines, ids, locked)
    except NotFound:
        raise
    except (SoldOut, CapacityExceeded):
        # Their own expired hold, then any expired hold, gives tickets back.
        freed = holder_id is not None and await _end_own_expired_hold(
            conn, holder_id, event_id, offer_ttl, aftermath
        )
        if not freed and not await _expire_and_offer(conn, event_id, offer_ttl, aftermath):
            raise
    except (ValidationFailed, EventNotBookable, TicketTypeInactive):
        if holder_id is not None:  # hold_exists answers first, as for every refusal
            await _end_own_expired_hold(conn, holder_id, event_id, offer_ttl, aftermath)
        raise
    locked = await lock.fetch(conn, event_id=event_id, ids=ids)
    return _check_and_price(event_id, lines, ids, locked)


async def _end_own_expired_hold(
    conn: asyncpg.Connection, user_id: int, event_id: int, offer_ttl: int, aftermath: Aftermath
) -> bool:
    """``hold_exists`` when the attendee has a live hold on the event. When theirs has
    expired without being released yet, the event's expired holds end now (their
    tickets to the waiting list first) and this returns True; False when they hold
    nothing. Under the event lock the caller holds, in a statement of its own: a
    statement's snapshot is taken before it waits for a lock, so the locking statement
    could miss a hold committed while it waited."""
    if not await _holds_already(conn, user_id, event_id):
        return False
    await _expire_and_offer(conn, event_id, offer_ttl, aftermath)
    await _holds_already(conn, user_id, event_id)  # an offer made to them just now?
    return True


async def _holds_already(conn: asyncpg.Connection, user_id: int, event_id: int) -> bool:
    """``hold_exists`` when the attendee has a live hold on the event; whether they have
    one that expired without being released yet."""
    current = await compile_statement(sql.ACTIVE_HOLD_OF_USER).fetchrow(
        conn, user_id=user_id, event_id=event_id
    )
    if current is not None and not current["expired"]:
        raise HoldExists()
    return current is not None


def _check_and_price(
    event_id: int, lines: Sequence[Line], ids: list[int], locked: Sequence[asyncpg.Record]
) -> PricedOrder:
    if not locked:  # deleted since the lock-free read
        raise NotFound("No event with this id.")
    event = locked[0]
    types = {r["id"]: r for r in locked if r["id"] is not None}
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
    taken = event["tickets_sold"] + event["tickets_held"]
    if taken + total > event["total_capacity"]:
        left = event["total_capacity"] - taken
        raise CapacityExceeded(f"The event has {left} tickets left in total, {total} asked.")
    return priced(
        event_id,
        event,
        wanted,
        names={i: types[i]["type_name"] for i in ids},
        unit_prices={i: types[i]["price"] for i in ids},
        room=event["total_capacity"] - taken,
        types_emptied=any(types[i]["quantity_available"] == wanted[i] for i in ids),
    )


def priced(
    event_id: int,
    event: Mapping[str, Any],
    wanted: dict[int, int],
    *,
    names: dict[int, str],
    unit_prices: dict[int, Decimal],
    room: int,
    types_emptied: bool,
) -> PricedOrder:
    """The order of ``wanted`` (type id: quantity) on ``event`` (its ``name``,
    ``start_time``, ``end_time``, ``location``), which has ``room`` seats left."""
    ids = sorted(wanted)
    total = sum(wanted.values())
    return PricedOrder(
        event_id=event_id,
        event_name=event["name"],
        event_start=event["start_time"],
        event_end=event["end_time"],
        location=event["location"],
        ids=ids,
        wanted=wanted,
        names=names,
        unit_prices=unit_prices,
        total=total,
        total_price=sum((unit_prices[i] * wanted[i] for i in ids), start=Decimal("0.00")),
        room_after=room - total,
        types_emptied=types_emptied,
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
    written = await compile_statement(sql.CONFIRM_BOOKING).fetch(
        conn, **_taking(order, user_id), idempotency_key=idempotency_key
    )
    await _after_taking(conn, order)
    return written


@dataclass(frozen=True, slots=True)
class Prepared:
    """A booking made ready before any lock: its ids, reference and time, and what its
    outbox rows say (the webhook body, the emails), as ``book_tickets_many()`` takes them."""

    booking_id: int
    item_ids: list[int]  # one per line, by ascending ticket type id
    reference: uuid.UUID
    at: datetime
    webhook_topic: str
    webhook: str
    emails: str


class BookingsTogether:
    """The common bookings, in one call each, a transaction of its own: PostgreSQL
    claims their Idempotency-Keys, takes the event's and the types' locks once, checks
    each order against what was read without locks and what the orders before it left,
    and writes the bookings it keeps and their outbox rows with one statement per table
    (``book_tickets_many()``, migrations 0008 and 0009). The events' locks are held for
    the call's run and its commit only.

    Bookings that arrive while a call is in flight (in this process) wait for it to
    end, then go together in the next call (``Together``), whatever their events: one
    round trip, one lock hand-off per event and one commit flush for all of them. A
    lone booking goes at once, so batches grow only with the load.

    That call waits for no lock another transaction holds (``SKIP LOCKED``): the
    bookings of an event found locked come back ("again") and go once more in the next
    call, then to the event's own line, calls for that event alone that wait for its
    lock, one at a time, and take its bookings while it is contended in this process.
    So an event held long (a cancellation of many bookings, a hot event's lock between
    the two workers' calls) delays its own bookings, never the other events'."""

    MAX_BATCH = 32

    def __init__(self) -> None:
        self._together: Together[str, str] | None = None
        # Per event found locked, while bookings of it wait or are in flight: its line.
        self._events: dict[int, Together[str, str]] = {}
        self.calls = 0  # calls of book_tickets_many() made

    async def book(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        order: PricedOrder,
        prepared: Prepared,
        *,
        user_id: int,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> bool:
        """True once the booking is written; False when it was not the common case (a
        refusal, the last tickets, a name or price changed since the read, a key used
        before: it was undone alone, and the caller runs the general transaction).
        409 ``idempotency_key_in_use`` when a request with the same key is in flight."""
        event_id = order.event_id
        order_json = _order_json(order, prepared, user_id, idempotency_key, request_hash)
        line = self._events.get(event_id)
        if line is None:
            together = self._together
            if together is None:
                together = self._together = Together(
                    functools.partial(self._call, sessionmaker, False), max_batch=self.MAX_BATCH
                )
            outcome = await together(order_json)
            if outcome == "again" and event_id not in self._events:
                # Once more in the next call: the call holding the event (the other
                # worker's, over events that overlap) is usually done by then.
                outcome = await together(order_json)
            if outcome == "again":
                line = self._events.get(event_id)
                if line is None:
                    line = self._events[event_id] = Together(
                        functools.partial(self._call, sessionmaker, True),
                        max_batch=self.MAX_BATCH,
                        on_idle=lambda: self._events.pop(event_id, None),
                    )
        if line is not None:
            outcome = await line(order_json)
        if outcome == "key_in_use":
            raise IdempotencyKeyInUse()
        return outcome == "booked"

    async def _call(
        self, sessionmaker: async_sessionmaker[AsyncSession], wait: bool, orders: list[str]
    ) -> list[str]:
        """What each order became (an error, translated: 503 busy, ..., goes to all)."""
        self.calls += 1
        async with UnitOfWork(sessionmaker).driver() as conn:
            outcomes: list[str] = await compile_statement(sql.BOOK_TICKETS_MANY).fetchval(
                conn, orders="[" + ",".join(orders) + "]", wait=wait
            )
        return outcomes


_together: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], BookingsTogether] = (
    weakref.WeakKeyDictionary()
)


def bookings_together(sessionmaker: async_sessionmaker[AsyncSession]) -> BookingsTogether:
    """The ``BookingsTogether`` of an app's database (one per sessionmaker, so one per
    app and event loop)."""
    together = _together.get(sessionmaker)
    if together is None:
        together = _together[sessionmaker] = BookingsTogether()
    return together


def _order_json(
    order: PricedOrder,
    prepared: Prepared,
    user_id: int,
    idempotency_key: str | None,
    request_hash: str | None,
) -> str:
    """One order of ``book_tickets_many()``: its lines, ids, what the lock-free read saw,
    its outbox rows and its Idempotency-Key, by name."""
    return orjson.dumps(
        {
            **_taking(order, user_id),
            "booking_id": prepared.booking_id,
            "reference": prepared.reference,
            "at": prepared.at,
            "item_ids": prepared.item_ids,
            "names": [order.names[i] for i in order.ids],
            "event_name": order.event_name,
            "event_start": order.event_start,
            "event_end": order.event_end,
            "location": order.location,
            "topic": prepared.webhook_topic,
            "webhook": orjson.Fragment(prepared.webhook),
            "emails": orjson.Fragment(prepared.emails),
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
        },
        default=str,  # prices and totals (Decimal) as their exact text
    ).decode()


def _taking(order: PricedOrder, user_id: int) -> dict[str, object]:
    """The parameters of the statement that writes ``order`` for ``user_id``."""
    return {
        "ids": order.ids,
        "quantities": [order.wanted[i] for i in order.ids],
        "prices": [order.unit_prices[i] for i in order.ids],
        "total": order.total,
        "event_id": order.event_id,
        "user_id": user_id,
        "total_price": order.total_price,
    }


async def _after_taking(conn: asyncpg.Connection, order: PricedOrder) -> None:
    """Call ``event_sold_out`` when this order took the event's last tickets."""
    if order.room_after > 0 and not order.types_emptied:
        return
    if order.room_after > 0:
        on_sale = await compile_statement(sql.ANY_ON_SALE).fetchval(conn, event_id=order.event_id)
        if on_sale:
            return
    await event_sold_out(conn, order.event_id)


async def event_sold_out(conn: asyncpg.Connection, event_id: int) -> None:
    """The event just became ``sold_out`` (nothing left to sell or hold), inside the
    transaction that took its last tickets: ``event.sold_out`` goes to the outbox."""
    from app.events import messages as event_messages  # the events domain calls this one

    await event_messages.record_if_sold_out(conn, event_id)


async def lock_event(conn: asyncpg.Connection, event_id: int) -> asyncpg.Record:
    """The event row, locked (first in the global order); 404 when it is gone."""
    event = await compile_statement(sql.LOCK_EVENT).fetchrow(conn, event_id=event_id)
    if event is None:
        raise NotFound("No event with this id.")
    return event


async def cancel_booking(
    conn: asyncpg.Connection,
    booking_id: int,
    event_id: int,
    *,
    offer_ttl: int,
    aftermath: Aftermath,
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
    await offer_to_waitlist(conn, event_id, offer_ttl, aftermath)
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
    """An event is cancelled: its active holds are released, its waiting and offered
    entries leave the line, every confirmed booking of it is cancelled and its tickets
    released, in the caller's transaction, under the event lock the caller holds.
    Returns the ids of the bookings cancelled (for the emails sent after commit)."""
    holds = await compile_statement(sql.LOCK_ACTIVE_HOLDS).fetch(conn, event_id=event_id)
    await compile_statement(sql.LEAVE_EVENT_WAITLIST).execute(conn, event_id=event_id)
    await _end_holds(conn, event_id, [h["id"] for h in holds], "released")
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


# ---------------------------------------------------------------- holds


async def place_hold(
    conn: asyncpg.Connection,
    event_id: int,
    lines: Sequence[Line],
    *,
    user_id: int,
    ttl_seconds: int,
    offer_ttl: int,
    idempotency_key: str | None,
    aftermath: Aftermath,
) -> tuple[PricedOrder, asyncpg.Record]:
    """A hold is placed: the same locks and checks as a booking, one active hold per
    attendee and event, the tickets from on sale to held. Returns the order and the
    hold's ``id, hold_reference, created_at, expires_at``."""
    order = await lock_and_check(
        conn, event_id, lines, offer_ttl=offer_ttl, aftermath=aftermath, holder_id=user_id
    )
    hold = await _write_hold(conn, order, user_id, ttl_seconds, idempotency_key)
    if hold is None:
        # The attendee holds tickets of the event already: hold_exists, unless that hold
        # has expired; then it ends now, and the order is checked and written again.
        if not await _end_own_expired_hold(conn, user_id, event_id, offer_ttl, aftermath):
            raise HoldExists()
        order = await lock_and_check(
            conn, event_id, lines, offer_ttl=offer_ttl, aftermath=aftermath, holder_id=user_id
        )
        hold = await _write_hold(conn, order, user_id, ttl_seconds, idempotency_key)
        if hold is None:
            raise HoldExists()
    await _after_taking(conn, order)
    return order, hold


async def _write_hold(
    conn: asyncpg.Connection,
    order: PricedOrder,
    user_id: int,
    ttl_seconds: int,
    idempotency_key: str | None,
) -> asyncpg.Record | None:
    """The hold written, or None (nothing written) when the attendee has an active hold
    on the event already."""
    return await compile_statement(sql.PLACE_HOLD).fetchrow(
        conn,
        **_taking(order, user_id),
        ttl_seconds=ttl_seconds,
        idempotency_key=idempotency_key,
    )


async def _lock_hold(
    conn: asyncpg.Connection, hold_id: int, event_id: int
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The event row, then the hold's row (the global order); 404 if either is gone."""
    event = await lock_event(conn, event_id)
    hold = await compile_statement(sql.LOCK_HOLD).fetchrow(conn, hold_id=hold_id)
    if hold is None:
        raise NotFound("No hold with this reference.")
    return event, hold


@dataclass(frozen=True, slots=True)
class Checkout:
    """What a checkout did: the booking's id, the locked event row (name, start, end,
    location) and, when the booking was made now, its written rows (one per item, by
    item id, with the booking's columns and the ticket type's name)."""

    booking_id: int
    event: asyncpg.Record
    written: Sequence[asyncpg.Record] = ()

    @property
    def created(self) -> bool:
        return bool(self.written)


async def checkout_hold(
    conn: asyncpg.Connection,
    hold_id: int,
    event_id: int,
    *,
    payment_reference: str | None,
) -> Checkout:
    """A hold is checked out: its tickets move from held to sold (never on sale in
    between) into a booking at the hold's prices. A hold already checked out returns
    its booking (``created`` false). Under the event's, the hold's and its types' locks
    (one statement), so of concurrent checkouts, deletes and expiries exactly one wins."""
    locked = await compile_statement(sql.LOCK_EVENT_HOLD_AND_TYPES).fetch(
        conn, event_id=event_id, hold_id=hold_id
    )
    if not locked:
        raise NotFound("No hold with this reference.")
    hold = locked[0]
    if hold["status"] == "converted":
        return Checkout(hold["booking_id"], hold)
    if hold["status"] == "expired" or hold["expired"]:
        raise HoldExpired()
    if hold["status"] != "active":
        raise HoldNotActive()
    if hold["start_time"] <= _now():
        raise EventNotBookable("The event has started; the hold can no longer be checked out.")
    written = await confirm_checkout(conn, hold_id, event_id, payment_reference)
    return Checkout(written[0]["id"], hold, written)


async def confirm_checkout(
    conn: asyncpg.Connection, hold_id: int, event_id: int, payment_reference: str | None
) -> list[asyncpg.Record]:
    """A booking is confirmed by checking out a hold: held to sold, the booking written at
    the hold's prices, the hold ``converted`` and so is an offered waiting entry of it.
    One round trip; the caller holds the locks. Rows: one per item (booking columns
    repeated), by item id."""
    written = await compile_statement(sql.CHECKOUT_HOLD).fetch(
        conn, hold_id=hold_id, event_id=event_id, payment_reference=payment_reference
    )
    assert written
    return written


async def release_hold(
    conn: asyncpg.Connection,
    hold_id: int,
    event_id: int,
    *,
    offer_ttl: int,
    aftermath: Aftermath,
) -> None:
    """A hold is released by its owner: its tickets go back (to the waiting list first);
    an offered waiting entry of it has ``left``. 409 ``hold_not_active`` when it already
    ended or reads expired."""
    _, hold = await _lock_hold(conn, hold_id, event_id)
    if hold["status"] != "active" or hold["expired"]:
        raise HoldNotActive()
    await compile_statement(sql.END_OFFERS).execute(conn, status="left", hold_ids=[hold_id])
    await _end_holds(conn, event_id, [hold_id], "released")
    await offer_to_waitlist(conn, event_id, offer_ttl, aftermath)


async def expire_holds(conn: asyncpg.Connection, event_id: int, hold_ids: list[int]) -> list[int]:
    """Holds expire: past their time, their tickets go back on sale and their offered
    waiting entries are ``expired``. The caller holds the event's lock and the holds'.
    Returns the ids of the holds that expired now (each told as ``hold.expired``)."""
    from app.holds import messages as hold_messages  # the holds domain calls this one

    await compile_statement(sql.END_OFFERS).execute(conn, status="expired", hold_ids=hold_ids)
    expired = await _end_holds(conn, event_id, hold_ids, "expired")
    await hold_messages.record_holds_expired(conn, event_id, expired)
    return expired


async def _end_holds(
    conn: asyncpg.Connection, event_id: int, hold_ids: list[int], status: str
) -> list[int]:
    if not hold_ids:
        return []
    await compile_statement(sql.LOCK_TYPES_OF_HOLDS).execute(conn, hold_ids=hold_ids)
    rows = await compile_statement(sql.END_HOLDS).fetch(
        conn, status=status, hold_ids=hold_ids, event_id=event_id
    )
    return [r["id"] for r in rows]


async def _expire_and_offer(
    conn: asyncpg.Connection, event_id: int, offer_ttl: int, aftermath: Aftermath
) -> bool:
    """Release the event's expired holds (the caller holds the event lock) and offer what
    came back to the waiting list. Whether any hold expired."""
    expired = await compile_statement(sql.LOCK_EXPIRED_HOLDS).fetch(conn, event_id=event_id)
    if not expired:
        return False
    await expire_holds(conn, event_id, [r["id"] for r in expired])
    await offer_to_waitlist(conn, event_id, offer_ttl, aftermath, expire_first=False)
    return True


async def sweep_event(
    conn: asyncpg.Connection, event_id: int, offer_ttl: int, aftermath: Aftermath
) -> bool:
    """The sweeper's transaction for one event: its expired holds back on sale. An event
    whose row another transaction holds is skipped (SKIP LOCKED): that one releases
    expired holds itself when it needs their tickets, and the next sweep comes soon."""
    locked = await compile_statement(sql.LOCK_EVENT_SKIP_LOCKED).fetchval(conn, event_id=event_id)
    if locked is None:
        return False
    return await _expire_and_offer(conn, event_id, offer_ttl, aftermath)


async def events_with_expired_holds(conn: asyncpg.Connection, limit: int = 100) -> list[int]:
    rows = await compile_statement(sql.EVENTS_WITH_EXPIRED_HOLDS).fetch(conn, limit=limit)
    return [r["event_id"] for r in rows]


# ---------------------------------------------------------------- waiting lists


async def offer_to_waitlist(
    conn: asyncpg.Connection,
    event_id: int,
    offer_ttl: int,
    aftermath: Aftermath,
    *,
    expire_first: bool = True,
) -> None:
    """Tickets came back: the earliest waiting entry whose quantity fits in what is free
    (its type's tickets on sale, within the event's capacity) gets a hold of that
    quantity, then the next, while tickets remain. Same transaction as the release,
    under the event lock the caller holds, so no booking can take them first.

    An attendee who holds tickets of the event already keeps their place for later
    (one active hold per attendee and event)."""
    line = await compile_statement(sql.WAITING_LINE).fetch(conn, event_id=event_id)
    if not line:
        return
    if expire_first:  # expired holds count as free, and must not block a new hold
        expired = await compile_statement(sql.LOCK_EXPIRED_HOLDS).fetch(conn, event_id=event_id)
        if expired:
            await expire_holds(conn, event_id, [r["id"] for r in expired])
            line = await compile_statement(sql.WAITING_LINE).fetch(conn, event_id=event_id)
    event = await compile_statement(sql.EVENT_ROOM).fetchrow(conn, event_id=event_id)
    if event is None or event["cancelled_at"] is not None or event["start_time"] <= _now():
        return
    room = event["room"]
    holding = set(event["holding_users"])
    on_sale = {e["ticket_type_id"]: e["quantity_available"] for e in line}
    for entry in line:
        quantity, type_id = entry["quantity"], entry["ticket_type_id"]
        if room <= 0:
            break
        if entry["user_id"] in holding or not entry["is_active"]:
            continue
        if quantity > on_sale[type_id] or quantity > room:
            continue
        await make_offer(conn, event, event_id, entry, offer_ttl, aftermath)
        holding.add(entry["user_id"])
        on_sale[type_id] -= quantity
        room -= quantity


async def make_offer(
    conn: asyncpg.Connection,
    event: asyncpg.Record,
    event_id: int,
    entry: asyncpg.Record,
    offer_ttl: int,
    aftermath: Aftermath,
) -> None:
    """A waiting entry is offered tickets: an ordinary hold of its quantity, lasting
    ``offer_ttl`` seconds; its email and webhook are stored in the same transaction."""
    type_id, quantity, price = entry["ticket_type_id"], entry["quantity"], entry["price"]
    order = PricedOrder(
        event_id=event_id,
        event_name=event["name"],
        event_start=event["start_time"],
        event_end=event["end_time"],
        location=event["location"],
        ids=[type_id],
        wanted={type_id: quantity},
        names={type_id: entry["type_name"]},
        unit_prices={type_id: price},
        total=quantity,
        total_price=price * quantity,
        room_after=0,
        types_emptied=False,
    )
    hold = await _write_hold(conn, order, entry["user_id"], offer_ttl, None)
    assert hold is not None  # the caller passes over attendees who hold tickets already
    user = await compile_statement(sql.MARK_OFFERED).fetchrow(
        conn, hold_id=hold["id"], entry_id=entry["id"]
    )
    assert user is not None
    offer = Offer(
        entry_id=entry["id"],
        email=user["email"],
        username=user["username"],
        event_id=event_id,
        event_name=event["name"],
        event_start=event["start_time"],
        location=event["location"],
        ticket_type_name=entry["type_name"],
        quantity=quantity,
        unit_price=price,
        hold_reference=hold["hold_reference"],
        expires_at=hold["expires_at"],
    )
    aftermath.offers.append(offer)
    # In the offer's transaction: the attendee's email and the organizer's webhook.
    from app.waitlist import messages as waitlist_messages  # the waitlist domain calls this one

    await waitlist_messages.record_offer(conn, offer)


async def set_quantity_available(
    conn: asyncpg.Connection,
    event_id: int,
    ticket_type_id: int,
    quantity: int,
    *,
    offer_ttl: int,
    aftermath: Aftermath,
) -> None:
    """The organizer sets what is left to sell of a type (the caller holds the event's
    and the type's locks); tickets added go to the waiting list first."""
    await compile_statement(sql.SET_QUANTITY_AVAILABLE).execute(
        conn, quantity=quantity, ticket_type_id=ticket_type_id
    )
    await offer_to_waitlist(conn, event_id, offer_ttl, aftermath)


def _now() -> datetime:
    return datetime.now(UTC)


async def lock_for_waiting(
    conn: asyncpg.Connection,
    event_id: int,
    ticket_type_id: int,
    *,
    offer_ttl: int,
    aftermath: Aftermath,
) -> None:
    """Lock the event and the ticket type for a new waiting entry: 404 for an unknown
    event, 422 for a type of another event, ``event_not_bookable`` once it is cancelled
    or started. Expired holds are released first (their tickets are on sale, offered to
    those already waiting)."""
    lock = compile_statement(sql.LOCK_EVENT_AND_TYPE)
    row = await lock.fetchrow(conn, event_id=event_id, ticket_type_id=ticket_type_id)
    if row is None:
        raise NotFound("No event with this id.")
    if row["type_event_id"] != event_id:
        raise ValidationFailed(
            "This ticket type does not belong to the event.", field="body.ticket_type_id"
        )
    if row["cancelled_at"] is not None or row["start_time"] <= _now():
        raise EventNotBookable()
    await _expire_and_offer(conn, event_id, offer_ttl, aftermath)


async def check_nothing_on_sale(
    conn: asyncpg.Connection, event_id: int, ticket_type_id: int, quantity: int
) -> None:
    """``tickets_available`` when a booking of ``quantity`` tickets of the type would not be
    refused for lack of them (its type's and the event's), under the caller's locks."""
    row = await compile_statement(sql.LOCK_EVENT_AND_TYPE).fetchrow(
        conn, event_id=event_id, ticket_type_id=ticket_type_id
    )
    assert row is not None
    if row["quantity_available"] >= quantity and row["room"] >= quantity:
        raise TicketsAvailable(
            f"{min(row['quantity_available'], row['room'])} tickets of this type are on sale: "
            "book them instead."
        )


async def leave_waitlist(
    conn: asyncpg.Connection,
    event_id: int,
    entry_id: int,
    *,
    offer_ttl: int,
    aftermath: Aftermath,
) -> None:
    """A waiting entry leaves the line; its offered hold, if still active, is released
    and its tickets go to the next entry. Under the event's lock, then the entry's and
    the hold's rows."""
    await lock_event(conn, event_id)
    entry = await compile_statement(sql.LOCK_ENTRY).fetchrow(conn, entry_id=entry_id)
    if entry is None or entry["status"] not in ("waiting", "offered"):
        return
    hold = None
    if entry["status"] == "offered" and entry["hold_id"] is not None:
        hold = await compile_statement(sql.LOCK_HOLD).fetchrow(conn, hold_id=entry["hold_id"])
    if hold is not None and hold["status"] == "active" and hold["expired"]:
        # The offer had run out already: it expires (the entry reads so), not "left".
        await expire_holds(conn, event_id, [hold["id"]])
    else:
        await compile_statement(sql.LEAVE_ENTRY).execute(conn, entry_id=entry_id)
        if hold is not None and hold["status"] == "active":
            await _end_holds(conn, event_id, [hold["id"]], "released")
        else:
            return
    await offer_to_waitlist(conn, event_id, offer_ttl, aftermath)
