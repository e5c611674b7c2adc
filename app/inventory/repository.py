"""Every SQL statement that takes tickets off sale or gives them back.

SQLAlchemy Core statements with named, typed parameters, compiled once to asyncpg's
SQL (``app.core.db.compile_statement``) and run on the request's pooled asyncpg
connection. Counters move in SQL (``quantity_available = quantity_available - n``),
guarded by the tables' CHECK constraints, never read-modified-written in Python.
Only ``app.inventory.service`` runs them (and the pgbench script is generated from
them: ``bench/pgbench_script.py``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, Numeric, String, any_, func, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY

from app.auth.models import User
from app.bookings.models import Booking
from app.core.db import param
from app.events.models import Event, TicketType

IDS = ARRAY(BigInteger)


def _bound(sql: str, *params: object) -> object:
    """A ``text()`` statement (data-modifying CTEs) with its named, typed parameters."""
    return text(sql).bindparams(*params)  # type: ignore[arg-type]


# Lock-free, before the transaction: the caller's account (the access token was only
# verified, not looked up) and whether the event exists and owns the ticket types.
# ``own_ids`` is NULL when there is no such event.
_own_ids = (
    select(
        func.array(
            select(TicketType.id)
            .where(TicketType.event_id == Event.id, TicketType.id == any_(param("ids", IDS)))
            .scalar_subquery()
        )
    )
    .where(Event.id == param("event_id", BigInteger))
    .scalar_subquery()
)
ACCOUNT_EVENT_AND_TYPES = select(
    User.id,
    User.username,
    User.email,
    User.role,
    User.is_active,
    User.password_changed_at,
    _own_ids.label("own_ids"),
).where(User.id == param("user_id", BigInteger))

# The locks, in one statement and in the global order: the event row (outer side of
# the nested loop, which LATERAL forces), then its ticket types sorted by id.
_locked_event = (
    select(
        Event.id,
        Event.name,
        Event.start_time,
        Event.cancelled_at,
        Event.total_capacity,
        Event.tickets_sold,
    )
    .where(Event.id == param("event_id", BigInteger))
    .with_for_update()
    .subquery("e")
)
_locked_types = (
    select(
        TicketType.id,
        TicketType.name,
        TicketType.price,
        TicketType.quantity_available,
        TicketType.is_active,
    )
    .where(TicketType.event_id == _locked_event.c.id, TicketType.id == any_(param("ids", IDS)))
    .order_by(TicketType.id)
    .with_for_update()
    .lateral("t")
)
LOCK_EVENT_AND_TYPES = select(
    _locked_event.c.name,
    _locked_event.c.start_time,
    _locked_event.c.cancelled_at,
    _locked_event.c.total_capacity,
    _locked_event.c.tickets_sold,
    _locked_types.c.id,
    _locked_types.c.name.label("type_name"),
    _locked_types.c.price,
    _locked_types.c.quantity_available,
    _locked_types.c.is_active,
).select_from(_locked_event.join(_locked_types, true()))

LOCK_EVENT = (
    select(
        Event.id,
        Event.name,
        Event.start_time,
        Event.cancelled_at,
        Event.total_capacity,
        Event.tickets_sold,
    )
    .where(Event.id == param("event_id", BigInteger))
    .with_for_update()
)

LOCK_BOOKING = (
    select(Booking.status).where(Booking.id == param("booking_id", BigInteger)).with_for_update()
)

# One round trip writes a booking: counters moved in SQL (guarded by CHECKs), the
# booking and its items inserted, the idempotency key pointed at the booking.
CONFIRM_BOOKING = _bound(
    """
    WITH lines AS (
        SELECT * FROM unnest(:ids, :quantities, :prices) AS l(ticket_type_id, quantity, price)
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available - l.quantity,
            quantity_sold = t.quantity_sold + l.quantity,
            updated_at = now()
        FROM lines l WHERE t.id = l.ticket_type_id
        RETURNING t.id
    ), ev AS (
        UPDATE events SET tickets_sold = tickets_sold + :total, updated_at = now()
        WHERE id = :event_id RETURNING id
    ), b AS (
        INSERT INTO bookings (user_id, event_id, status, total_price)
        VALUES (:user_id, :event_id, 'confirmed', :total_price)
        RETURNING id, booking_reference, created_at, updated_at
    ), items AS (
        INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_at_booking)
        SELECT b.id, l.ticket_type_id, l.quantity, l.price FROM b, lines l
        RETURNING id, ticket_type_id
    ), idem AS (
        UPDATE idempotency_keys SET booking_id = (SELECT id FROM b)
        WHERE user_id = :user_id AND key = :idempotency_key
    )
    SELECT b.id, b.booking_reference, b.created_at, b.updated_at, items.id AS item_id,
           items.ticket_type_id
    FROM b, items
    ORDER BY items.id
    """,
    param("ids", IDS),
    param("quantities", ARRAY(Integer)),
    param("prices", ARRAY(Numeric(10, 2))),
    param("total", Integer),
    param("event_id", BigInteger),
    param("user_id", BigInteger),
    param("total_price", Numeric(14, 2)),  # bookings.total_price: any price x the most tickets
    param("idempotency_key", String),
)

# Cancelling: the booking rows leave `confirmed` (only those still confirmed).
CANCEL_BOOKINGS = _bound(
    """
    UPDATE bookings SET status = 'cancelled', cancelled_at = now(), updated_at = now()
    WHERE id = ANY(:booking_ids) AND status = 'confirmed'
    RETURNING id, cancelled_at, updated_at
    """,
    param("booking_ids", IDS),
)

CANCEL_EVENT_BOOKINGS = _bound(
    """
    UPDATE bookings SET status = 'cancelled', cancelled_at = now(), updated_at = now()
    WHERE event_id = :event_id AND status = 'confirmed'
    RETURNING id
    """,
    param("event_id", BigInteger),
)

# The ticket types of these bookings, locked by ascending id (after the event row).
LOCK_TYPES_OF_BOOKINGS = _bound(
    """
    SELECT id FROM ticket_types
    WHERE id IN (SELECT ticket_type_id FROM booking_items WHERE booking_id = ANY(:booking_ids))
    ORDER BY id FOR UPDATE
    """,
    param("booking_ids", IDS),
)

# The tickets of (just cancelled) bookings back on sale, and off the event's sold count.
RELEASE_SOLD = _bound(
    """
    WITH released AS (
        SELECT ticket_type_id, sum(quantity)::int AS quantity
        FROM booking_items WHERE booking_id = ANY(:booking_ids)
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
    """,
    param("booking_ids", IDS),
    param("event_id", BigInteger),
)
