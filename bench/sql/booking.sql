-- One booking, statement for statement what POST /api/bookings/ sends (app/bookings/service.py):
-- the lock-free read of the account and the event's ticket types (outside the transaction),
-- then BEGIN, the locks (event row, then its ticket types by id, in one statement), the one
-- write with data-modifying CTEs, COMMIT. One ticket, one ticket type.
-- Variables (-D): ev_lo, ev_hi (events to pick from: equal for the hot shape),
-- tt_off (ticket type id = event id + tt_off), u_lo, u_hi (attendee ids).
\set ev random(:ev_lo, :ev_hi)
\set tt :ev + :tt_off
\set uid random(:u_lo, :u_hi)
SELECT u.id, u.username, u.email, u.role, u.is_active, u.password_changed_at,
       (SELECT ARRAY(SELECT t.id FROM ticket_types t
                     WHERE t.event_id = e.id AND t.id = ANY(CAST(ARRAY[:tt] AS bigint[])))
        FROM events e WHERE e.id = :ev) AS own_ids
FROM users u WHERE u.id = :uid;
BEGIN;
SELECT e.name, e.start_time, e.cancelled_at, e.total_capacity, e.tickets_sold,
       t.id, t.name AS type_name, t.price, t.quantity_available, t.is_active
FROM (SELECT id, name, start_time, cancelled_at, total_capacity, tickets_sold
      FROM events WHERE id = :ev FOR UPDATE) e
CROSS JOIN LATERAL (
    SELECT id, name, price, quantity_available, is_active FROM ticket_types
    WHERE event_id = e.id AND id = ANY(CAST(ARRAY[:tt] AS bigint[])) ORDER BY id FOR UPDATE
) t \gset
WITH lines AS (
    SELECT * FROM unnest(CAST(ARRAY[:tt] AS bigint[]), CAST(ARRAY[1] AS int[]),
                         CAST(ARRAY[:price] AS numeric[])) AS l(ticket_type_id, quantity, price)
), tt AS (
    UPDATE ticket_types t
    SET quantity_available = t.quantity_available - l.quantity,
        quantity_sold = t.quantity_sold + l.quantity,
        updated_at = now()
    FROM lines l WHERE t.id = l.ticket_type_id
    RETURNING t.id
), ev AS (
    UPDATE events SET tickets_sold = tickets_sold + 1, updated_at = now()
    WHERE id = :ev RETURNING id
), b AS (
    INSERT INTO bookings (user_id, event_id, status, total_price)
    VALUES (:uid, :ev, 'confirmed', :price)
    RETURNING id, booking_reference, created_at, updated_at
), items AS (
    INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_at_booking)
    SELECT b.id, l.ticket_type_id, l.quantity, l.price FROM b, lines l
    RETURNING id, ticket_type_id
), idem AS (
    UPDATE idempotency_keys SET booking_id = (SELECT id FROM b)
    WHERE user_id = :uid AND key = CAST(NULL AS varchar)
)
SELECT b.id, b.booking_reference, b.created_at, b.updated_at, items.id AS item_id,
       items.ticket_type_id
FROM b, items
ORDER BY items.id;
COMMIT;
