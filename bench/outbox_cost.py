"""What the outbox costs: `python -m bench.outbox_cost [--messages 2000] [--bookings 2000]`.

On a throwaway database seeded like `make bench`'s, with a webhook receiver in a
process of its own (its CPU is not counted):

1. **send**: N email rows, then N webhook rows (to the receiver) are stored, and a
   dispatcher in this process sends them until nothing is due. Printed: this
   process's CPU per message (``time.process_time``), the PostgreSQL backends' CPU
   per message, and messages per second. Emails go to the log (no SMTP_HOST, JSON
   lines written to /dev/null), as with the shipped image's defaults.
2. **record**: N transactions that each store one booking's messages
   (``record_event``: the webhook for the organizer's endpoints and the email), with
   and without an endpoint: CPU per transaction here and in PostgreSQL.
3. **storm**: uvicorn with 2 workers sending their outbox themselves (no Redis; or,
   with ``--sender worker``, the shipped configuration: Redis and `python -m app
   worker` sending), a webhook endpoint on the hot event's organizer, and M
   one-ticket bookings from 64 concurrent clients. Printed: bookings/s, the CPU per
   booking of the API workers (and of the job worker), and the webhooks' latency
   from the outbox row's insert (just before the booking's commit) to receipt,
   p50 / p99 / max.

Figures are printed, never asserted: they depend on the machine and its load (the
load average is printed with them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.run import (
    ATTENDEES,
    LOCAL_REDIS,
    REDIS_DB,
    create_database,
    drop_database,
    seed,
    server_url,
)
from bench.service import (
    SECRET_KEY,
    Service,
    _postgres_backends,
    free_port,
    shipped_config,
    stripped_config,
)

CLIENTS = 64


# ---------------------------------------------------------------- the receiver


def _receive(port: int, log_path: str) -> None:
    """A minimal HTTP/1.1 receiver (keep-alive): answers 200, logs ``webhook-id time``."""

    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - for the life of the process

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = time.time()
                length, message_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        message_id = value.strip().decode()
                await reader.readexactly(length)
                log.write(f"{message_id} {received}\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, Path]]:
    """(URL, receipts file) of a receiver running in a child process."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="outbox-receiver-") as tmp:
        log = Path(tmp) / "receipts"
        log.touch()
        process = multiprocessing.get_context("spawn").Process(
            target=_receive, args=(port, str(log)), daemon=True
        )
        process.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"http://127.0.0.1:{port}/ready", content=b"")
                break
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}/hooks", log
        finally:
            process.terminate()
            process.join(5)


