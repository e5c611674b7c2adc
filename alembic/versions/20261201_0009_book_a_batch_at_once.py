"""A batch of bookings at once: book_tickets_many() checks the orders in memory and
writes them with one statement per table.

Since 0008 the bookings of one event that arrive together go to PostgreSQL in one call.
That call booked them one by one: each order was a call of book_tickets() in a
subtransaction of its own that locked the event and its types again, updated their rows
and inserted its booking, items and outbox rows. Under load a batch holds up to 32
orders, and its cost grew with its size: every order's subtransaction took an XID of
its own, and every order left one more version of the event's and each type's row in
the transaction, which the orders after it had to walk. Measured with the shipped
configuration, hot c=64: PostgreSQL CPU per booking 0.77 ms with batches of at most 4
and 1.11 ms with batches of at most 32.

Now the call takes the events of its orders by ascending id, and for each the event's
lock, then its ticket types' by ascending id (the global lock order: keys, then events
by id, each event before its types); checks each of the event's orders against what is
left after the orders before it (the same checks as book_tickets(): the event on sale
as the order saw it, more left of the event and of each type than the order takes, each
type on sale with the name and price the order saw) and moves the event's counter once.
The orders it kept are then written with one UPDATE of the types and one INSERT each of
the bookings, their items, their webhooks and their emails. An order it refuses costs
nothing to undo: it was never written, and its Idempotency-Key is deleted for the
general transaction to claim anew. A batch writes one new version of each event's row
and of each type's.

A batch holds the bookings of any events (the service sends, from each process, the
bookings that arrived during the previous call): spread over 50 events, per-event
batches were mostly of one booking, each with its own round trip and commit. Paired,
shipped configuration, c=64, three turns: spread 1,051, 1,114, 949 -> 1,744, 1,807,
1,824 bookings/s; hot 1,659, 1,295, 1,194 -> 1,158, 1,334, 1,230.

Without ``p_wait`` the call waits for no event another transaction holds (``SKIP
LOCKED``): that event's orders come back "again", untried, their keys released, and the
service sends them once more, then in calls of their own with ``p_wait``, which wait
for the lock. Paired, shipped, c=64, three turns, against waiting for every lock: hot
1,308, 1,270, 1,178 -> 1,255, 1,286, 1,192; spread 1,912, 1,821, 1,815 -> 1,773,
1,803, 1,751 bookings/s. A
batch of many events would otherwise wait for the slowest of their locks, and an event
held long (a cancellation of many bookings) would hold up every booking of the process.

The orders' Idempotency-Keys are still claimed first, sorted, as in 0008.

The function's statements use generic plans (``plan_cache_mode``). PL/pgSQL otherwise
keeps planning each statement anew for its arguments whenever the generic plan's
estimate looks worse than the custom plans', and these statements over the orders'
JSON always look so: pgbench on one booking per call, spread over 50 events, measured
1,180-1,212 TPS at one client with custom plans against 1,476-1,522 with generic plans
and 1,479-1,488 with 0008's functions (64 clients: 1,678-1,799, 2,333-2,523 and
2,292-2,487).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 11:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0008():  # type: ignore[no-untyped-def]
    """Migration 0008's module (its functions' text, for the downgrade)."""
    path = Path(__file__).with_name("20261201_0008_book_in_one_call.py")
    spec = importlib.util.spec_from_file_location("revision_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Orders as JSON objects, each with its event, its booking's ids, reference and time,
# its lines (ids, item_ids, quantities, prices, names: by ascending type id), what the
# lock-free read saw (event_name, event_start, event_end, location), its outbox rows
# (topic, webhook, emails) and its Idempotency-Key. What each became, in order: "booked";
# "general" (refused, or its key was used before: the general transaction decides);
# "key_in_use" (a request with its key is in flight); "again" (without p_wait, its
# event was locked by another transaction: not tried, its key released).
BOOK_TICKETS_MANY = """
CREATE FUNCTION book_tickets_many(p_orders jsonb, p_wait boolean DEFAULT true) RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    k record;
    o jsonb;
    j integer;
    the_event bigint;
    outcomes text[] := array_fill(NULL::text, ARRAY[jsonb_array_length(p_orders)]);
    kept integer[] := '{}';
    ev record;
    room integer;          -- left of the event after the orders kept so far
    types jsonb;           -- {"<id>": {"left": n, "price": p, "name": s}}: on sale, locked
    line jsonb;
    wanted integer;
    fits boolean;
    organizers jsonb := '{}';  -- {"<event id>": organizer id} of the events with kept orders
