-- Every broken invariant of the counters as one row in words (none when the data is
-- consistent). The tests run it after every storm and the bench after every run.
-- issued_tickets (ticket_type_id, quantity): what was put on sale per ticket type, where
-- known; available + held + sold must add up to it.
WITH confirmed AS (
    SELECT bi.ticket_type_id, sum(bi.quantity) AS quantity
    FROM booking_items bi JOIN bookings b ON b.id = bi.booking_id
    WHERE b.status = 'confirmed'
    GROUP BY bi.ticket_type_id
), held AS (
    SELECT hi.ticket_type_id, sum(hi.quantity) AS quantity
    FROM hold_items hi JOIN holds h ON h.id = hi.hold_id
    WHERE h.status = 'active'
    GROUP BY hi.ticket_type_id
), per_event AS (
    SELECT event_id, sum(quantity_sold) AS sold, sum(quantity_held) AS held
    FROM ticket_types GROUP BY event_id
)
SELECT format('ticket type %s: quantity_sold %s != %s tickets in confirmed bookings',
              t.id, t.quantity_sold, coalesce(c.quantity, 0))
FROM ticket_types t LEFT JOIN confirmed c ON c.ticket_type_id = t.id
WHERE t.quantity_sold <> coalesce(c.quantity, 0)
UNION ALL
SELECT format('ticket type %s: quantity_held %s != %s tickets in active holds',
              t.id, t.quantity_held, coalesce(h.quantity, 0))
FROM ticket_types t LEFT JOIN held h ON h.ticket_type_id = t.id
WHERE t.quantity_held <> coalesce(h.quantity, 0)
UNION ALL
SELECT format('ticket type %s: quantity_available %s < 0', id, quantity_available)
FROM ticket_types WHERE quantity_available < 0
UNION ALL
SELECT format('ticket type %s: available %s + held %s + sold %s != issued %s',
              t.id, t.quantity_available, t.quantity_held, t.quantity_sold, i.quantity)
FROM ticket_types t JOIN issued_tickets i ON i.ticket_type_id = t.id
WHERE t.quantity_available + t.quantity_held + t.quantity_sold <> i.quantity
UNION ALL
SELECT format('event %s: tickets_sold %s != %s sold over its ticket types',
              e.id, e.tickets_sold, coalesce(p.sold, 0))
FROM events e LEFT JOIN per_event p ON p.event_id = e.id
WHERE e.tickets_sold <> coalesce(p.sold, 0)
UNION ALL
SELECT format('event %s: tickets_held %s != %s held over its ticket types',
              e.id, e.tickets_held, coalesce(p.held, 0))
FROM events e LEFT JOIN per_event p ON p.event_id = e.id
WHERE e.tickets_held <> coalesce(p.held, 0)
UNION ALL
SELECT format('event %s: tickets_sold %s + tickets_held %s > total_capacity %s',
              id, tickets_sold, tickets_held, total_capacity)
FROM events WHERE tickets_sold + tickets_held > total_capacity
UNION ALL
SELECT format('hold %s: status %s with booking %s', h.id, h.status, h.booking_id)
FROM holds h
WHERE (h.status = 'converted') <> (h.booking_id IS NOT NULL)
   OR (h.status = 'converted' AND NOT EXISTS (
         SELECT 1 FROM booking_items bi WHERE bi.booking_id = h.booking_id))
UNION ALL
SELECT format('waiting-list entry %s: offered without an active hold', w.id)
FROM waitlist_entries w
WHERE w.status = 'offered' AND NOT EXISTS (
    SELECT 1 FROM holds h WHERE h.id = w.hold_id AND h.status = 'active')
