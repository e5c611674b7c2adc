"""Getting emails out after a transaction commits, without delaying the response.

With REDIS_URL set, an email is a job on the arq queue, sent by `python -m app
worker`. Without Redis (or when enqueuing fails), it is sent by a task of this
process, which the application waits for at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis

from app.core.config import Settings
from app.core.redis import RedisState, key_prefix, redis_state
from app.notifications.emails import Email
from app.notifications.jobs import deserialize_job, send_with_retries, serialize_job

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.notifications")

SHUTDOWN_GRACE_SECONDS = 10.0
BUILD_CONCURRENCY = 2


def queue_name(prefix: str) -> str:
    return f"{prefix}:emails"


class Outbox:
    """Sends or queues emails in background tasks of the process."""

    def __init__(self, settings: Settings, redis: Redis | None, *, prefix: str) -> None:
        self.settings = settings
        self.queue_name = queue_name(prefix)
        # Shares the application's connection pool; closing the application's client closes it.
        self.arq: ArqRedis | None = (
            ArqRedis(
                redis.connection_pool,
                default_queue_name=self.queue_name,
                job_serializer=serialize_job,
                job_deserializer=deserialize_job,
            )
            if redis is not None
            else None
        )
        self.redis_state = RedisState()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Building an email may read the database: a booking storm must not hand the
        # connection pool to emails, so only a few are built at a time.
        self._building = asyncio.Semaphore(BUILD_CONCURRENCY)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background; the reference kept here stops it being collected."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def post(self, emails: Callable[[], Awaitable[list[Email]]]) -> None:
        """In the background: build the emails (may read the database), then send each."""

        async def work() -> None:
            async with self._building:
                built = await emails()
            for email in built:
                await self.send(email)

        self.spawn(work())

    async def send(self, email: Email) -> None:
        """Queue ``email`` (or send it here when there is no queue)."""
        if self.arq is not None and self.redis_state.available():
            try:
                await self.arq.enqueue_job("send_email", email, _job_id=email.job_id)
            except Exception as exc:
                # Logged once per outage (not once per email): see RedisState.
                self.redis_state.failed("emails are sent from the API process meanwhile", exc)
            else:
                self.redis_state.answered()
                return
        await send_with_retries(self.settings, email)

    async def close(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Give pending emails ``grace_seconds``, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("%d email task(s) cancelled at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until every background email task has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("email task failed", exc_info=exc)


# The outbox of each running application by its settings object, for callers that have
# the settings but not the application (a BackgroundTasks function, for instance).
_BY_SETTINGS: dict[int, weakref.ref[Outbox]] = {}


def get_outbox(state: Any) -> Outbox:
    """The application's outbox (``app.state``), made on first use."""
    outbox: Outbox | None = getattr(state, "outbox", None)
    if outbox is None:
        outbox = Outbox(state.settings, getattr(state, "redis", None), prefix=key_prefix(state))
        outbox.redis_state = redis_state(state)
        state.outbox = outbox
        _BY_SETTINGS[id(state.settings)] = weakref.ref(outbox)
    return outbox


def outbox_for(settings: Settings) -> Outbox | None:
    """The outbox of the running application that uses ``settings``, if there is one."""
    ref = _BY_SETTINGS.get(id(settings))
    outbox = ref() if ref is not None else None
    return outbox if outbox is not None and outbox.settings is settings else None
