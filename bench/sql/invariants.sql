-- Every broken invariant as one row (none when the data is consistent).
-- bench_issued holds what the bench issued per ticket type when it seeded them.
WITH confirmed AS (
    SELECT bi.ticket_type_id, sum(bi.quantity) AS quantity
    FROM booking_items bi JOIN bookings b ON b.id = bi.booking_id
    WHERE b.status = 'confirmed'
    GROUP BY bi.ticket_type_id
), per_event AS (
    SELECT event_id, sum(quantity_sold) AS sold FROM ticket_types GROUP BY event_id
)
SELECT format('ticket type %s: quantity_sold %s != %s tickets in confirmed bookings',
              t.id, t.quantity_sold, coalesce(c.quantity, 0))
FROM ticket_types t LEFT JOIN confirmed c ON c.ticket_type_id = t.id
WHERE t.quantity_sold <> coalesce(c.quantity, 0)
UNION ALL
SELECT format('ticket type %s: available %s + sold %s != issued %s',
              t.id, t.quantity_available, t.quantity_sold, i.quantity)
FROM ticket_types t JOIN bench_issued i ON i.ticket_type_id = t.id
WHERE t.quantity_available + t.quantity_sold <> i.quantity OR t.quantity_available < 0
UNION ALL
SELECT format('event %s: tickets_sold %s != %s sold over its ticket types',
              e.id, e.tickets_sold, coalesce(p.sold, 0))
FROM events e LEFT JOIN per_event p ON p.event_id = e.id
WHERE e.tickets_sold <> coalesce(p.sold, 0)
UNION ALL
SELECT format('event %s: tickets_sold %s > total_capacity %s', id, tickets_sold, total_capacity)
FROM events WHERE tickets_sold > total_capacity
