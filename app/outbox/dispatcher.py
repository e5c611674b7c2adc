"""Sending the outbox: due messages taken with FOR UPDATE SKIP LOCKED, sent, retried.

Any number of dispatchers (API workers, `python -m app worker` processes, replicas)
can run against one database. Taking a batch leases its rows: their next attempt
is pushed past the longest a send can take, in the same statement that skips rows
another dispatcher has locked, so no two dispatchers send one message at the same
time; a dispatcher that dies mid-send leaves its rows due again once the lease ends
(at least once). Each attempt is recorded (webhooks: in the deliveries log); a
failure is retried with exponential backoff and jitter for OUTBOX_RETRY_FOR_HOURS,
then the message is dead. Commits that store messages wake the dispatchers through
LISTEN/NOTIFY; due retries are found by polling every OUTBOX_POLL_SECONDS. Under a
steady stream of commits a dispatcher stops listening and takes a batch every
GATHER_SECONDS (at once after a full one) until a batch finds nothing, instead of being
woken and taking a batch at every commit.

A batch costs two statements whatever its size, compiled once and run on the pool's
asyncpg connection: one takes it, one finishes it (every outcome, the deliveries
log, endpoints that answered 410). Its webhooks are posted side by side, each URL
resolved and checked once per batch; its emails share a few SMTP connections.
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
from sqlalchemy import ARRAY, BigInteger, Boolean, DateTime, Float, Integer, String, Text, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import UnitOfWork, compile_statement, create_engine, param
from app.core.metrics import OUTBOX_ATTEMPTS
from app.notifications.emails import Email
from app.notifications.smtp import deliver_emails
from app.outbox.service import NOTIFY_CHANNEL
from app.webhooks import addresses, signing

logger = logging.getLogger("app.outbox")

WEBHOOK_TIMEOUT_SECONDS = 10.0
EMAIL_TIMEOUT_SECONDS = 40.0
# Longer than any send can take (the webhook and SMTP timeouts), so a lease never
# ends while its dispatcher is still sending.
LEASE_SECONDS = 60.0
BATCH_SIZE = 20
# Webhooks of a batch posted at once. httpcore's pool does work quadratic in its
# connections for every request (measured with bench/outbox_cost.py: CPU per webhook
# fell by a third from 20 connections to 8); a batch still ends within the lease
# (ceil(BATCH_SIZE / 8) rounds of at most WEBHOOK_TIMEOUT_SECONDS).
WEBHOOK_CONCURRENCY = 8
DISPATCHER_POOL_SIZE = 3
LONGEST_RETRY_DELAY_SECONDS = 6 * 3600.0
EXCERPT_BYTES = 512
PURGE_EVERY_SECONDS = 600.0
# Under load every booking's commit wakes the dispatcher, a few milliseconds apart: a
# batch taken at each wake holds one message or two, and pays its two statements and a
# pool checkout for each, and every notification wakes the event loop (measured with
# `make bench`, spread c=64: most of the job worker's CPU per booking). When a batch
# found messages and a commit is notified within this time of it, the dispatcher stops
# listening and takes a batch every GATHER_SECONDS (at once after a full one) until one
# finds nothing; then it listens again. An idle dispatcher sends a commit's at once.
GATHER_SECONDS = 0.05
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
).bindparams(param("batch", Integer), param("lease", Float))

# The outcomes of a batch, one statement: each message finished, each webhook attempt
# logged, endpoints that answered 410 disabled.
#
# Lock order, as in a DELETE or PATCH of an endpoint: the endpoint rows (in id order),
# then their messages (a delete cascades in that order); every outcome below reads
# `endpoints`, so no message row is written before its endpoint is locked, and the
# two never wait on each other. The outcome of a webhook whose endpoint was deleted
# meanwhile (its messages with it) is dropped.
#
# Finishing is guarded by the attempt number: a dispatcher whose lease ran out (and
# whose message another one took over) cannot overwrite the newer attempt's outcome;
# its attempt is still logged, as it was made.
_FINISH = text(
    """
    WITH outcome AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:attempts AS integer[]),
            CAST(:statuses AS varchar[]), CAST(:next_attempts AS timestamptz[]),
            CAST(:errors AS text[]), CAST(:endpoint_ids AS bigint[]),
            CAST(:message_ids AS varchar[]), CAST(:topics AS varchar[]),
            CAST(:status_codes AS integer[]), CAST(:durations AS integer[]),
            CAST(:excerpts AS varchar[]), CAST(:logged AS boolean[]), CAST(:gone AS boolean[])
        ) AS o(id, attempt, status, next_attempt_at, error, endpoint_id, message_id, topic,
               status_code, duration_ms, excerpt, logged, gone)
    ), endpoints AS (
        SELECT id FROM webhook_endpoints
        WHERE id IN (SELECT endpoint_id FROM outcome)
        ORDER BY id
        FOR NO KEY UPDATE
    ), kept AS (
        SELECT * FROM outcome
        WHERE endpoint_id IS NULL OR endpoint_id IN (SELECT id FROM endpoints)
    ), finished AS (
        UPDATE outbox_messages m
        SET status = k.status, next_attempt_at = coalesce(k.next_attempt_at, m.next_attempt_at),
            last_error = k.error, updated_at = now()
        FROM kept k
        WHERE m.id = k.id AND m.attempts = k.attempt AND m.status = 'pending'
        RETURNING m.id
    ), logged AS (
        INSERT INTO webhook_deliveries (endpoint_id, outbox_message_id, message_id,
            event_type, attempt, status_code, error, duration_ms, response_excerpt,
            next_attempt_at)
        SELECT endpoint_id, id, message_id, topic, attempt, status_code, error, duration_ms,
               excerpt, next_attempt_at
        FROM kept WHERE logged
        ORDER BY id
    ), disabled AS (
        UPDATE webhook_endpoints SET is_active = false, updated_at = now()
        WHERE id IN (SELECT endpoint_id FROM kept WHERE gone)
    )
    SELECT count(*) FROM finished
    """
).bindparams(
    param("ids", ARRAY(BigInteger)),
    param("attempts", ARRAY(Integer)),
    param("statuses", ARRAY(String)),
    param("next_attempts", ARRAY(DateTime(timezone=True))),
    param("errors", ARRAY(Text)),
    param("endpoint_ids", ARRAY(BigInteger)),
    param("message_ids", ARRAY(String)),
    param("topics", ARRAY(String)),
    param("status_codes", ARRAY(Integer)),
    param("durations", ARRAY(Integer)),
    param("excerpts", ARRAY(String)),
    param("logged", ARRAY(Boolean)),
    param("gone", ARRAY(Boolean)),
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

# Finished messages (delivered, dead, skipped) past OUTBOX_RETENTION_HOURS; their
# deliveries log goes with them (ON DELETE CASCADE).
_PURGE = text(
    """
    DELETE FROM outbox_messages
    WHERE status <> 'pending' AND updated_at < now() - make_interval(hours => :hours)
    """
).bindparams(param("hours", Integer))


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
    skipped: bool = False  # not sent: the endpoint is disabled


@dataclass(slots=True)
class Outcome:
    """A message's attempt and what it comes to."""

    message: Claimed
    attempt: Attempt
    status: str  # delivered, pending (a retry is due at next_attempt_at), dead, skipped
    next_attempt_at: datetime | None