def receipts(log: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in log.read_text().splitlines():
        message_id, _, at = line.partition(" ")
        if message_id:
            found.setdefault(message_id, float(at))
    return found


# ---------------------------------------------------------------- helpers


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _settings(url: str, **overrides: Any) -> Any:
    from app.core.config import Settings

    values: dict[str, Any] = {
        "database_url": url,
        "secret_key": SECRET_KEY,
        "redis_url": None,
        "smtp_host": None,
        "log_format": "json",
        "log_level": "INFO",
        "webhook_allow_private_networks": True,
        "outbox_in_process": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _quiet_logging(settings: Any) -> None:
    """The app's logging (JSON lines at INFO, as shipped), written to /dev/null."""
    from app.core.logging import configure_logging

    configure_logging(settings)
    sink = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)


def _booking(n: int, event_id: int) -> tuple[Any, Any]:
    """A confirmed booking as the API shows it, and its confirmation email."""
    from app.bookings.schemas import BookingRead
    from app.notifications.service import EventDetails, Recipient, booking_confirmed_email

    now = datetime.now(UTC)
    booking = BookingRead(
        booking_reference=uuid.uuid4(),
        event_id=event_id,
        event_name="Bench event 0",
        status="confirmed",
        items=[
            {
                "id": n,
                "ticket_type_id": 1,
                "ticket_type_name": "Standard",
                "quantity": 1,
                "price_at_booking": Decimal("10.00"),
            }
        ],
        total_price=Decimal("10.00"),
        created_at=now,
        updated_at=now,
        cancelled_at=None,
        payment_reference=None,
    )
    email = booking_confirmed_email(
        booking,
        Recipient(email=f"bench_attendee_{n}@example.com", username=f"bench_attendee_{n}"),
        EventDetails(start=now + timedelta(days=30), end=None, location="Benchmark Hall"),
    )
    return booking, email


def _booking_messages(n: int, event_id: int) -> tuple[str, str]:
    """A booking's webhook body and its confirmation email, as the outbox stores them."""
    from app.outbox.service import email_payload, webhook_payload
    from app.webhooks.schemas import WebhookEventType

    booking, email = _booking(n, event_id)
    hook = webhook_payload(WebhookEventType.booking_confirmed, booking.model_dump(mode="json"))
    return hook, email_payload([email])[1:-1]  # the one email's object


async def _add_endpoint(conn: asyncpg.Connection, event_id: int, url: str) -> int:
    from app.webhooks.signing import new_secret

    organizer = await conn.fetchval("SELECT organizer_id FROM events WHERE id = $1", event_id)
    return await conn.fetchval(
        "INSERT INTO webhook_endpoints (organizer_id, url, secret, event_types) "
        "VALUES ($1, $2, $3, ARRAY['booking.confirmed', 'event.sold_out']) RETURNING id",
        organizer,
        url,
        new_secret(),
    )


def _postgres_cpu(database: str) -> float:
    total = 0.0
    for process in _postgres_backends(database):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class Meter:
    """CPU of this process and of the database's PostgreSQL backends, and wall time."""

    def __init__(self, database: str) -> None:
        self.database = database

    def __enter__(self) -> Meter:
        self.cpu = time.process_time()
        self.pg = _postgres_cpu(self.database)
        self.wall = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu
        # Backends that ended during the run are missed: the dispatcher's pool stays open.
        self.pg = _postgres_cpu(self.database) - self.pg
        self.wall = time.monotonic() - self.wall

    def line(self, label: str, count: int, unit: str = "message") -> str:
        return (
            f"{label}: {count} in {self.wall:.2f} s ({count / self.wall:,.0f}/s); CPU per "
            f"{unit}: this process {1000 * self.cpu / count:.3f} ms, PostgreSQL "
            f"{1000 * self.pg / count:.3f} ms"
        )


# ---------------------------------------------------------------- 1. sending


async def send_cost(url: str, database: str, event_id: int, hook_url: str, n: int) -> None:
    from app.outbox.dispatcher import Dispatcher

    settings = _settings(url)
    _quiet_logging(settings)
    conn = await asyncpg.connect(_dsn(url))
    try:
        endpoint = await _add_endpoint(conn, event_id, hook_url)
        rows = [_booking_messages(i, event_id) for i in range(n)]
        dispatcher = Dispatcher(settings, url)
        try:
            await dispatcher.run_until_idle()  # connections opened, statements prepared
            for channel in ("email", "webhook"):
                await conn.execute(
                    "INSERT INTO outbox_messages (channel, topic, endpoint_id, payload) "
                    "SELECT $1, 'booking.confirmed', $2, p::jsonb FROM unnest($3::text[]) p",
                    channel,
                    endpoint if channel == "webhook" else None,
                    [hook if channel == "webhook" else mail for hook, mail in rows],
                )
                await conn.execute("VACUUM ANALYZE outbox_messages")
                with Meter(database) as meter:
                    await dispatcher.run_until_idle(within_seconds=600)
                print(meter.line(f"send {channel}s", n))
        finally:
            await dispatcher.close()
        done = await conn.fetch(
            "SELECT channel, status, count(*) FROM outbox_messages GROUP BY 1, 2 ORDER BY 1, 2"
        )
        print("  outbox after sending:", ", ".join(f"{c} {s} {k}" for c, s, k in done))
        await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint)
        await conn.execute("TRUNCATE outbox_messages, webhook_deliveries")
    finally:
        await conn.close()


# ---------------------------------------------------------------- 2. recording


async def record_cost(url: str, database: str, event_id: int, hook_url: str, n: int) -> None:
    """A booking's messages stored in its transaction (``record_event``) on one asyncpg
    connection, as the booking path stores them; each transaction also writes one row,
    and the same transaction without the messages is the baseline."""
    from app.outbox.service import record_event
    from app.webhooks.schemas import WebhookEventType

    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("CREATE TABLE bench_writes (n integer)")
        booking, email = _booking(1, event_id)
        data = booking.model_dump(mode="json")

        async def transactions(count: int, with_messages: bool) -> None:
            for _ in range(count):
                async with conn.transaction():
                    await conn.execute("INSERT INTO bench_writes VALUES (1)")
                    if with_messages:
                        await record_event(
                            conn,
                            WebhookEventType.booking_confirmed,
                            event_id=event_id,
                            data=data,
                            emails=[email],
                        )

        await transactions(50, True)
        with Meter(database) as bare:
            await transactions(n, False)
        print(bare.line("record: a transaction writing one row", n, "transaction"))
        for endpoints in (0, 1):
            if endpoints:
                await _add_endpoint(conn, event_id, hook_url)
            with Meter(database) as meter:
                await transactions(n, True)
            print(
                meter.line(
                    f"record: the same with a booking's messages, {endpoints} endpoint(s)",
                    n,
                    "transaction",
                )
                + f"; the messages' share: {1000 * (meter.cpu - bare.cpu) / n:.3f} ms here,"
                f" PostgreSQL {1000 * (meter.pg - bare.pg) / n:.3f} ms"
            )
        await conn.execute("DELETE FROM webhook_endpoints")
        await conn.execute("TRUNCATE outbox_messages, webhook_deliveries")
        await conn.execute("DROP TABLE bench_writes")
    finally:
        await conn.close()


# ---------------------------------------------------------------- 3. the storm


