"""Helpers of the hold and waiting-list tests: requests and counters."""

from __future__ import annotations

from sqlalchemy import text


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
