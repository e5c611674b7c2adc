"""Every SQL statement that takes tickets off sale or gives them back.

SQLAlchemy Core statements with named, typed parameters, compiled once to asyncpg's
SQL (``app.core.db.compile_statement``) and run on the request's pooled asyncpg
connection. Counters move in SQL (``quantity_available = quantity_available - n``),
guarded by the tables' CHECK constraints, never read-modified-written in Python.
Only ``app.inventory.service`` runs them (and the pgbench script is generated from
them: ``bench/pgbench_script.py``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    Numeric,
    String,
    Text,
    any_,
    func,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from app.auth.access import ACCOUNT_COLUMNS
from app.auth.models import User
from app.bookings.models import Booking
from app.core.db import param
from app.events.models import Event, TicketType

IDS = ARRAY(BigInteger)


def _bound(sql: str, *params: object) -> object:
    """A ``text()`` statement (data-modifying CTEs) with its named, typed parameters."""
    return text(sql).bindparams(*params)  # type: ignore[arg-type]


# What an order takes, as the first CTEs of the statement that writes it: its lines
# (type, quantity, unit price) and the counters moved from on sale to sold or held.
_LINES = """lines AS (
        SELECT * FROM unnest(:ids, :quantities, :prices) AS l(ticket_type_id, quantity, price)
    )"""


def _take_tickets(to: str, only_if: str = "") -> str:
    """The ``tt`` and ``ev`` CTEs: the lines' tickets from on sale to ``to`` (``sold`` or
    ``held``) on their types and their event, when ``only_if`` (an SQL condition) holds."""
    guard = f" AND {only_if}" if only_if else ""
    return f"""tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available - l.quantity,
            quantity_{to} = t.quantity_{to} + l.quantity,
            updated_at = now()
        FROM lines l WHERE t.id = l.ticket_type_id{guard}
        RETURNING t.id
    ), ev AS (
        UPDATE events SET tickets_{to} = tickets_{to} + :total, updated_at = now()
        WHERE id = :event_id{guard} RETURNING id
    )"""  # noqa: S608 (only this module's constants are put in)


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
ACCOUNT_EVENT_AND_TYPES = select(*ACCOUNT_COLUMNS, _own_ids.label("own_ids")).where(
    User.id == param("user_id", BigInteger)
)

# Lock-free, before a booking: what ACCOUNT_EVENT_AND_TYPES reads, and the order as it
# reads now, for the one-call write (BOOK_TICKETS_MANY): the event's room, name, times and
# place, its types' names and prices by ascending id, ids for the booking and its items.
ACCOUNT_AND_ORDER = _bound(
    f"""
    SELECT {", ".join(f"u.{column.key}" for column in ACCOUNT_COLUMNS)},
           CASE WHEN e.id IS NOT NULL THEN coalesce(t.ids, '{{}}') END AS own_ids,
           e.total_capacity - e.tickets_sold - e.tickets_held AS room,
           e.name, e.start_time, e.end_time, e.location, t.names, t.prices,
           nextval('bookings_id_seq') AS booking_id,
           ARRAY(SELECT nextval('booking_items_id_seq') FROM generate_series(1, :lines))
               AS item_ids
    FROM users u
    LEFT JOIN events e ON e.id = :event_id
    LEFT JOIN LATERAL (
        SELECT array_agg(id ORDER BY id) AS ids, array_agg(name ORDER BY id) AS names,
               array_agg(price ORDER BY id) AS prices
        FROM ticket_types WHERE event_id = e.id AND id = ANY(:ids)
    ) t ON true
    WHERE u.id = :user_id
    """,  # noqa: S608 (only this module's constants are put in)
    param("user_id", BigInteger),
    param("event_id", BigInteger),
    param("ids", IDS),
    param("lines", Integer),
)

# Bookings in one call, a transaction of its own (migrations 0008, 0009):
# the orders as JSON objects; what each became, in order.
BOOK_TICKETS_MANY = _bound(
    "SELECT book_tickets_many(CAST(:orders AS jsonb), :wait)",
    param("orders", Text),
    param("wait", Boolean),
)

# The event row, locked: first in the global lock order.
LOCK_EVENT = (
    select(
        Event.id,
        Event.name,
        Event.start_time,
        Event.end_time,
        Event.location,
        Event.cancelled_at,
        Event.total_capacity,
        Event.tickets_sold,
        Event.tickets_held,
    )
    .where(Event.id == param("event_id", BigInteger))
    .with_for_update()
)

# The locks, in one statement and in the global order: the event row (outer side of
# the nested loop, which LATERAL forces), then its ticket types sorted by id. The event
# comes back even when none of the types is its own any more (type columns NULL).
_locked_event = LOCK_EVENT.subquery("e")
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
    _locked_event.c.end_time,
    _locked_event.c.location,
    _locked_event.c.cancelled_at,
    _locked_event.c.total_capacity,
    _locked_event.c.tickets_sold,
    _locked_event.c.tickets_held,
    _locked_types.c.id,
    _locked_types.c.name.label("type_name"),
    _locked_types.c.price,
    _locked_types.c.quantity_available,
    _locked_types.c.is_active,
).select_from(_locked_event.outerjoin(_locked_types, true()))

LOCK_BOOKING = (
    select(Booking.status).where(Booking.id == param("booking_id", BigInteger)).with_for_update()
)

# One round trip writes a booking: counters moved in SQL (guarded by CHECKs), the
# booking and its items inserted, the idempotency key pointed at the booking.
CONFIRM_BOOKING = _bound(
    f"""
    WITH {_LINES}, {_take_tickets("sold")}, b AS (
        INSERT INTO bookings (user_id, event_id, status, total_price)
        VALUES (:user_id, :event_id, 'confirmed', :total_price)
        RETURNING id, booking_reference, created_at, updated_at
    ), items AS (
        INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_at_booking)
        SELECT b.id, l.ticket_type_id, l.quantity, l.price FROM b, lines l
        RETURNING id, ticket_type_id
    ), idem AS (
        UPDATE idempotency_keys SET booking_id = (SELECT id FROM b)
        WHERE user_id = :user_id AND scope = 'bookings' AND key = :idempotency_key
    )
    SELECT b.id, b.booking_reference, b.created_at, b.updated_at, items.id AS item_id,
           items.ticket_type_id
    FROM b, items
    ORDER BY items.id
    """,  # noqa: S608 (only this module's constants are put in)
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

# ---------------------------------------------------------------- holds

# A hold takes tickets from on sale to held: the hold and its items written, the
# counters moved, the idempotency key (route `holds`) pointed at it. One round trip.
# One active hold per attendee and event is PostgreSQL's to enforce (the partial unique
# index uq_holds_user_id_event_id_active): when the attendee has one, live or expired
# but not yet released, nothing is written and no row comes back. The index sees every
# committed hold whatever the statement's snapshot, and every hold of an event is
# written under that event's lock, so the answer is exact.
PLACE_HOLD = _bound(
    f"""
    WITH {_LINES}, h AS (
        INSERT INTO holds (user_id, event_id, status, total_price, expires_at)
        VALUES (:user_id, :event_id, 'active', :total_price,
                now() + make_interval(secs => :ttl_seconds))
        ON CONFLICT (user_id, event_id) WHERE status = 'active' DO NOTHING
        RETURNING id, hold_reference, created_at, expires_at
    ), {_take_tickets("held", only_if="EXISTS (SELECT FROM h)")}, items AS (
        INSERT INTO hold_items (hold_id, ticket_type_id, quantity, unit_price)
        SELECT h.id, l.ticket_type_id, l.quantity, l.price FROM h, lines l
    ), idem AS (
        UPDATE idempotency_keys SET hold_id = (SELECT id FROM h)
        WHERE user_id = :user_id AND scope = 'holds' AND key = :idempotency_key
    )
    SELECT id, hold_reference, created_at, expires_at FROM h
    """,  # noqa: S608 (only this module's constants are put in)
    param("ids", IDS),
    param("quantities", ARRAY(Integer)),
    param("prices", ARRAY(Numeric(10, 2))),
    param("total", Integer),
    param("event_id", BigInteger),
    param("user_id", BigInteger),
    param("total_price", Numeric(14, 2)),
    param("ttl_seconds", Integer),
    param("idempotency_key", String),
)

# The attendee's active hold on the event, if any (the caller holds the event lock).
ACTIVE_HOLD_OF_USER = _bound(
    """
    SELECT id, expires_at <= now() AS expired FROM holds
    WHERE user_id = :user_id AND event_id = :event_id AND status = 'active'
    """,
    param("user_id", BigInteger),
    param("event_id", BigInteger),
)

# A hold row locked after its event's row; its status as stored and as it reads now.
LOCK_HOLD = _bound(
    """
    SELECT id, event_id, user_id, status, booking_id, total_price,
           status = 'active' AND expires_at <= now() AS expired
    FROM holds WHERE id = :hold_id FOR UPDATE
    """,
    param("hold_id", BigInteger),
)

# Active holds of an event past their time, locked; SKIP LOCKED so that two sweepers
# (workers, replicas) never take the same one.
LOCK_EXPIRED_HOLDS = _bound(
    """
    SELECT id FROM holds
    WHERE event_id = :event_id AND status = 'active' AND expires_at <= now()
    ORDER BY id FOR UPDATE SKIP LOCKED
    """,
    param("event_id", BigInteger),
)

LOCK_ACTIVE_HOLDS = _bound(
    """
    SELECT id FROM holds WHERE event_id = :event_id AND status = 'active'
    ORDER BY id FOR UPDATE
    """,
    param("event_id", BigInteger),
)

# Events with expired active holds, for the sweeper (no lock: it locks each event next).
EVENTS_WITH_EXPIRED_HOLDS = _bound(
    """
    SELECT DISTINCT event_id FROM holds
    WHERE status = 'active' AND expires_at <= now()
    LIMIT :limit
    """,
    param("limit", Integer),
)

# The sweeper's event lock: an event another transaction is changing is left for later
# (that transaction releases expired holds itself when it needs their tickets).
LOCK_EVENT_SKIP_LOCKED = (
    select(Event.id)
    .where(Event.id == param("event_id", BigInteger))
    .with_for_update(skip_locked=True)
)

LOCK_TYPES_OF_HOLDS = _bound(
    """
    SELECT id FROM ticket_types
    WHERE id IN (SELECT ticket_type_id FROM hold_items WHERE hold_id = ANY(:hold_ids))
    ORDER BY id FOR UPDATE
    """,
    param("hold_ids", IDS),
)

# Holds end (`released` or `expired`): their tickets go back on sale, once: only rows
# still `active` change, and the counters move by what those rows held.
END_HOLDS = _bound(
    """
    WITH h AS (
        UPDATE holds SET status = :status, ended_at = now()
        WHERE id = ANY(:hold_ids) AND status = 'active'
        RETURNING id
    ), released AS (
        SELECT ticket_type_id, sum(quantity)::int AS quantity
        FROM hold_items WHERE hold_id IN (SELECT id FROM h)
        GROUP BY ticket_type_id
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_available = t.quantity_available + r.quantity,
            quantity_held = t.quantity_held - r.quantity,
            updated_at = now()
        FROM released r WHERE t.id = r.ticket_type_id
        RETURNING r.quantity
    ), ev AS (
        UPDATE events
        SET tickets_held = tickets_held - (SELECT coalesce(sum(quantity), 0) FROM tt),
            updated_at = now()
        WHERE id = :event_id
    )
    SELECT id FROM h
    """,
    param("status", String),
    param("hold_ids", IDS),
    param("event_id", BigInteger),
)

# Checkout: the held tickets move to sold (never back on sale in between), the booking
# is written at the hold's prices, the hold points at it. One round trip; rows: one
# per item (booking columns repeated), by item id.
CHECKOUT_HOLD = _bound(
    """
    WITH lines AS (
        SELECT ticket_type_id, quantity, unit_price FROM hold_items WHERE hold_id = :hold_id
    ), tt AS (
        UPDATE ticket_types t
        SET quantity_held = t.quantity_held - l.quantity,
            quantity_sold = t.quantity_sold + l.quantity,
            updated_at = now()
        FROM lines l WHERE t.id = l.ticket_type_id
        RETURNING l.quantity
    ), ev AS (
        UPDATE events
        SET tickets_held = tickets_held - (SELECT sum(quantity) FROM lines),
            tickets_sold = tickets_sold + (SELECT sum(quantity) FROM lines),
            updated_at = now()
        WHERE id = :event_id
    ), b AS (
        INSERT INTO bookings (user_id, event_id, status, total_price, payment_reference)
        SELECT user_id, event_id, 'confirmed', total_price, :payment_reference
        FROM holds WHERE id = :hold_id
        RETURNING id, booking_reference, total_price, payment_reference, created_at, updated_at
    ), items AS (
        INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_at_booking)
        SELECT b.id, l.ticket_type_id, l.quantity, l.unit_price FROM b, lines l
        RETURNING id, ticket_type_id, quantity, price_at_booking
    ), h AS (
        UPDATE holds SET status = 'converted', ended_at = now(), booking_id = (SELECT id FROM b)
        WHERE id = :hold_id
    ), offer AS (
        UPDATE waitlist_entries SET status = 'converted', ended_at = now()
        WHERE hold_id = :hold_id AND status = 'offered'
    )
    SELECT b.id, b.booking_reference, b.total_price, b.payment_reference, b.created_at,
           b.updated_at, i.id AS item_id, i.ticket_type_id, t.name AS ticket_type_name,
           i.quantity, i.price_at_booking
    FROM b, items i JOIN ticket_types t ON t.id = i.ticket_type_id
    ORDER BY i.id
    """,
    param("hold_id", BigInteger),
    param("event_id", BigInteger),
    param("payment_reference", String),
)

# ---------------------------------------------------------------- waiting lists

# The line of an event: waiting entries in joining order, with what their type has on
# sale now (read under the event's lock, which every change of these counters takes).
WAITING_LINE = _bound(
    """
    SELECT w.id, w.user_id, w.ticket_type_id, w.quantity,
           t.name AS type_name, t.price, t.is_active, t.quantity_available
    FROM waitlist_entries w JOIN ticket_types t ON t.id = w.ticket_type_id
    WHERE w.event_id = :event_id AND w.status = 'waiting'
    ORDER BY w.created_at, w.id
    """,
    param("event_id", BigInteger),
)

EVENT_ROOM = _bound(
    """
    SELECT name, start_time, end_time, location, cancelled_at,
           total_capacity - tickets_sold - tickets_held AS room,
           ARRAY(SELECT user_id FROM holds
                 WHERE event_id = events.id AND status = 'active') AS holding_users
    FROM events WHERE id = :event_id
    """,
    param("event_id", BigInteger),
)

MARK_OFFERED = _bound(
    """
    UPDATE waitlist_entries w SET status = 'offered', hold_id = :hold_id, offered_at = now()
    FROM users u WHERE w.id = :entry_id AND u.id = w.user_id
    RETURNING u.email, u.username
    """,
    param("hold_id", BigInteger),
    param("entry_id", BigInteger),
)

# The entries whose offered hold ended: `expired`, `left` (released) or `converted`.
END_OFFERS = _bound(
    """
    UPDATE waitlist_entries SET status = :status, ended_at = now()
    WHERE hold_id = ANY(:hold_ids) AND status = 'offered'
    """,
    param("status", String),
    param("hold_ids", IDS),
)

LEAVE_EVENT_WAITLIST = _bound(
    """
    UPDATE waitlist_entries SET status = 'left', ended_at = now()
    WHERE event_id = :event_id AND status IN ('waiting', 'offered')
    """,
    param("event_id", BigInteger),
)

# Whether the event has any active ticket type with tickets on sale (for sold_out).
ANY_ON_SALE = _bound(
    """
    SELECT EXISTS (SELECT 1 FROM ticket_types
                   WHERE event_id = :event_id AND is_active AND quantity_available > 0)
    """,
    param("event_id", BigInteger),
)

# The organizer sets what is left to sell of a type (its row locked after the event's).
SET_QUANTITY_AVAILABLE = _bound(
    """
    UPDATE ticket_types SET quantity_available = :quantity, updated_at = now()
    WHERE id = :ticket_type_id
    RETURNING quantity_available
    """,
    param("quantity", Integer),
    param("ticket_type_id", BigInteger),
)

# Joining a line: the event row, then the ticket type's, locked; what a booking of it
# would find now.
LOCK_EVENT_AND_TYPE = _bound(
    """
    SELECT e.start_time, e.cancelled_at, e.total_capacity - e.tickets_sold - e.tickets_held
             AS room,
           t.id AS ticket_type_id, t.event_id AS type_event_id, t.quantity_available,
           t.is_active
    FROM (SELECT * FROM events WHERE id = :event_id FOR UPDATE) e
    LEFT JOIN LATERAL (SELECT id, event_id, quantity_available, is_active FROM ticket_types
                       WHERE id = :ticket_type_id FOR UPDATE) t ON true
    """,
    param("event_id", BigInteger),
    param("ticket_type_id", BigInteger),
)

# A waiting entry, locked after its event's row; its offered hold, if active.
LOCK_ENTRY = _bound(
    """
    SELECT w.id, w.status, w.hold_id FROM waitlist_entries w WHERE w.id = :entry_id FOR UPDATE
    """,
    param("entry_id", BigInteger),
)

LEAVE_ENTRY = _bound(
    """
    UPDATE waitlist_entries SET status = 'left', ended_at = now()
    WHERE id = :entry_id AND status IN ('waiting', 'offered')
    """,
    param("entry_id", BigInteger),
)

# Checkout's locks in one statement, in the global order: the event row, the hold's row,
# then the hold's ticket types by ascending id (LATERAL: each is the outer side of the next).
LOCK_EVENT_HOLD_AND_TYPES = _bound(
    """
    SELECT e.name, e.start_time, e.end_time, e.location, h.id, h.status, h.booking_id,
           h.expired, t.id AS ticket_type_id
    FROM (
        SELECT id, name, start_time, end_time, location FROM events
        WHERE id = :event_id FOR UPDATE
    ) e
    CROSS JOIN LATERAL (
        SELECT id, status, booking_id, status = 'active' AND expires_at <= now() AS expired
        FROM holds WHERE id = :hold_id AND event_id = e.id FOR UPDATE
    ) h
    CROSS JOIN LATERAL (
        SELECT id FROM ticket_types
        WHERE id IN (SELECT ticket_type_id FROM hold_items WHERE hold_id = h.id)
        ORDER BY id FOR UPDATE
    ) t
    """,
    param("event_id", BigInteger),
    param("hold_id", BigInteger),
)
