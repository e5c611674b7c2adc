"""A booking in one call: book_tickets() locks, checks and writes inside PostgreSQL.

The function holds the event's row lock only for its own run and the commit that
follows it (the call is a transaction of its own): no client round trip happens
under the lock. It does the common case only. Whatever is unusual (a refusal, an
order that takes an event's or a type's last tickets, a changed price or name, an
Idempotency-Key already used) raises SQLSTATE EB001 before anything is kept, and the
service runs its general transaction instead (``app.inventory.service``).

book_tickets_many() runs several bookings of one event in one call and one
transaction, each in a subtransaction of its own (a refused one is undone alone):
one lock hand-off and one commit flush for all of them. Its orders carry no
Idempotency-Key (a key's lock comes before the event's in the global order).

A booking wakes the outbox's dispatchers with NOTIFY unless another booking's NOTIFY
is on its way (``pg_try_advisory_xact_lock``): notifying transactions otherwise
commit one at a time, database-wide.

Under READ COMMITTED each statement of a VOLATILE function takes a fresh snapshot,
so the ticket types read after the event's lock was granted are as the last holder
of that lock left them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = """book_tickets(
    p_user_id bigint, p_event_id bigint, p_booking_id bigint, p_reference uuid,
    p_at timestamptz, p_type_ids bigint[], p_item_ids bigint[], p_quantities integer[],
    p_prices numeric[], p_type_names text[], p_total_price numeric, p_event_name text,
    p_event_start timestamptz, p_event_end timestamptz, p_location text,
    p_idempotency_key text, p_request_hash text, p_topic text, p_webhook jsonb,
    p_emails jsonb
)"""

BOOK_TICKETS = f"""
CREATE FUNCTION {SIGNATURE} RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ev record;
    wanted integer := (SELECT sum(q) FROM unnest(p_quantities) AS q);
    locked integer;
BEGIN
    -- The Idempotency-Key first (the global order: key, event, types).
    IF p_idempotency_key IS NOT NULL THEN
        BEGIN
            INSERT INTO idempotency_keys (user_id, scope, key, request_hash)
            VALUES (p_user_id, 'bookings', p_idempotency_key, p_request_hash)
            ON CONFLICT DO NOTHING;
        EXCEPTION WHEN lock_not_available THEN  -- a request with this key is in flight
            RAISE EXCEPTION 'idempotency key in use' USING ERRCODE = 'EB002';
        END;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key used before' USING ERRCODE = 'EB001';
        END IF;
    END IF;

    SELECT name, start_time, end_time, location, cancelled_at,
           total_capacity - tickets_sold - tickets_held AS room
    INTO ev FROM events WHERE id = p_event_id FOR UPDATE;
    IF NOT FOUND OR ev.cancelled_at IS NOT NULL OR ev.start_time <= clock_timestamp()
       OR ev.room <= wanted  -- an order that sells the event out goes the general way
       OR ev.name <> p_event_name OR ev.start_time <> p_event_start
       OR ev.end_time IS DISTINCT FROM p_event_end OR ev.location <> p_location THEN
        RAISE EXCEPTION 'not the common case' USING ERRCODE = 'EB001';
    END IF;

    -- The types by ascending id, locked; only those on sale as the order saw them
    -- (name and price) with more left than it takes.
    SELECT count(*) INTO locked FROM (
        SELECT t.id FROM ticket_types t
        JOIN unnest(p_type_ids, p_quantities, p_prices, p_type_names)
             AS l(id, quantity, price, name) ON l.id = t.id
        WHERE t.event_id = p_event_id AND t.is_active AND t.quantity_available > l.quantity
          AND t.price = l.price AND t.name = l.name
        ORDER BY t.id
        FOR UPDATE OF t
    ) AS on_sale;
    IF locked <> cardinality(p_type_ids) THEN
        RAISE EXCEPTION 'not the common case' USING ERRCODE = 'EB001';
    END IF;

    UPDATE ticket_types t
    SET quantity_available = t.quantity_available - l.quantity,
        quantity_sold = t.quantity_sold + l.quantity,
        updated_at = now()
    FROM unnest(p_type_ids, p_quantities) AS l(id, quantity)
    WHERE t.id = l.id;
    UPDATE events SET tickets_sold = tickets_sold + wanted, updated_at = now()
    WHERE id = p_event_id;
    INSERT INTO bookings (id, booking_reference, user_id, event_id, status, total_price,
                          created_at, updated_at)
    VALUES (p_booking_id, p_reference, p_user_id, p_event_id, 'confirmed', p_total_price,
            p_at, p_at);
    INSERT INTO booking_items (id, booking_id, ticket_type_id, quantity, price_at_booking)
    SELECT l.item_id, p_booking_id, l.type_id, l.quantity, l.price
    FROM unnest(p_item_ids, p_type_ids, p_quantities, p_prices)
         AS l(item_id, type_id, quantity, price);
    IF p_idempotency_key IS NOT NULL THEN
        UPDATE idempotency_keys SET booking_id = p_booking_id
        WHERE user_id = p_user_id AND scope = 'bookings' AND key = p_idempotency_key;
    END IF;

    -- The outbox (app.outbox.service): the organizer's subscribed endpoints, the emails.
    INSERT INTO outbox_messages (channel, topic, endpoint_id, payload)
    SELECT 'webhook', p_topic, w.id, p_webhook
    FROM webhook_endpoints w
    WHERE w.organizer_id = (SELECT organizer_id FROM events WHERE id = p_event_id)
      AND w.is_active AND p_topic = ANY(w.event_types)
    FOR KEY SHARE OF w;
    INSERT INTO outbox_messages (channel, topic, payload)
    SELECT 'email', m ->> 'kind', m FROM jsonb_array_elements(p_emails) AS m;
    -- Wake the dispatchers. A transaction that notifies holds a database-wide lock
    -- through its commit, so notifying bookings would commit one at a time: while
    -- another booking holds the wake-up (it commits now, and its NOTIFY wakes the
    -- dispatchers), this one leaves it to that one, to the dispatcher's gathering
    -- during a stream of commits, or at the latest to its poll (OUTBOX_POLL_SECONDS).
    IF pg_try_advisory_xact_lock(723804562) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
