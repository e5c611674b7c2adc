"""Sending the outbox: due messages taken with FOR UPDATE SKIP LOCKED, sent, retried.

Any number of dispatchers (API workers, `python -m app worker` processes, replicas)
can run against one database. Taking a batch leases its rows: their next attempt
is pushed past the longest a send can take, in the same statement that skips rows
another dispatcher has locked, so no two dispatchers send one message at the same
time; a dispatcher that dies mid-send leaves its rows due again once the lease ends
(at least once). Each attempt is recorded (webhooks: in the deliveries log); a
failure is retried with exponential backoff and jitter for OUTBOX_RETRY_FOR_HOURS,
then the message is dead. Commits that store messages wake the dispatchers through
LISTEN/NOTIFY; due retries are found by polling every OUTBOX_POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine
from app.core.metrics import OUTBOX_ATTEMPTS
from app.notifications.emails import Email
from app.notifications.smtp import deliver_email
from app.outbox.service import NOTIFY_CHANNEL
from app.webhooks import addresses, signing

logger = logging.getLogger("app.outbox")

WEBHOOK_TIMEOUT_SECONDS = 10.0
EMAIL_TIMEOUT_SECONDS = 40.0
# Longer than any send can take (the webhook and SMTP timeouts), so a lease never
# ends while its dispatcher is still sending.
LEASE_SECONDS = 60.0
BATCH_SIZE = 20
DISPATCHER_POOL_SIZE = 3
LONGEST_RETRY_DELAY_SECONDS = 6 * 3600.0
EXCERPT_BYTES = 512
PURGE_EVERY_SECONDS = 600.0
SHUTDOWN_GRACE_SECONDS = 10.0

_CLAIM = text(
    """
    WITH due AS (
        SELECT id, endpoint_id FROM outbox_messages
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox_messages m
    SET attempts = m.attempts + 1,
        next_attempt_at = now() + make_interval(secs => :lease),
        updated_at = now()
    FROM due LEFT JOIN webhook_endpoints w ON w.id = due.endpoint_id
    WHERE m.id = due.id
    RETURNING m.id, m.channel, m.topic, m.endpoint_id, m.message_id,
              m.payload::text AS payload, m.attempts AS attempt, m.created_at,
              w.url, w.secret, coalesce(w.is_active, false) AS endpoint_active
    """
)

# Guarded by the attempt number: a dispatcher whose lease ran out (and whose message
# another one took over) cannot overwrite the newer attempt's outcome.
_FINISH = text(
    """
    UPDATE outbox_messages
    SET status = :status, next_attempt_at = coalesce(:next_attempt_at, next_attempt_at),
        last_error = :error, updated_at = now()
    WHERE id = :id AND attempts = :attempt AND status = 'pending'
    """
)

_LOG_DELIVERY = text(
    """
    INSERT INTO webhook_deliveries (endpoint_id, outbox_message_id, message_id, event_type,
        attempt, status_code, error, duration_ms, response_excerpt, next_attempt_at)
    VALUES (:endpoint_id, :outbox_message_id, :message_id, :event_type, :attempt,
        :status_code, :error, :duration_ms, :response_excerpt, :next_attempt_at)
    """
)

# Lock order, as in a DELETE or PATCH of an endpoint: the endpoint row, then its
# messages (a delete cascades in that order). Recording an outcome takes the endpoint
# first too, so the two never wait on each other.
_LOCK_ENDPOINT = text("SELECT id FROM webhook_endpoints WHERE id = :id FOR NO KEY UPDATE")

_DISABLE_ENDPOINT = text(
    "UPDATE webhook_endpoints SET is_active = false, updated_at = now() WHERE id = :id"
)

_DUE_COUNT = text(
    "SELECT count(*) FROM outbox_messages WHERE status = 'pending' AND next_attempt_at <= now()"
)

_DEPTH = text(
    """
    SELECT channel, count(*) AS pending,
           coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_seconds
    FROM outbox_messages WHERE status = 'pending' GROUP BY channel
    """
)

_PURGE = text(
    """
    DELETE FROM outbox_messages
    WHERE status <> 'pending' AND updated_at < now() - make_interval(hours => :hours)
    """
)


@dataclass(slots=True)
class Claimed:
    """A message taken by this dispatcher for one attempt."""

    id: int
    channel: str
    topic: str
    endpoint_id: int | None
    message_id: str
    payload: str
    attempt: int
    created_at: datetime
    url: str | None
    secret: str | None
    endpoint_active: bool


@dataclass(slots=True)
class Attempt:
    """What one attempt came to."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    duration_ms: int = 0
    gone: bool = False  # 410: the receiver asks never to be called again


def retry_delay(attempt: int, first_seconds: float) -> float:
    """Seconds before the next try after the ``attempt``-th failed: doubling, with jitter."""
    delay = min(first_seconds * 2 ** (attempt - 1), LONGEST_RETRY_DELAY_SECONDS)
    return delay * random.uniform(0.8, 1.2)


def listen_dsn(engine: AsyncEngine) -> str:
    """The engine's database as a plain libpq URL, for asyncpg.connect."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Dispatcher:
    """Sends the outbox's due messages; ``start()`` runs it in the background."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        batch_size: int = BATCH_SIZE,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.settings = settings
        # A small pool of its own: sending never takes the connections requests queue for.
        self.engine: AsyncEngine = create_engine(
            settings, database_url, pool_size=DISPATCHER_POOL_SIZE, max_overflow=0
        )
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.http = httpx.AsyncClient(
            follow_redirects=False, timeout=WEBHOOK_TIMEOUT_SECONDS, trust_env=False
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._in_flight = 0
        self._last_purge = 0.0
        self._stopping = False

    # ------------------------------------------------------------ running

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_forever())

    async def close(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop: a batch being sent gets ``grace_seconds`` to finish and record its
        outcomes (a message cut off mid-send is sent again after its lease)."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._stop_listening()
        await self.http.aclose()
        await self.engine.dispose()

    def wake(self) -> None:
        self._wake.set()

    async def _run_forever(self) -> None:
        while not self._stopping:
            try:
                await self._listen()
                sent = await self.dispatch_due()
                await self._purge_now_and_then()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database down: try again after a pause
                logger.warning("outbox dispatch failed: %s: %s", type(exc).__name__, exc)
                await self._stop_listening()
                sent = 0
            if sent >= self.batch_size:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_seconds)
            self._wake.clear()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        if self.settings.db_pooler == "pgbouncer":
            # LISTEN needs a session of its own, which a transaction-mode pooler does not
            # keep: new messages are then found by polling (OUTBOX_POLL_SECONDS).
            return
        self._listener = await asyncpg.connect(
            listen_dsn(self.engine), server_settings={"application_name": "outbox-dispatcher"}
        )
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)

    async def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        async with self.sessionmaker.begin() as session:
            await session.execute(_PURGE, {"hours": self.settings.outbox_retention_hours})

    async def gauges(self) -> list[GaugeMetricFamily]:
        """Outbox depth and the age of its oldest pending message, per channel."""
        async with self.sessionmaker() as session:
            rows = (await session.execute(_DEPTH)).all()
        depth = GaugeMetricFamily(
            "outbox_pending_messages", "Messages waiting to be sent", labels=["channel"]
        )
        oldest = GaugeMetricFamily(
            "outbox_oldest_pending_seconds",
            "Age of the oldest message waiting to be sent",
            labels=["channel"],
        )
        found = {row.channel: row for row in rows}
        for channel in ("email", "webhook"):
            row = found.get(channel)
            depth.add_metric([channel], float(row.pending) if row else 0.0)
            oldest.add_metric([channel], float(row.oldest_seconds) if row else 0.0)
        return [depth, oldest]

    # ------------------------------------------------------------ one batch

    async def dispatch_due(self) -> int:
        """Take up to a batch of due messages, send them concurrently, record the outcomes."""
        self._in_flight += 1
        try:
            async with self.sessionmaker.begin() as session:
                rows = (
                    await session.execute(
                        _CLAIM, {"batch": self.batch_size, "lease": self.lease_seconds}
                    )
                ).all()
            claimed = [Claimed(**row._asdict()) for row in rows]
            if claimed:
                await asyncio.gather(*(self._deliver(message) for message in claimed))
            return len(claimed)
        finally:
            self._in_flight -= 1

    async def run_until_idle(self, within_seconds: float = 30.0) -> None:
        """Send until nothing is due (tests; shutdown of a one-off worker)."""
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            if await self.dispatch_due():
                continue
            if self._in_flight == 0 and not await self._due_count():
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("the outbox still has due messages")

    async def wait_idle(self, within_seconds: float = 30.0) -> None:
        await self.run_until_idle(within_seconds)

    async def _due_count(self) -> int:
        async with self.sessionmaker() as session:
            return int(await session.scalar(_DUE_COUNT) or 0)

    async def _deliver(self, message: Claimed) -> None:
        try:
            if message.channel == "webhook":
                if not message.endpoint_active:
                    await self._finish(message, status="skipped", error="endpoint disabled")
                    return
                attempt = await self.post_webhook(message)
            else:
                attempt = await self._send_email(message)
            await self._record(message, attempt)
        except Exception:
            # The lease ends and another attempt is made: never lost, at worst late.
            logger.exception("outbox message %s: attempt not recorded", message.message_id)

    async def _record(self, message: Claimed, attempt: Attempt) -> None:
        next_at: datetime | None = None
        if attempt.ok:
            status = "delivered"
        elif attempt.gone:
            status = "dead"
        else:
            delay = retry_delay(message.attempt, self.settings.outbox_retry_first_seconds)
            next_at = datetime.now(UTC) + timedelta(seconds=delay)
            window = timedelta(hours=self.settings.outbox_retry_for_hours)
            if next_at > message.created_at + window:
                status, next_at = "dead", None
            else:
                status = "pending"
        if status == "dead":
            logger.warning(
                "outbox message %s (%s) given up after %d attempts: %s",
                message.message_id,
                message.topic,
                message.attempt,
                attempt.error,
            )
        OUTBOX_ATTEMPTS.labels(message.channel, "retry" if status == "pending" else status).inc()
        async with self.sessionmaker.begin() as session:
            if message.channel == "webhook":
                endpoint = await session.scalar(_LOCK_ENDPOINT, {"id": message.endpoint_id})
                if endpoint is None:  # deleted meanwhile, its messages with it
                    return
            await session.execute(
                _FINISH,
                {
                    "id": message.id,
                    "attempt": message.attempt,
                    "status": status,
                    "next_attempt_at": next_at,
                    "error": attempt.error,
                },
            )
            if message.channel == "webhook":
                await session.execute(
                    _LOG_DELIVERY,
                    {
                        "endpoint_id": message.endpoint_id,
                        "outbox_message_id": message.id,
                        "message_id": message.message_id,
                        "event_type": message.topic,
                        "attempt": message.attempt,
                        "status_code": attempt.status_code,
                        "error": attempt.error,
                        "duration_ms": attempt.duration_ms,
                        "response_excerpt": attempt.excerpt,
                        "next_attempt_at": next_at,
                    },
                )
                if attempt.gone:
                    await session.execute(_DISABLE_ENDPOINT, {"id": message.endpoint_id})

    async def _finish(self, message: Claimed, *, status: str, error: str | None) -> None:
        OUTBOX_ATTEMPTS.labels(message.channel, status).inc()
        async with self.sessionmaker.begin() as session:
            await session.execute(
                _FINISH,
                {
                    "id": message.id,
                    "attempt": message.attempt,
                    "status": status,
                    "next_attempt_at": None,
                    "error": error,
                },
            )

    # ------------------------------------------------------------ channels

    async def _send_email(self, message: Claimed) -> Attempt:
        started = time.monotonic()
        try:
            fields = orjson.loads(message.payload)
            email = Email(kind=fields["kind"], to=fields["to"], context=fields["context"])
            async with asyncio.timeout(EMAIL_TIMEOUT_SECONDS):
                await deliver_email(self.settings, email)
        except Exception as exc:
            logger.warning(
                "email %s (%s) failed (attempt %d): %s: %s",
                message.message_id,
                message.topic,
                message.attempt,
                type(exc).__name__,
                exc,
            )
            return Attempt(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000])
        return Attempt(ok=True, duration_ms=int((time.monotonic() - started) * 1000))

    async def post_webhook(self, message: Claimed) -> Attempt:
        """POST the signed message to the endpoint's checked address; redirects not followed."""
        assert message.url is not None and message.secret is not None
        body = message.payload.encode()
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(WEBHOOK_TIMEOUT_SECONDS):
                address = await addresses.allowed_address(
                    message.url, allow_private=self.settings.webhook_allow_private_networks
                )
                headers = signing.signed_headers(
                    message.secret, message.message_id, int(time.time()), body
                )
                url, host_header, extensions = _pinned(message.url, address)
                headers["host"] = host_header
                headers["user-agent"] = "event-booking-api-webhooks/1"
                request = self.http.build_request(
                    "POST", url, content=body, headers=headers, extensions=extensions
                )
                response = await self.http.send(request, stream=True)
                try:
                    excerpt = await _read_excerpt(response)
                finally:
                    await response.aclose()
        except addresses.AddressRefused as exc:
            return Attempt(ok=False, error=str(exc), duration_ms=took())
        except TimeoutError:
            error = f"no answer within {WEBHOOK_TIMEOUT_SECONDS:.0f} s"
            return Attempt(ok=False, error=error, duration_ms=took())
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            return Attempt(ok=False, error=error, duration_ms=took())
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(ok=True, status_code=status, excerpt=excerpt, duration_ms=took())
        if 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed"
        else:
            error = f"HTTP {status}"
        return Attempt(
            ok=False,
            status_code=status,
            error=error,
            excerpt=excerpt,
            duration_ms=took(),
            gone=status == 410,
        )


def _pinned(url: str, address: addresses.IPAddress) -> tuple[str, str, dict[str, Any]]:
    """``url`` aimed at the checked ``address``, the Host header, and the TLS name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions: dict[str, Any] = {}
    if parts.scheme == "https":
        extensions["sni_hostname"] = host
    return urlunsplit(parts._replace(netloc=netloc)), host_header, extensions


async def _read_excerpt(response: httpx.Response) -> str | None:
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= EXCERPT_BYTES:
            break
    return data[:EXCERPT_BYTES].decode("utf-8", "replace") or None