def _columns(outcomes: list[Outcome]) -> dict[str, list[Any]]:
    """The outcomes as the columns _FINISH takes (one array per column)."""
    webhook = [o.message.channel == "webhook" for o in outcomes]
    return {
        "ids": [o.message.id for o in outcomes],
        "attempts": [o.message.attempt for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "next_attempts": [o.next_attempt_at for o in outcomes],
        "errors": [o.attempt.error for o in outcomes],
        "endpoint_ids": [o.message.endpoint_id for o in outcomes],
        "message_ids": [o.message.message_id for o in outcomes],
        "topics": [o.message.topic for o in outcomes],
        "status_codes": [o.attempt.status_code for o in outcomes],
        "durations": [o.attempt.duration_ms for o in outcomes],
        "excerpts": [o.attempt.excerpt for o in outcomes],
        # Every webhook attempt made is logged; a skipped message was not attempted.
        "logged": [w and not o.attempt.skipped for w, o in zip(webhook, outcomes, strict=True)],
        "gone": [o.attempt.gone for o in outcomes],
    }


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
            follow_redirects=False,
            timeout=WEBHOOK_TIMEOUT_SECONDS,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=WEBHOOK_CONCURRENCY),
        )
        self._wake = asyncio.Event()
        # Under a stream of commits: batches taken every GATHER_SECONDS, not listening.
        self._streaming = False
        self._deaf = False  # the listener's LISTEN is paused
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._in_flight = 0
        self._last_purge = -PURGE_EVERY_SECONDS  # the first round purges, however young the clock
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
                self._streaming, sent = False, 0
            if sent >= self.batch_size:
                continue  # more may be due
            if self._streaming:
                if sent:
                    await self._pause(GATHER_SECONDS)  # the next batch gathers
                else:
                    # The stream has ended. The next round listens again and looks once
                    # more: a commit made before LISTEN took effect is not notified.
                    self._streaming = False
                continue
            finished_at = time.monotonic()
            woken = await self._pause(self.settings.outbox_poll_seconds)
            if sent and woken and time.monotonic() - finished_at < GATHER_SECONDS:
                # A commit right after a batch: a stream. Its commits are not waited for
                # one by one; the next batch gathers.
                self._streaming = True
                await self._stop_hearing()
                await self._pause(GATHER_SECONDS)

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``, or until a commit is notified (or the dispatcher stops);
        whether it was."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            if self._deaf and not self._streaming:
                await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)
                self._deaf = False
            return
        if self.settings.db_pooler == "pgbouncer":
            # LISTEN needs a session of its own, which a transaction-mode pooler does not
            # keep: new messages are then found by polling (OUTBOX_POLL_SECONDS).
            return
        listener = await asyncpg.connect(
            listen_dsn(self.engine), server_settings={"application_name": "outbox-dispatcher"}
        )
        try:
            await listener.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            await listener.close()
            raise
        self._listener, self._deaf = listener, False  # listening from here on

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _stop_hearing(self) -> None:
        """UNLISTEN for the while of a stream of commits (the connection stays)."""
        if self._listener is not None and not self._listener.is_closed() and not self._deaf:
            await self._listener.remove_listener(NOTIFY_CHANNEL, self._notified)
            self._deaf = True

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)

    async def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        await self.purge()

    async def purge(self) -> int:
        """Delete the messages finished more than OUTBOX_RETENTION_HOURS ago (and their
        deliveries log); pending ones are kept however old. Returns how many went."""
        async with self._connection() as conn:
            status = await compile_statement(_PURGE).execute(
                conn, hours=self.settings.outbox_retention_hours
            )
        return int(status.rsplit(" ", 1)[-1])

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
        """Take up to a batch of due messages, send them concurrently, record the outcomes
        (one statement each: taking the batch, then finishing it)."""
        self._in_flight += 1
        try:
            async with self._connection() as conn:
                rows = await compile_statement(_CLAIM).fetch(
                    conn, batch=self.batch_size, lease=self.lease_seconds
                )
            if not rows:
                return 0
            claimed = [Claimed(*row) for row in rows]
            attempts = await self._send(claimed)
            outcomes = [
                self._outcome(message, attempt)
                for message, attempt in zip(claimed, attempts, strict=True)
                if attempt is not None
            ]
            if outcomes:
                try:
                    async with self._connection() as conn:
                        await compile_statement(_FINISH).fetchval(conn, **_columns(outcomes))
                except Exception:
                    # The leases end and the messages are sent again: never lost, at worst
                    # sent twice (at least once).
                    logger.exception("outbox: outcomes of %d messages not recorded", len(outcomes))
            return len(claimed)
        finally:
            self._in_flight -= 1

    def _connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection of the dispatcher's pool for compiled statements: each one commits
        on its own (through a transaction-mode pooler, the block is one transaction)."""
        return UnitOfWork(self.sessionmaker).driver()

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
        async with self._connection() as conn:
            return int(await compile_statement(_DUE_COUNT).fetchval(conn) or 0)

    async def _send(self, claimed: list[Claimed]) -> list[Attempt | None]:
        """Attempt every message of a batch at once: each webhook on its own, the emails
        together (``deliver_emails``). None for an attempt that could not be made (the
        lease ends and another is made: never lost, at worst late)."""
        attempts: list[Attempt | None] = [None] * len(claimed)
        hooks = [i for i, message in enumerate(claimed) if message.channel == "webhook"]
        emails = [i for i, message in enumerate(claimed) if message.channel != "webhook"]
        resolved: dict[str, asyncio.Task[addresses.IPAddress]] = {}
        slots = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

        async def send_hook(i: int) -> None:
            async with slots:
                attempts[i] = await self._attempt_webhook(claimed[i], resolved)

        async def send_emails() -> None:
            try:
                sent = await self._send_emails([claimed[i] for i in emails])
            except Exception:
                logger.exception("outbox: %d emails not attempted", len(emails))
                return
            for i, attempt in zip(emails, sent, strict=True):
                attempts[i] = attempt

        await asyncio.gather(*(send_hook(i) for i in hooks), send_emails())
        return attempts

    async def _attempt_webhook(
        self, message: Claimed, resolved: dict[str, asyncio.Task[addresses.IPAddress]]
    ) -> Attempt | None:
        try:
            if not message.endpoint_active:
                return Attempt(ok=False, skipped=True, error="endpoint disabled")
            return await self.post_webhook(message, resolved)
        except Exception:
            logger.exception("outbox message %s: attempt not made", message.message_id)
            return None

    def _outcome(self, message: Claimed, attempt: Attempt) -> Outcome:
        """What ``attempt`` makes of ``message``: delivered, retried later, dead or skipped."""
        next_at: datetime | None = None
        if attempt.skipped:
            status = "skipped"
        elif attempt.ok:
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
        return Outcome(message, attempt, status, next_at)

    # ------------------------------------------------------------ channels

    async def _send_emails(self, messages: list[Claimed]) -> list[Attempt]:
        errors: list[Exception | None] = [None] * len(messages)
        emails: dict[int, Email] = {}
        for i, message in enumerate(messages):
            try:
                fields = orjson.loads(message.payload)
                emails[i] = Email(kind=fields["kind"], to=fields["to"], context=fields["context"])
            except Exception as exc:  # not an email this version can send
                errors[i] = exc
        started = time.monotonic()
        if emails:
            sent = await deliver_emails(
                self.settings, list(emails.values()), within_seconds=EMAIL_TIMEOUT_SECONDS
            )
            for i, exc in zip(emails, sent, strict=True):
                errors[i] = exc
        took = int((time.monotonic() - started) * 1000)
        attempts = []
        for message, exc in zip(messages, errors, strict=True):
            if exc is None:
                attempts.append(Attempt(ok=True, duration_ms=took))
                continue
            logger.warning(
                "email %s (%s) failed (attempt %d): %s: %s",
                message.message_id,
                message.topic,
                message.attempt,
                type(exc).__name__,
                exc,
            )
            attempts.append(Attempt(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000]))
        return attempts

    async def _checked_address(
        self, url: str, resolved: dict[str, asyncio.Task[addresses.IPAddress]] | None
    ) -> addresses.IPAddress:
        allow_private = self.settings.webhook_allow_private_networks
        if resolved is None:
            return await addresses.allowed_address(url, allow_private=allow_private)
        task = resolved.get(url)
        if task is None:
            task = resolved[url] = asyncio.ensure_future(
                addresses.allowed_address(url, allow_private=allow_private)
            )
        # shield: one message timing out does not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    async def post_webhook(
        self,
        message: Claimed,
        resolved: dict[str, asyncio.Task[addresses.IPAddress]] | None = None,
    ) -> Attempt:
        """POST the signed message to the endpoint's checked address; redirects not followed.

        ``resolved``: the addresses checked for this batch, by URL (each URL is resolved
        and checked once per batch, not once per message)."""
        assert message.url is not None and message.secret is not None
        body = message.payload.encode()
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(WEBHOOK_TIMEOUT_SECONDS):
                address = await self._checked_address(message.url, resolved)
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
