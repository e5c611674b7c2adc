"""An event's status, computed in one place: a SQL expression used to select and to filter."""

from __future__ import annotations

import enum

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, not_, select

from app.events.models import Event, TicketType


class EventStatus(enum.StrEnum):
    upcoming = "upcoming"
    sold_out = "sold_out"
    cancelled = "cancelled"
    past = "past"


STATUS_DESCRIPTION = (
    "`cancelled` once the organizer cancelled it; otherwise `past` once it has ended "
    "(`end_time`, or `start_time` when there is none); otherwise `sold_out` when "
    "`tickets_sold` reaches `total_capacity`, or when the event has ticket types and none of "
    "its active ones has tickets left; otherwise `upcoming`. An event without any ticket type "
    "yet is `upcoming` (its organizer has not put tickets on sale yet, nothing is sold out)."
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
        (Event.tickets_sold >= Event.total_capacity, literal(EventStatus.sold_out.value)),
        (and_(has_ticket_types, not_(has_tickets_on_sale)), literal(EventStatus.sold_out.value)),
        else_=literal(EventStatus.upcoming.value),
    )