BEGIN
    -- The keys first, sorted: a key's lock comes before the events' in the global order.
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

    -- The events by ascending id; each event, then its types by ascending id (a fresh
    -- snapshot each: as the last holder of the event's lock left them).
    FOR the_event IN
        SELECT DISTINCT (t.o ->> 'event_id')::bigint FROM jsonb_array_elements(p_orders)
               WITH ORDINALITY AS t(o, n)
        WHERE outcomes[t.n] IS NULL
        ORDER BY 1
    LOOP
        IF p_wait THEN
            SELECT e.name, e.start_time, e.end_time, e.location, e.cancelled_at, e.organizer_id,
                   e.total_capacity - e.tickets_sold - e.tickets_held AS room
            INTO ev FROM events e WHERE e.id = the_event FOR UPDATE;
        ELSE
            SELECT e.name, e.start_time, e.end_time, e.location, e.cancelled_at, e.organizer_id,
                   e.total_capacity - e.tickets_sold - e.tickets_held AS room
            INTO ev FROM events e WHERE e.id = the_event FOR UPDATE SKIP LOCKED;
            IF NOT FOUND AND EXISTS (SELECT FROM events e WHERE e.id = the_event) THEN
                -- Another transaction holds the event: its orders go again, to a call
                -- of their own that waits for it (the other events' need not wait).
                FOR k IN SELECT t.n::integer AS n FROM jsonb_array_elements(p_orders)
                         WITH ORDINALITY AS t(o, n)
                         WHERE (t.o ->> 'event_id')::bigint = the_event
                           AND outcomes[t.n] IS NULL LOOP
                    outcomes[k.n] := 'again';
                END LOOP;
                CONTINUE;
            END IF;
        END IF;
        CONTINUE WHEN NOT FOUND OR ev.cancelled_at IS NOT NULL
                      OR ev.start_time <= clock_timestamp();
        room := ev.room;
        SELECT coalesce(jsonb_object_agg(s.id::text, jsonb_build_object(
                   'left', s.quantity_available, 'price', s.price, 'name', s.name)), '{}')
        INTO types
        FROM (
            SELECT t.id, t.quantity_available, t.price, t.name FROM ticket_types t
            WHERE t.event_id = the_event AND t.is_active
              AND t.id IN (SELECT l.id::bigint FROM jsonb_array_elements(p_orders) AS e(o),
                                jsonb_array_elements_text(e.o -> 'ids') AS l(id)
                           WHERE (e.o ->> 'event_id')::bigint = the_event)
            ORDER BY t.id
            FOR UPDATE OF t
        ) AS s;

        -- Each order against what the orders before it left. One that would take the
        -- event's or a type's last tickets goes the general way (it sells them out).
        FOR k IN SELECT t.n::integer AS n, t.o FROM jsonb_array_elements(p_orders)
                 WITH ORDINALITY AS t(o, n)
                 WHERE (t.o ->> 'event_id')::bigint = the_event AND outcomes[t.n] IS NULL
                 ORDER BY t.n LOOP
            o := k.o;
            wanted := (SELECT sum(q::integer) FROM jsonb_array_elements_text(o -> 'quantities') AS q);
            fits := coalesce(room > wanted
                AND ev.name = o ->> 'event_name'
                AND ev.start_time = (o ->> 'event_start')::timestamptz
                AND ev.end_time IS NOT DISTINCT FROM (o ->> 'event_end')::timestamptz
                AND ev.location = o ->> 'location', false);
            FOR j IN 0 .. jsonb_array_length(o -> 'ids') - 1 LOOP
                EXIT WHEN NOT fits;
                line := types -> (o -> 'ids' ->> j);
                fits := coalesce(line IS NOT NULL
                    AND (line ->> 'left')::integer > (o -> 'quantities' ->> j)::integer
                    AND (line ->> 'price')::numeric = (o -> 'prices' ->> j)::numeric
                    AND line ->> 'name' = o -> 'names' ->> j, false);
            END LOOP;
            CONTINUE WHEN NOT fits;
            room := room - wanted;
            FOR j IN 0 .. jsonb_array_length(o -> 'ids') - 1 LOOP
                types := jsonb_set(types, ARRAY[o -> 'ids' ->> j, 'left'], to_jsonb(
                    (types -> (o -> 'ids' ->> j) ->> 'left')::integer
                    - (o -> 'quantities' ->> j)::integer));
            END LOOP;
            kept := kept || k.n;
            outcomes[k.n] := 'booked';
        END LOOP;
        IF room < ev.room THEN
            UPDATE events SET tickets_sold = tickets_sold + (ev.room - room), updated_at = now()
            WHERE id = the_event;
            organizers := organizers || jsonb_build_object(the_event::text, ev.organizer_id);
        END IF;
    END LOOP;

    -- The orders refused or to go again: their keys go with them (claimed anew).
    DELETE FROM idempotency_keys i
    USING jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n)
    WHERE (outcomes[e.n] IS NULL OR outcomes[e.n] = 'again') AND i.user_id = (e.o ->> 'user_id')::bigint
      AND i.scope = 'bookings' AND i.key = e.o ->> 'idempotency_key' AND i.booking_id IS NULL;
    IF cardinality(kept) = 0 THEN
        RETURN array_replace(outcomes, NULL, 'general');
    END IF;

    -- The orders kept, one statement per table.
    UPDATE ticket_types t
    SET quantity_available = t.quantity_available - s.quantity,
        quantity_sold = t.quantity_sold + s.quantity,
        updated_at = now()
    FROM (
        SELECT l.id::bigint AS id, sum(l.quantity::integer) AS quantity
        FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n),
             ROWS FROM (jsonb_array_elements_text(e.o -> 'ids'),
                        jsonb_array_elements_text(e.o -> 'quantities')) AS l(id, quantity)
        WHERE e.n = ANY(kept)
        GROUP BY 1
    ) AS s
    WHERE t.id = s.id;
    INSERT INTO bookings (id, booking_reference, user_id, event_id, status, total_price,
                          created_at, updated_at)
    SELECT (e.o ->> 'booking_id')::bigint, (e.o ->> 'reference')::uuid,
           (e.o ->> 'user_id')::bigint, (e.o ->> 'event_id')::bigint, 'confirmed',
           (e.o ->> 'total_price')::numeric, (e.o ->> 'at')::timestamptz,
           (e.o ->> 'at')::timestamptz
    FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n)
    WHERE e.n = ANY(kept)
    ORDER BY e.n;
    INSERT INTO booking_items (id, booking_id, ticket_type_id, quantity, price_at_booking)
    SELECT l.item_id::bigint, (e.o ->> 'booking_id')::bigint, l.type_id::bigint,
           l.quantity::integer, l.price::numeric
    FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n),
         ROWS FROM (jsonb_array_elements_text(e.o -> 'item_ids'),
                    jsonb_array_elements_text(e.o -> 'ids'),
                    jsonb_array_elements_text(e.o -> 'quantities'),
                    jsonb_array_elements_text(e.o -> 'prices'))
              WITH ORDINALITY AS l(item_id, type_id, quantity, price, i)
    WHERE e.n = ANY(kept)
    ORDER BY e.n, l.i;
    UPDATE idempotency_keys i SET booking_id = (e.o ->> 'booking_id')::bigint
    FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n)
    WHERE e.n = ANY(kept) AND i.user_id = (e.o ->> 'user_id')::bigint
      AND i.scope = 'bookings' AND i.key = e.o ->> 'idempotency_key';

    -- The outbox (app.outbox.service), in the orders' order: the organizers' subscribed
    -- endpoints, the emails.
    INSERT INTO outbox_messages (channel, topic, endpoint_id, payload)
    SELECT 'webhook', e.o ->> 'topic', w.id, e.o -> 'webhook'
    FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n)
    JOIN webhook_endpoints w
      ON w.organizer_id = (organizers ->> (e.o ->> 'event_id'))::bigint AND w.is_active AND e.o ->> 'topic' = ANY(w.event_types)
    WHERE e.n = ANY(kept)
    ORDER BY e.n, w.id
    FOR KEY SHARE OF w;
    INSERT INTO outbox_messages (channel, topic, payload)
    SELECT 'email', m.m ->> 'kind', m.m
    FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS e(o, n),
         jsonb_array_elements(e.o -> 'emails') WITH ORDINALITY AS m(m, i)
    WHERE e.n = ANY(kept)
    ORDER BY e.n, m.i;
    -- Wake the dispatchers, unless another transaction's NOTIFY is on its way (0008).
    IF pg_try_advisory_xact_lock(723804562) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN array_replace(outcomes, NULL, 'general');
END;
$$
"""


def upgrade() -> None:
    op.execute("DROP FUNCTION book_tickets_many(jsonb)")
    op.execute(BOOK_TICKETS_MANY)
    op.execute(f"DROP FUNCTION {_revision_0008().SIGNATURE}")


def downgrade() -> None:
    previous = _revision_0008()
    op.execute(previous.BOOK_TICKETS)
    op.execute("DROP FUNCTION book_tickets_many(jsonb, boolean)")
    op.execute(previous.BOOK_TICKETS_MANY)
