"""The background worker: arq's WorkerSettings for `python -m app worker`."""

from __future__ import annotations

import logging
from typing import Any

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


class WorkerSettings:
    """What the worker runs: the email job, retried up to MAX_TRIES times with backoff."""

    functions = [send_email]
    queue_name = queue_name(DEFAULT_KEY_PREFIX)
    max_tries = MAX_TRIES
    on_startup = startup
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
