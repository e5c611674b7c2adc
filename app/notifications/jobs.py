"""The email job: render and send one email, retrying with backoff when SMTP fails."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from arq import Retry

from app.core.config import Settings
from app.notifications.emails import Email
from app.notifications.smtp import TRANSIENT_ERRORS, deliver_email

logger = logging.getLogger("app.notifications")

MAX_TRIES = 5
FIRST_RETRY_SECONDS = 10.0


def retry_delay(tries_so_far: int, first: float = FIRST_RETRY_SECONDS) -> float:
    """Seconds to wait after the ``tries_so_far``-th failed try: 10, 20, 40, 80 by default."""
    return first * 2 ** (tries_so_far - 1)


def serialize_job(value: dict[str, Any]) -> bytes:
    """arq's job and result serializer: JSON, never pickle.

    A pickled job is code the worker runs when it loads it: whoever can write to
    Redis could run anything in the worker. An Email (a dataclass of plain values)
    becomes a JSON object; what JSON cannot hold (an exception in a failed job's
    result) is written as its text.
    """
    return orjson.dumps(value, default=str)


def deserialize_job(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(data)
    return value


async def send_email(ctx: dict[str, Any], email: Email | dict[str, Any]) -> None:
    """arq job: send one email; on an SMTP failure, ask arq to run it again later."""
    if isinstance(email, dict):  # as it comes out of the JSON job
        email = Email(**email)
    settings: Settings = ctx["settings"]
    job_try: int = ctx.get("job_try", 1)
    to, kind = email.to, email.kind
    try:
        await deliver_email(settings, email)
    except TRANSIENT_ERRORS as exc:
        max_tries = ctx.get("max_tries", MAX_TRIES)
        if job_try >= max_tries:
            logger.error("email to %s (%s) not sent after %d tries: %s", to, kind, job_try, exc)
            raise
        delay = retry_delay(job_try, ctx.get("retry_first_seconds", FIRST_RETRY_SECONDS))
        logger.warning(
            "email to %s (%s) failed (try %d of %d), retrying in %.0f s: %s",
            to,
            kind,
            job_try,
            max_tries,
            delay,
            exc,
        )
        raise Retry(defer=delay) from exc


async def send_with_retries(
    settings: Settings,
    email: Email,
    *,
    max_tries: int = MAX_TRIES,
    first_retry_seconds: float = FIRST_RETRY_SECONDS,
) -> bool:
    """Send in this process (no job queue), with the same retries as the queued job."""
    for attempt in range(1, max_tries + 1):
        try:
            await deliver_email(settings, email)
            return True
        except TRANSIENT_ERRORS as exc:
            if attempt == max_tries:
                logger.error(
                    "email to %s (%s) not sent after %d tries: %s",
                    email.to,
                    email.kind,
                    attempt,
                    exc,
                )
                return False
            delay = retry_delay(attempt, first_retry_seconds)
            logger.warning(
                "email to %s (%s) failed (try %d of %d), retrying in %.0f s: %s",
                email.to,
                email.kind,
                attempt,
                max_tries,
                delay,
                exc,
            )
            await asyncio.sleep(delay)
    return False
