"""Bookings in one call: book_tickets_many() locks, checks and writes inside PostgreSQL.

The service sends the common bookings of one event in one call (one or several: those
that arrived while the previous call ran), a transaction of its own: the event's row
lock is held for the call's run and the commit that follows it, with no client round
trip under it, and one lock hand-off and one commit flush serve the whole batch.
Their Idempotency-Keys are claimed first, sorted (a key's lock comes before the
event's in the global order). Each order is then booked by book_tickets() in a
subtransaction of its own. book_tickets() does the common case only: whatever is
unusual (a refusal, an order that takes an event's or a type's last tickets, a name
or price changed since the service read them) raises SQLSTATE EB001, that order alone
is undone, and the service runs its general transaction for it
(``app.inventory.service``).

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
    p_event_start timestamptz, p_event_end timestamptz, p_location text, p_topic text,
    p_webhook jsonb, p_emails jsonb
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
# became, in order: "booked"; "general" (refused by book_tickets() and undone, or its
# Idempotency-Key was used before: the general transaction decides); "key_in_use" (a
# request with its key is in flight). The orders' keys are claimed first, in one order
# (user, key), so that the global lock order holds: keys, then the event, then types.
BOOK_TICKETS_MANY = """
CREATE FUNCTION book_tickets_many(p_orders jsonb) RETURNS text[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    o jsonb;
    k record;
    i integer := 0;
    outcomes text[] := array_fill(NULL::text, ARRAY[jsonb_array_length(p_orders)]);
BEGIN
    FOR k IN
        SELECT t.n::integer AS n, t.o FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS t(o, n)
        WHERE t.o ->> 'idempotency_key' IS NOT NULL
        ORDER BY (t.o ->> 'user_id')::bigint, t.o ->> 'idempotency_key'
    LOOP
        BEGIN
            INSERT INTO idempotency_keys (user_id, scope, key, request_hash)
            VALUES ((k.o ->> 'user_id')::bigint, 'bookings', k.o ->> 'idempotency_key',
                    k.o ->> 'request_hash')
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                outcomes[k.n] := 'general';
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            outcomes[k.n] := 'key_in_use';
        END;
    END LOOP;

    FOR o IN SELECT value FROM jsonb_array_elements(p_orders) LOOP
        i := i + 1;
        CONTINUE WHEN outcomes[i] IS NOT NULL;
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
                o ->> 'location', o ->> 'topic', o -> 'webhook', o -> 'emails'
            );
            IF o ->> 'idempotency_key' IS NOT NULL THEN
                UPDATE idempotency_keys SET booking_id = (o ->> 'booking_id')::bigint
                WHERE user_id = (o ->> 'user_id')::bigint AND scope = 'bookings'
                  AND key = o ->> 'idempotency_key';
            END IF;
            outcomes[i] := 'booked';
        EXCEPTION WHEN SQLSTATE 'EB001' THEN
            outcomes[i] := 'general';
            -- The key goes with the refused order: the general transaction claims it anew.
            DELETE FROM idempotency_keys
            WHERE user_id = (o ->> 'user_id')::bigint AND scope = 'bookings'
              AND key = o ->> 'idempotency_key' AND booking_id IS NULL;
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
