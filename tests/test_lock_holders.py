"""bench.lock_holders tells what the holder of a contended row lock is doing."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from bench.lock_holders import sample


async def test_a_lock_held_by_an_idle_transaction_is_seen_as_such(database_url: str) -> None:
    url = make_url(database_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    waiter = await asyncpg.connect(dsn)
    try:
        await holder.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY)")
        await holder.execute("INSERT INTO lock_probe VALUES (1) ON CONFLICT DO NOTHING")
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT * FROM lock_probe WHERE id = 1 FOR UPDATE")
        waiting = asyncio.create_task(
            waiter.execute("SELECT * FROM lock_probe WHERE id = 1 FOR UPDATE")
        )
        await asyncio.sleep(0.2)
        samples, tables = await sample(dsn, url.database, seconds=0.3, every=0.01)
        await tx.rollback()
        await waiting
    finally:
        await holder.close()
        await waiter.close()
    assert samples > 0
    holders = tables["lock holders"]
    assert set(holders) == {("idle in transaction", "Client", "ClientRead")}
    assert ("active", "Lock", "transactionid") in tables["all backends"]