END;
$$
"""  # noqa: S608 (the signature is this module's constant)


# Orders as JSON objects with book_tickets()'s parameters by name (no "p_"); what each
# became, in order: "booked", or "general" (refused by book_tickets(), undone).
BOOK_TICKETS_MANY = """
CREATE FUNCTION book_tickets_many(p_orders jsonb) RETURNS text[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    o jsonb;
    outcomes text[] := '{}';
BEGIN
    FOR o IN SELECT value FROM jsonb_array_elements(p_orders) LOOP
        BEGIN
            PERFORM book_tickets(
                (o ->> 'user_id')::bigint, (o ->> 'event_id')::bigint,
                (o ->> 'booking_id')::bigint, (o ->> 'reference')::uuid,
                (o ->> 'at')::timestamptz,
                ARRAY(SELECT jsonb_array_elements_text(o -> 'ids'))::bigint[],
                ARRAY(SELECT jsonb_array_elements_text(o -> 'item_ids'))::bigint[],
                ARRAY(SELECT jsonb_array_elements_text(o -> 'quantities'))::integer[],
                ARRAY(SELECT jsonb_array_elements_text(o -> 'prices'))::numeric[],
                ARRAY(SELECT jsonb_array_elements_text(o -> 'names')),
                (o ->> 'total_price')::numeric, o ->> 'event_name',
                (o ->> 'event_start')::timestamptz, (o ->> 'event_end')::timestamptz,
                o ->> 'location', NULL, NULL, o ->> 'topic', o -> 'webhook', o -> 'emails'
            );
            outcomes := outcomes || 'booked'::text;
        EXCEPTION WHEN SQLSTATE 'EB001' THEN
            outcomes := outcomes || 'general'::text;
        END;
    END LOOP;
    RETURN outcomes;
END;
$$
"""


def upgrade() -> None:
    op.execute(BOOK_TICKETS)
    op.execute(BOOK_TICKETS_MANY)


def downgrade() -> None:
    op.execute("DROP FUNCTION book_tickets_many(jsonb)")
    op.execute(f"DROP FUNCTION {SIGNATURE}")
