"""The events rules: listing with filters, and every change made under the event row's lock.

Lock order, as everywhere in the product: the event row (``SELECT ... FOR UPDATE``),
then booking rows, then ticket-type rows by ascending id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Select,
    String,
    Text,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from app.auth.models import User
from app.bookings import messages as booking_messages
from app.bookings import service as bookings_service
from app.core.config import Settings
from app.core.db import CompiledStatement, UnitOfWork, compile_once, param, raw_connection
from app.core.errors import (
    CapacityBelowSold,
    EventHasBookings,
    EventNotBookable,
    NotFound,
    TicketTypeNameTaken,
    ValidationFailed,
)
from app.events import messages
from app.events.models import Event, TicketType
from app.events.schemas import (
    INT4_MAX,
    EventCreate,
    EventRead,
    EventUpdate,
    TicketTypeCreate,
    TicketTypeUpdate,
)
from app.events.status import EVENT_STATUS, EventStatus, status_filter
from app.inventory import service as inventory
from app.inventory.service import Aftermath

DEFAULT_STATUSES = (EventStatus.upcoming, EventStatus.sold_out)
TICKET_TYPE_NAME_INDEX = "uq_ticket_types_event_id_name_lower"

# Each ordering ends with the id, in the same direction, so pages never overlap.
ORDERINGS: dict[str, tuple[ColumnElement[object], ...]] = {
    "start_time": (Event.start_time.asc(), Event.id.asc()),
    "-start_time": (Event.start_time.desc(), Event.id.desc()),
    "total_capacity": (Event.total_capacity.asc(), Event.id.asc()),
    "-total_capacity": (Event.total_capacity.desc(), Event.id.desc()),
    "created_at": (Event.created_at.asc(), Event.id.asc()),
    "-created_at": (Event.created_at.desc(), Event.id.desc()),
}

# A search with at least one letter or digit goes through the full-text index;
# anything else (punctuation only) would make an empty tsquery.
_HAS_WORD = re.compile(r"[^\W_]")


@dataclass(frozen=True, slots=True)
class EventFilters:
    statuses: tuple[EventStatus, ...] = DEFAULT_STATUSES
    location: str | None = None
    search: str | None = None
    start_after: datetime | None = None
    start_before: datetime | None = None
    organizer_id: int | None = None
    ordering: str = "start_time"


@dataclass(slots=True)
class EventRow:
    """An event (with its organizer loaded) and its status as PostgreSQL computed it."""

    event: Event
    status: str


@dataclass(slots=True)
class EventChange:
    """The event after a PATCH, and the bookings its cancellation cancelled (to notify)."""

    row: EventRow
    cancelled_booking_ids: list[int] = field(default_factory=list)


def _events_with_status() -> Select[tuple[Event, str]]:
    return (
        select(Event, EVENT_STATUS.label("status"))
        .join(Event.organizer)
        .options(contains_eager(Event.organizer))
    )


def _search_condition(search: ColumnElement[str], *, words: bool) -> ColumnElement[bool]:
    """``search`` is the pattern (``words=False``) or the words; see ``_search_params``."""
    if not words:
        return or_(
            Event.name.ilike(search, escape="\\"), Event.description.ilike(search, escape="\\")
        )
    # Every word of the search must start a word of the name or description:
    # plainto_tsquery parses the words as the tsvector did, then each lexeme gets `:*`.
    tsquery = cast(func.plainto_tsquery("simple", search), Text)
    prefixes = func.to_tsquery("simple", func.regexp_replace(tsquery, r"'(\s|$)", r"':*\1", "g"))
    return Event.search_vector.op("@@")(prefixes)


def _search_params(search: str) -> tuple[bool, str]:
    """(whether the search has words, the value to bind for it).

    A search with at least one letter or digit goes through the full-text index;
    anything else (punctuation only, an empty tsquery) is a substring match.
    """
    if _HAS_WORD.search(search):
        return True, search
    return False, "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"


# ---------------------------------------------------------------- the list

# The list runs as one statement on the unit of work's asyncpg connection: the count
# and the page (LEFT JOIN LATERAL, so an empty page still brings the count), one
# snapshot and one now(). SQLAlchemy builds and compiles it once per shape of filters;
# a request only binds its values. Columns of a page row, as EventRead wants them.
_LIST_COLUMNS = messages.EVENT_COLUMNS


@dataclass(frozen=True, slots=True)
class _ListShape:
    """What decides the SQL of a list (not the values bound into it)."""

    statuses: tuple[EventStatus, ...]
    location: bool
    search: bool | None  # None: no search; True: words; False: a substring pattern
    start_after: bool
    start_before: bool
    organizer: bool
    ordering: str


@lru_cache(maxsize=512)
def _compiled_list(shape: _ListShape, dialect: Dialect) -> CompiledStatement:
    """The list's SQL for ``dialect``: the engine's, set up by its first connection
    (how it writes string literals depends on the server's settings)."""
    conditions = [status_filter(shape.statuses)]
    if shape.location:
        # Served by the index on lower(location).
        conditions.append(func.lower(Event.location) == func.lower(param("location", String)))
    if shape.search is not None:
        conditions.append(_search_condition(param("search", String), words=shape.search))
    if shape.start_after:
        conditions.append(Event.start_time > param("start_after", DateTime(timezone=True)))
    if shape.start_before:
        conditions.append(Event.start_time < param("start_before", DateTime(timezone=True)))
    if shape.organizer:
        conditions.append(Event.organizer_id == param("organizer_id", BigInteger))
    counted = select(func.count().label("count")).select_from(Event).where(*conditions)
    page = (
        select(*_LIST_COLUMNS)
        .join(User, User.id == Event.organizer_id)
        .where(*conditions)
        .order_by(*ORDERINGS[shape.ordering])
        .limit(param("limit", BigInteger))
        .offset(param("offset", BigInteger))
        .lateral("page")
    )
    c = counted.subquery("c")
    statement = select(c.c.count, *page.c).select_from(c.outerjoin(page, true()))
    return compile_once(statement, dialect)


def _sort_key(ordering: str) -> tuple[bool, Any]:
    name = ordering.lstrip("-")
    return ordering.startswith("-"), lambda r: (r[name], r["id"])


async def list_events(
    uow: UnitOfWork, filters: EventFilters, *, offset: int, limit: int
) -> tuple[int, list[asyncpg.Record]]:
    """The number of matching events and one page of them: one statement, whatever the page.

    Page rows carry the columns of ``_LIST_COLUMNS`` (``organizer_username``, ``status``).
    """
    words: bool | None = None
    values: dict[str, Any] = {"limit": limit, "offset": offset}
    if filters.search is not None:
        words, values["search"] = _search_params(filters.search)
    if filters.location is not None:
        values["location"] = filters.location
    if filters.start_after is not None:
        values["start_after"] = filters.start_after
    if filters.start_before is not None:
        values["start_before"] = filters.start_before
    if filters.organizer_id is not None:
        values["organizer_id"] = filters.organizer_id
    shape = _ListShape(
        statuses=tuple(sorted(filters.statuses)),
        location=filters.location is not None,
        search=words,
        start_after=filters.start_after is not None,
        start_before=filters.start_before is not None,
        organizer=filters.organizer_id is not None,
        ordering=filters.ordering,
    )
    async with uow.driver() as conn:
        compiled = _compiled_list(shape, uow.dialect)
        rows = await conn.fetch(compiled.sql, *compiled.args(values))
    count = rows[0]["count"] if rows else 0
    page = [r for r in rows if r["id"] is not None]
    # The page's order is the subquery's; a join does not promise to keep it.
    descending, key = _sort_key(filters.ordering)
    page.sort(key=key, reverse=descending)
    return count, page


async def _fetch_event(session: AsyncSession, event_id: int) -> EventRow | None:
    result = await session.execute(
        _events_with_status().where(Event.id == event_id).execution_options(populate_existing=True)
    )
    found = result.tuples().first()
    return EventRow(*found) if found else None


async def get_event(uow: UnitOfWork, event_id: int) -> EventRow | None:
    async with uow:
        return await _fetch_event(uow.session, event_id)


async def list_ticket_types(uow: UnitOfWork, event_id: int) -> list[TicketType]:
    async with uow:
        result = await uow.session.scalars(
            select(TicketType)
            .where(TicketType.event_id == event_id)
            .order_by(TicketType.price, TicketType.id)
        )
        return list(result)


async def get_ticket_type(uow: UnitOfWork, event_id: int, ticket_type_id: int) -> TicketType:
    async with uow:
        ticket_type = await uow.session.scalar(
            select(TicketType).where(
                TicketType.id == ticket_type_id, TicketType.event_id == event_id
            )
        )
    if ticket_type is None:
        raise NotFound("No ticket type with this id in this event.")
    return ticket_type


async def create_event(uow: UnitOfWork, organizer: User, data: EventCreate) -> EventRow:
    async with uow:
        event_id = await uow.session.scalar(
            insert(Event).values(organizer_id=organizer.id, **data.model_dump()).returning(Event.id)
        )
        assert event_id is not None
        row = await _fetch_event(uow.session, event_id)
    assert row is not None
    return row


async def _lock_event(session: AsyncSession, event_id: int) -> Event:
    event = await session.scalar(
        select(Event)
        .where(Event.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if event is None:  # deleted since the request started
        raise NotFound("No event with this id.")
    return event


def _ensure_not_cancelled(event: Event) -> None:
    if event.cancelled_at is not None:
        raise EventNotBookable("The event is cancelled and cannot be changed.")


async def update_event(uow: UnitOfWork, event_id: int, data: EventUpdate) -> EventChange:
    """Apply a partial update; cancelling also cancels the bookings, in the same transaction."""
    changes = data.changes()
    cancel = data.status == EventStatus.cancelled
    async with uow:
        session = uow.session
        event = await _lock_event(session, event_id)
        _ensure_not_cancelled(event)
        before = await messages.status_of(session, event_id)
        start = changes.get("start_time", event.start_time)
        end = changes.get("end_time", event.end_time)
        if end is not None and end <= start:
            field_name = "end_time" if "end_time" in changes else "start_time"
            raise ValidationFailed("end_time must be after start_time.", field=f"body.{field_name}")
        capacity = changes.get("total_capacity")
        if capacity is not None and capacity < event.tickets_sold + event.tickets_held:
            held = f" and {event.tickets_held} held" if event.tickets_held else ""
            raise CapacityBelowSold(
                f"The capacity cannot be lower than the {event.tickets_sold} tickets sold{held}."
            )
        if cancel:
            changes["cancelled_at"] = func.now()
        if changes:
            await session.execute(
                update(Event)
                .where(Event.id == event_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
        cancelled_ids: list[int] = []
        if cancel:
            cancelled_ids = await inventory.cancel_event(await raw_connection(session), event_id)
        row = await _fetch_event(session, event_id)
        assert row is not None
        # In the same transaction: event.cancelled, then a booking.cancelled (and an
        # email) for every booking it cancelled; or event.sold_out when a smaller
        # capacity sold it out.
        if cancel:
            await messages.record_event_cancelled(session, event_id)
            await booking_messages.record_bookings_cancelled(
                session, cancelled_ids, reason="event_cancelled"
            )
        elif before != EventStatus.sold_out:
            await messages.record_sold_out(session, EventRead.from_row(row.event, row.status))
    return EventChange(row=row, cancelled_booking_ids=cancelled_ids)


async def delete_event(uow: UnitOfWork, event_id: int) -> None:
    async with uow:
        session = uow.session
        # Locked first so that no booking can land between the check and the delete.
        await _lock_event(session, event_id)
        if await bookings_service.event_has_confirmed_bookings(session, event_id):
            raise EventHasBookings("The event has confirmed bookings: cancel it instead.")
        await session.execute(delete(Event).where(Event.id == event_id))


def _is_name_taken(exc: IntegrityError) -> bool:
    current: BaseException | None = exc.orig
    while current is not None:
        if getattr(current, "constraint_name", None) == TICKET_TYPE_NAME_INDEX:
            return True
        current = current.__cause__
    return TICKET_TYPE_NAME_INDEX in str(exc.orig)


def _name_taken(name: str) -> TicketTypeNameTaken:
    return TicketTypeNameTaken(f"A ticket type named {name!r} already exists in this event.")


async def create_ticket_type(uow: UnitOfWork, event_id: int, data: TicketTypeCreate) -> TicketType:
    async with uow:
        session = uow.session
        event = await _lock_event(session, event_id)
        _ensure_not_cancelled(event)
        try:
            ticket_type = await session.scalar(
                insert(TicketType)
                .values(event_id=event_id, **data.model_dump())
                .returning(TicketType)
            )
        except IntegrityError as exc:
            if _is_name_taken(exc):
                raise _name_taken(data.name) from exc
            raise
        assert ticket_type is not None
        return ticket_type


async def update_ticket_type(
    uow: UnitOfWork,
    event_id: int,
    ticket_type_id: int,
    data: TicketTypeUpdate,
    *,
    settings: Settings,
) -> tuple[TicketType, Aftermath]:
    """A partial update. What is left to sell changes through the inventory: tickets
    added go to the waiting list first, and the answer shows the state after the offers."""
    changes = data.changes()
    quantity = changes.pop("quantity_available", None)
    aftermath = Aftermath()
    async with uow:
        session = uow.session
        event = await _lock_event(session, event_id)
        _ensure_not_cancelled(event)
        ticket_type = await session.scalar(
            select(TicketType)
            .where(TicketType.id == ticket_type_id, TicketType.event_id == event_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if ticket_type is None:
            raise NotFound("No ticket type with this id in this event.")
        before = await messages.status_of(session, event_id)
        if changes:
            try:
                await session.execute(
                    update(TicketType)
                    .where(TicketType.id == ticket_type_id)
                    .values(**changes)
                    .execution_options(synchronize_session=False)
                )
            except IntegrityError as exc:
                if _is_name_taken(exc):
                    raise _name_taken(changes["name"]) from exc
                raise
        if quantity is not None:
            _ensure_counters_fit(ticket_type, quantity)
            await inventory.set_quantity_available(
                await raw_connection(session),
                event_id,
                ticket_type_id,
                quantity,
                offer_ttl=settings.waitlist_offer_ttl_seconds,
                aftermath=aftermath,
            )
        if changes or quantity is not None:
            ticket_type = await session.scalar(
                select(TicketType)
                .where(TicketType.id == ticket_type_id)
                .execution_options(populate_existing=True)
            )
        assert ticket_type is not None
        if before != EventStatus.sold_out:  # its last tickets taken off sale
            await messages.record_if_sold_out(session, event_id)
        return ticket_type, aftermath


def _ensure_counters_fit(ticket_type: TicketType, quantity_available: int | None) -> None:
    """Tickets released later (cancels, ended holds) move back into `quantity_available`:
    what is on sale plus what is held and sold must fit the integer column, or a release
    would fail."""
    if quantity_available is None:
        return
    taken = ticket_type.quantity_sold + ticket_type.quantity_held
    room = INT4_MAX - taken
    if quantity_available > room:
        message = f"At most {room} with {taken} tickets sold or held."
        raise ValidationFailed(message, field="body.quantity_available")