def _tokens(attendee_ids: list[int]) -> list[str]:
    from app.core.security import create_token

    key = _settings("postgresql+asyncpg://unused/x").signing_key
    return [
        create_token(user_id=user_id, token_type="access", key=key, lifetime=timedelta(hours=2))[0]
        for user_id in attendee_ids
    ]


async def _book(base_url: str, tokens: list[str], event: tuple[int, int], total: int) -> float:
    body = {"event_id": event[0], "items": [{"ticket_type_id": event[1], "quantity": 1}]}
    queue = iter(range(total))
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:

        async def client(token: str) -> None:
            headers = {"authorization": f"Bearer {token}"}
            for _ in queue:
                try:
                    response = await http.post("/api/bookings/", json=body, headers=headers)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                statuses[status] = statuses.get(status, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(client(tokens[i % len(tokens)]) for i in range(CLIENTS)))
        seconds = time.monotonic() - started
    print(f"  booking answers: {dict(sorted(statuses.items()))}")
    return seconds


def storm(url: str, event: tuple[int, int], attendees: list[int], total: int, sender: str) -> None:
    with receiver() as (hook_url, log):
        conn_url = _dsn(url)

        async def prepare() -> None:
            conn = await asyncpg.connect(conn_url)
            try:
                await _add_endpoint(conn, event[0], hook_url)
            finally:
                await conn.close()

        asyncio.run(prepare())
        env = {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
        if sender == "worker":  # as shipped: Redis, and `python -m app worker` sends
            config = shipped_config(f"{LOCAL_REDIS}/{REDIS_DB}")
        else:  # no Redis: each API worker sends the outbox itself
            config = stripped_config()
            env["OUTBOX_IN_PROCESS"] = "true"
        with Service(url, 2, env, config) as service:
            workers = service.worker_processes()
            job_worker = service.job_worker_processes()

            def cpu_now() -> tuple[float, float]:
                return (
                    sum(sum(p.cpu_times()[:2]) for p in workers),
                    sum(sum(p.cpu_times()[:2]) for p in job_worker),
                )

            before = cpu_now()
            seconds = asyncio.run(_book(service.base_url, _tokens(attendees), event, total))
            deadline = time.monotonic() + 60
            while len(receipts(log)) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice would arrive by now
            after = cpu_now()
        cpu, job_cpu = after[0] - before[0], after[1] - before[1]

        async def written() -> dict[str, float]:
            conn = await asyncpg.connect(conn_url)
            try:
                rows = await conn.fetch(
                    "SELECT message_id, created_at FROM outbox_messages WHERE channel = 'webhook'"
                )
            finally:
                await conn.close()
            return {r["message_id"]: r["created_at"].timestamp() for r in rows}

        stored = asyncio.run(written())
        arrived = receipts(log)
        lines = [line for line in log.read_text().splitlines() if not line.startswith(" ")]
    latencies = sorted(arrived[m] - stored[m] for m in stored if m in arrived)
    who = "the job worker sends" if sender == "worker" else "each worker sends"
    print(
        f"storm ({config.name} config, {who}): {total} bookings in {seconds:.2f} s "
        f"({total / seconds:,.0f}/s), {CLIENTS} clients; CPU per booking until every "
        f"webhook arrived: API workers {1000 * cpu / total:.2f} ms"
        + (f", job worker {1000 * job_cpu / total:.2f} ms" if sender == "worker" else "")
    )
    print(
        f"  webhooks stored {len(stored)}, received {len(arrived)} "
        f"({len(lines) - len(arrived)} received twice)"
    )
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"  webhook latency, row insert (commit) to receipt: p50 {1000 * p50:.0f} ms, "
            f"p99 {1000 * p99:.0f} ms, max {1000 * latencies[-1]:.0f} ms"
        )


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outbox_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=2000, help="messages per channel")
    parser.add_argument("--bookings", type=int, default=2000, help="bookings in the storm")
    parser.add_argument(
        "--sender",
        choices=("in-process", "worker"),
        default="in-process",
        help="storm: who sends the outbox (worker: the shipped config with Redis)",
    )
    parser.add_argument(
        "--only", choices=("send", "record", "storm"), action="append", help="parts to run"
    )
    args = parser.parse_args(argv)
    parts = set(args.only or ("send", "record", "storm"))
    server, where = server_url()
    name, url = create_database(server)
    print(f"database {name} on the {where}; {load()}")
    try:
        seeded = seed(url, attendees=ATTENDEES, spread_events=1)
        event = seeded.hot[0]
        if parts & {"send", "record"}:
            with receiver() as (hook_url, _):
                if "send" in parts:
                    asyncio.run(send_cost(url, name, event[0], hook_url, args.messages))
                if "record" in parts:
                    asyncio.run(record_cost(url, name, event[0], hook_url, args.messages))
        if "storm" in parts:
            storm(url, event, seeded.attendee_ids, args.bookings, args.sender)
    finally:
        drop_database(server, name)
    print(load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
