"""An event's status, computed in one place: a SQL expression used to select and to filter."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import ColumnElement, and_, case, exists, false, func, literal, not_, or_, select

from app.events.models import Event, TicketType


class EventStatus(enum.StrEnum):
    upcoming = "upcoming"
    sold_out = "sold_out"
    cancelled = "cancelled"
    past = "past"


STATUS_DESCRIPTION = (
    "`cancelled` once the organizer cancelled it; otherwise `past` once it has ended "
    "(`end_time`, or `start_time` when there is none); otherwise `sold_out` when "
    "`tickets_sold + tickets_held` reaches `total_capacity` (nothing left to sell or hold), "
    "or when the event has ticket types and none of its active ones has tickets left; "
    "otherwise `upcoming`. An event without any ticket type yet is `upcoming` (its "
    "organizer has not put tickets on sale yet, nothing is sold out)."
)


def event_status_expr() -> ColumnElement[str]:
    """The status of the `Event` row in the enclosing query, evaluated by PostgreSQL.

    `now()` is the transaction's clock, so one response never mixes two instants.
    """
    has_ticket_types = exists(
        select(literal(1)).where(TicketType.event_id == Event.id).correlate(Event)
    )
    has_tickets_on_sale = exists(
        select(literal(1))
        .where(
            TicketType.event_id == Event.id,
            TicketType.is_active.is_(True),
            TicketType.quantity_available > 0,
        )
        .correlate(Event)
    )
    return case(
        (Event.cancelled_at.is_not(None), literal(EventStatus.cancelled.value)),
        (
            func.coalesce(Event.end_time, Event.start_time) <= func.now(),
            literal(EventStatus.past.value),
        ),
        (
            Event.tickets_sold + Event.tickets_held >= Event.total_capacity,
            literal(EventStatus.sold_out.value),
        ),
        (and_(has_ticket_types, not_(has_tickets_on_sale)), literal(EventStatus.sold_out.value)),
        else_=literal(EventStatus.upcoming.value),
    )


# Built once: the expression is immutable and reused by every query.
EVENT_STATUS: ColumnElement[str] = event_status_expr()


def _not_ended() -> ColumnElement[bool]:
    return func.coalesce(Event.end_time, Event.start_time) > func.now()


def status_filter(statuses: Iterable[EventStatus]) -> ColumnElement[bool]:
    """Events whose status is one of `statuses`, as the cheapest equivalent predicate."""
    return _status_filter(frozenset(statuses))


@lru_cache(maxsize=32)  # 15 possible sets; expressions are immutable and reusable
def _status_filter(wanted: frozenset[EventStatus]) -> ColumnElement[bool]:
    """See status_filter.

    Same rules as EVENT_STATUS; `upcoming` and `sold_out` together (the list's default)
    only need "not cancelled and not ended", which PostgreSQL answers without looking
    at ticket types.
    """
    live = and_(Event.cancelled_at.is_(None), _not_ended())
    parts: list[ColumnElement[bool]] = []
    if EventStatus.cancelled in wanted:
        parts.append(Event.cancelled_at.is_not(None))
    if EventStatus.past in wanted:
        parts.append(and_(Event.cancelled_at.is_(None), not_(_not_ended())))
    if {EventStatus.upcoming, EventStatus.sold_out} <= wanted:
        parts.append(live)
    elif one := wanted & {EventStatus.upcoming, EventStatus.sold_out}:
        parts.append(EVENT_STATUS.in_([s.value for s in one]))
    return or_(*parts) if parts else false()
