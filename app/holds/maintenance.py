"""The sweeper: expired holds back on sale within seconds, each exactly once.

With Redis it is an arq cron job of the worker (``app.worker``); without Redis every
web worker runs it as a periodic task. Several sweepers at once are harmless: each
event is taken with ``FOR UPDATE SKIP LOCKED`` (and its expired holds too), so an
event another transaction is changing is left to that transaction or the next sweep,
and no hold is released twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import UnitOfWork, raw_connection
from app.inventory import service as inventory
from app.inventory.service import Aftermath, Offer

logger = logging.getLogger("app.holds")


async def sweep_expired_holds(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> Aftermath:
    """One sweep: every event with expired active holds, one transaction per event.
    Returns the offers made to waiting entries (to email once committed)."""
    aftermath = Aftermath()
    async with UnitOfWork(sessionmaker) as uow:
        event_ids = await inventory.events_with_expired_holds(await raw_connection(uow.session))
    for event_id in event_ids:
        done = Aftermath()
        async with UnitOfWork(sessionmaker) as uow:
            await inventory.sweep_event(
                await raw_connection(uow.session),
                event_id,
                settings.waitlist_offer_ttl_seconds,
                done,
            )
        aftermath.offers += done.offers  # committed
    return aftermath


async def sweep_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    notify: Callable[[list[Offer]], None],
) -> None:
    """Sweep every HOLD_SWEEP_INTERVAL_SECONDS, in this process, until cancelled."""
    while True:
        await asyncio.sleep(settings.hold_sweep_interval_seconds)
        try:
            aftermath = await sweep_expired_holds(sessionmaker, settings)
            notify(aftermath.offers)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("could not sweep expired holds", exc_info=True)
