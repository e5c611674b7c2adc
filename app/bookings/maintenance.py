"""Periodic upkeep of booking data: expired idempotency keys."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bookings.service import purge_expired_idempotency_keys
from app.core.db import UnitOfWork

logger = logging.getLogger("app.bookings")


async def purge_idempotency_keys_forever(
    sessionmaker: async_sessionmaker[AsyncSession], ttl_hours: int, every_seconds: float = 3600
) -> None:
    """Delete idempotency keys older than their TTL, once an hour, in every worker.

    Running it in several workers at once is harmless: the DELETE is idempotent.
    """
    while True:
        try:
            async with UnitOfWork(sessionmaker) as uow:
                removed = await purge_expired_idempotency_keys(uow.session, ttl_hours)
            if removed:
                logger.info("removed %d expired idempotency keys", removed)
        except Exception:
            logger.warning("could not purge expired idempotency keys", exc_info=True)
        await asyncio.sleep(every_seconds)
