"""Helpers of the hold and waiting-list tests: requests and counters."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import auth


def order(event_id, *items):
    return {"event_id": event_id, "items": [{"ticket_type_id": t, "quantity": q} for t, q in items]}


async def hold(client, user, event_id, *items, key=None):
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    return await client.post("/api/holds/", json=order(event_id, *items), headers=headers)


async def book(client, user, event_id, *items, key=None):
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    return await client.post("/api/bookings/", json=order(event_id, *items), headers=headers)


async def checkout(client, user, ref, payment_reference=None):
    body = {} if payment_reference is None else {"payment_reference": payment_reference}
    return await client.post(f"/api/holds/{ref}/checkout/", json=body, headers=auth(user))


async def type_counters(db, *ids):
    """{id: (available, held, sold)}"""
    async with db() as s:
        rows = await s.execute(
            text(
                "SELECT id, quantity_available, quantity_held, quantity_sold FROM ticket_types "
                "WHERE id = ANY(:i)"
            ),
            {"i": list(ids)},
        )
        return {r.id: (r.quantity_available, r.quantity_held, r.quantity_sold) for r in rows}


async def event_counters(db, event_id):
    """(sold, held)"""
    async with db() as s:
        row = (
            await s.execute(
                text("SELECT tickets_sold, tickets_held FROM events WHERE id = :i"), {"i": event_id}
            )
        ).one()
        return row.tickets_sold, row.tickets_held


async def expire(db, ref):
    """Move a hold's deadline into the past, as time passing would."""
    async with db() as s, s.begin():
        await s.execute(
            text(
                "UPDATE holds SET expires_at = now() - interval '1 second' "
                "WHERE hold_reference = :r"
            ),
            {"r": ref},
        )
