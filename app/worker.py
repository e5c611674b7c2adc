"""The background worker: arq's WorkerSettings for `python -m app worker`."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, create_worker

from app.core.config import Settings, get_settings
from app.core.redis import DEFAULT_KEY_PREFIX
from app.notifications.jobs import MAX_TRIES, deserialize_job, send_email, serialize_job
from app.notifications.outbox import queue_name

logger = logging.getLogger("app.worker")


async def startup(ctx: dict[str, Any]) -> None:
    ctx.setdefault("settings", get_settings())
    logger.info("worker ready")


async def shutdown(ctx: dict[str, Any]) -> None:
    engine = ctx.pop("engine", None)
    if engine is not None:
        await engine.dispose()


async def sweep_holds(ctx: dict[str, Any]) -> int:
    """The cron job: expired holds back on sale; offers made are emailed through the queue.

    The database is opened on the first sweep (the email jobs never need it)."""
    from app.core.db import create_engine, make_sessionmaker
    from app.holds.maintenance import sweep_expired_holds
    from app.notifications.service import waitlist_offer_email

    settings: Settings = ctx["settings"]
    if "sessionmaker" not in ctx:
        ctx["engine"] = create_engine(settings, pool_size=2, max_overflow=0)
        ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    aftermath = await sweep_expired_holds(ctx["sessionmaker"], settings)
    for offer in aftermath.offers:
        email = waitlist_offer_email(offer)
        # The worker's own pool: its default queue is the one this worker serves.
        await ctx["redis"].enqueue_job("send_email", email, _job_id=email.job_id)
    return len(aftermath.offers)


class WorkerSettings:
    """What the worker runs: the email job, retried up to MAX_TRIES times with backoff."""

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
    # Emails are not results anyone reads back; keep them an hour for debugging.
    keep_result = 3600


def make_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq worker on REDIS_URL with the settings given (the CLI and tests use it)."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: the worker takes its jobs from Redis")
    options: dict[str, Any] = {
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    return create_worker(WorkerSettings, **options)
