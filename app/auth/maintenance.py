"""Periodic upkeep of auth data: refresh tokens past their expiry."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.service import purge_expired_refresh_tokens
from app.core.db import UnitOfWork

logger = logging.getLogger("app.auth")


async def purge_refresh_tokens_forever(
    sessionmaker: async_sessionmaker[AsyncSession], every_seconds: float = 3600
) -> None:
    """Delete expired refresh tokens once an hour, in every worker (the DELETE is idempotent)."""
    while True:
        try:
            async with UnitOfWork(sessionmaker) as uow:
                removed = await purge_expired_refresh_tokens(uow.session)
            if removed:
                logger.info("removed %d expired refresh tokens", removed)
        except Exception:
            logger.warning("could not purge expired refresh tokens", exc_info=True)
        await asyncio.sleep(every_seconds)
