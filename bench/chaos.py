"""`make chaos`: a booking storm against 2 uvicorn workers while PostgreSQL and Redis fail.

The script starts everything it breaks: a private PostgreSQL from the pgserver wheel's
binaries (as a dedicated non-root user when run as root, since initdb refuses root),
a private redis-server (when installed) and the service under uvicorn with 2 workers.
Never the shared servers. During the storm (32 clients booking one ticket at a time,
each request with its own Idempotency-Key) it, in turn:

  restart   restarts PostgreSQL (pg_ctl restart -m fast)
  stop      stops PostgreSQL for STOP_SECONDS, then starts it again
  freeze    SIGSTOPs every PostgreSQL process past the pool timeout, then SIGCONT
  kill      SIGKILLs one uvicorn worker (uvicorn starts a new one)
  redis     stops Redis (bookings go on: limits fall back, emails are sent in-process)

and prints, per phase: requests by status, the longest answer, the recovery time (from
PostgreSQL answering again to the next 201) and, at the end, the invariants checked in
SQL: every booking answered 201 exists, none answered 5xx exists, counters match.
`python -m bench.chaos --short` runs shorter outages (the slow test uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "chaos-secret-key-0123456789-abcdefghij"
CLIENTS = 32
POOL_TIMEOUT = 3.0
TICKETS = 1_000_000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a private PostgreSQL -----------------------------------------------------------------


class PrivatePostgres:
    """initdb/pg_ctl from the pgserver wheel on a TCP port, in a temporary directory."""

    def __init__(self, root: Path) -> None:
        import pgserver
        from pgserver.utils import ensure_user_exists

        self._pg = pgserver
        self.port = free_port()
        self.pgdata = root / "pgdata"
        self.log = root / "postgres.log"
        self.user: str | None = None
        self.pgdata.mkdir()
        if os.geteuid() == 0:  # initdb refuses root: a dedicated system user, as pgserver does
            self.user = "pgserver"
            ensure_user_exists(self.user)
            entry = pwd.getpwnam(self.user)
            for path in (root, self.pgdata):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        self._run(self._pg.initdb, ["--auth=trust", "--encoding=utf8", "-U", "postgres"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: Any, args: list[str]) -> None:
        options: dict[str, Any] = {"timeout": 60}
        if self.user is not None:
            options["user"] = self.user
        command(args, pgdata=self.pgdata, **options)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c max_connections=100"
        self._run(self._pg.pg_ctl, ["-w", "-l", str(self.log), "-o", options, "start"])

    def restart(self) -> None:
        self._run(self._pg.pg_ctl, ["-w", "-m", "fast", "restart"])

    def stop(self) -> None:
        self._run(self._pg.pg_ctl, ["-w", "-m", "fast", "stop"])

    def processes(self) -> list[psutil.Process]:
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def signal_all(self, signum: int) -> None:
        for process in self.processes():
            with _ignore(psutil.NoSuchProcess):
                process.send_signal(signum)

    async def answers(self) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=1)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=1)
            return True
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        finally:
            conn.terminate()


def _ignore(*errors: type[BaseException]) -> contextlib.suppress:
    return contextlib.suppress(*errors)


# --- the storm ------------------------------------------------------------------------------


@dataclass
class Answer:
    phase: str
    started: float
    finished: float
    status: str  # "201", "503 busy", ..., "conn-error" (a worker died), "timeout"
    key: str
    reference: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Storm:
    base: str
    tokens: list[str]
    event_id: int
    ticket_type_ids: list[int]
    phase: str = "warmup"
    answers: list[Answer] = field(default_factory=list)
    running: bool = True

    async def client(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[n]}"}
        item = {
            "ticket_type_id": self.ticket_type_ids[n % len(self.ticket_type_ids)],
            "quantity": 1,
        }
        body = {"event_id": self.event_id, "items": [item]}
        async with httpx.AsyncClient(base_url=self.base, timeout=20) as http:
            while self.running:
                key = uuid.uuid4().hex
                started = time.monotonic()
                try:
                    r = await http.post(
                        "/api/bookings/", json=body, headers={**headers, "Idempotency-Key": key}
                    )
                    status = str(r.status_code)
                    reference = r.json().get("booking_reference") if r.status_code == 201 else None
                    if r.status_code >= 500:  # "503 busy", "503 service_unavailable"
                        status += " " + str(r.json().get("code", "?"))
                except httpx.TimeoutException:
                    status, reference = "timeout", None
                except httpx.TransportError:
                    status, reference = "conn-error", None
                # Counted in the phase during which the answer arrived.
                self.answers.append(
                    Answer(self.phase, started, time.monotonic(), status, key, reference)
                )
                if status != "201":
                    await asyncio.sleep(0.05)


# --- setup ------------------------------------------------------------------------------------


async def seed(url: str) -> tuple[list[str], int, list[int]]:
    """An organizer, CLIENTS attendees (tokens made here), one event with two ticket types."""
    from app.core.security import create_token

    conn = await asyncpg.connect(url)
    try:
        organizer = await conn.fetchval(
            "INSERT INTO users (username, email, hashed_password, role) "
            "VALUES ('chaos-org', 'org@chaos.test', 'x', 'organizer') RETURNING id"
        )
        attendees = [
            await conn.fetchval(
                "INSERT INTO users (username, email, hashed_password, role) "
                "VALUES ($1, $2, 'x', 'attendee') RETURNING id",
                f"chaos{n}",
                f"chaos{n}@chaos.test",
            )
            for n in range(CLIENTS)
        ]
        event_id = await conn.fetchval(
            "INSERT INTO events (organizer_id, name, description, location, start_time, "
            "total_capacity) VALUES ($1, 'Chaos', '', 'Nowhere', now() + interval '30 days', $2) "
            "RETURNING id",
            organizer,
            2 * TICKETS,
        )
        ticket_types = [
            await conn.fetchval(
                "INSERT INTO ticket_types (event_id, name, description, price, quantity_available) "
                "VALUES ($1, $2, '', 10, $3) RETURNING id",
                event_id,
                name,
                TICKETS,
            )
            for name in ("A", "B")
        ]
    finally:
        await conn.close()
    tokens = [
        create_token(
            user_id=user_id,
            token_type="access",
            key=SECRET_KEY,
            lifetime=timedelta(hours=2),
        )[0]
        for user_id in attendees
    ]
    return tokens, event_id, ticket_types


def start_service(
    db_url: str, redis_url: str | None, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SECRET_KEY": SECRET_KEY,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_BOOKINGS": "1000000/minute",
        "DB_POOL_SIZE": "5",
        "DB_MAX_OVERFLOW": "0",
        "DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "LOG_LEVEL": "WARNING",
        "SMTP_HOST": "",
    }
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    command = [
        sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "2", "--no-access-log", "--no-proxy-headers",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the service exited")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the service did not become ready")


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    started: float
    ended: float = 0.0
    db_back_at: float | None = None  # when PostgreSQL answered again


async def wait_until_answers(pg: PrivatePostgres) -> float:
    while not await pg.answers():  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.05)
    return time.monotonic()


async def run(short: bool, keep: bool = False) -> int:
    stop_seconds = 4.0 if short else 20.0
    settle = 3.0 if short else 6.0
    freeze_seconds = POOL_TIMEOUT + 2
    root = Path(tempfile.mkdtemp(prefix="eb-chaos-"))
    os.chmod(root, 0o755)
    pg = PrivatePostgres(root)
    pg.start()
    redis_process: subprocess.Popen[bytes] | None = None
    redis_url = None
    if shutil.which("redis-server"):
        redis_port = free_port()
        redis_process = subprocess.Popen(  # noqa: ASYNC220 - once, at setup
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    service: subprocess.Popen[bytes] | None = None
    try:
        from app.core.migrate import upgrade_head

        await asyncio.to_thread(
            upgrade_head, pg.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        )
        tokens, event_id, ticket_types = await seed(pg.url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        service = start_service(pg.url, redis_url, port, root / "service.log")
        await asyncio.to_thread(wait_ready, base, service)

        storm = Storm(base, tokens, event_id, ticket_types)
        clients = [asyncio.create_task(storm.client(n)) for n in range(CLIENTS)]
        phases: list[Phase] = []

        async def phase(name: str) -> Phase:
            if phases:
                phases[-1].ended = time.monotonic()
            storm.phase = name
            phases.append(Phase(name, time.monotonic()))
            return phases[-1]

        await phase("warmup")
        await asyncio.sleep(settle)

        current = await phase("restart")
        await asyncio.to_thread(pg.restart)
        current.db_back_at = await wait_until_answers(pg)
        await asyncio.sleep(settle)

        current = await phase(f"stop {stop_seconds:.0f}s")
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(stop_seconds)
        await asyncio.to_thread(pg.start)
        current.db_back_at = await wait_until_answers(pg)
        await asyncio.sleep(settle)

        current = await phase(f"freeze {freeze_seconds:.0f}s")
        pg.signal_all(signal.SIGSTOP)
        await asyncio.sleep(freeze_seconds)
        pg.signal_all(signal.SIGCONT)
        current.db_back_at = await wait_until_answers(pg)
        await asyncio.sleep(settle)

        await phase("kill worker")
        workers = psutil.Process(service.pid).children()
        workers = [w for w in workers if "multiprocessing" in " ".join(w.cmdline())] or workers
        if workers:
            workers[0].send_signal(signal.SIGKILL)
        await asyncio.sleep(settle)

        if redis_process is not None:
            await phase("redis stop")
            redis_process.terminate()
            redis_process.wait(timeout=10)
            await asyncio.sleep(settle)

        await phase("after")
        await asyncio.sleep(settle / 2)
        phases[-1].ended = time.monotonic()
        storm.running = False
        await asyncio.gather(*clients)
        failures = report(phases, storm, await invariants(pg.url, storm, ticket_types))
        return 1 if failures else 0
    finally:
        if service is not None:
            service.terminate()
            with _ignore(subprocess.TimeoutExpired):
                service.wait(timeout=15)
            if service.poll() is None:
                service.kill()
        if redis_process is not None and redis_process.poll() is None:
            redis_process.terminate()
        with _ignore(Exception):
            pg.signal_all(signal.SIGCONT)
            pg.stop()
        if keep:
            print(f"logs kept in {root} (service.log, postgres.log)")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def invariants(url: str, storm: Storm, ticket_types: list[int]) -> dict[str, Any]:
    created = [a.reference for a in storm.answers if a.status == "201"]
    failed_keys = [a.key for a in storm.answers if a.status[:1] == "5"]
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM bookings WHERE booking_reference = ANY($1::uuid[]) "
            "AND status = 'confirmed'",
            created,
        )
        written_after_5xx = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE key = ANY($1) AND booking_id IS NOT NULL",
            failed_keys,
        )
        mismatched = await conn.fetchval(
            """
            SELECT count(*) FROM ticket_types t
            WHERE t.id = ANY($1) AND (
                t.quantity_available + t.quantity_sold <> $2
                OR t.quantity_sold <> (
                    SELECT coalesce(sum(i.quantity), 0) FROM booking_items i
                    JOIN bookings b ON b.id = i.booking_id
                    WHERE i.ticket_type_id = t.id AND b.status = 'confirmed'))
            """,
            ticket_types,
            TICKETS,
        )
        event_ok = await conn.fetchval(
            """
            SELECT e.tickets_sold = (SELECT coalesce(sum(quantity_sold), 0) FROM ticket_types
                                     WHERE event_id = e.id)
            FROM events e WHERE e.id = $1
            """,
            storm.event_id,
        )
    finally:
        await conn.close()
    return {
        "answered 201": len(created),
        "201 found in the database": found,
        "answered 5xx": len(failed_keys),
        "5xx with a booking written": written_after_5xx,
        "ticket types with counters off": mismatched,
        "event counter matches": bool(event_ok),
    }


def report(phases: list[Phase], storm: Storm, checks: dict[str, Any]) -> int:
    statuses = sorted({a.status for a in storm.answers})
    header = ["phase", *statuses, "max latency", "recovery"]
    rows = []
    failures = 0
    for p in phases:
        answers = [a for a in storm.answers if a.phase == p.name]
        counts = Counter(a.status for a in answers)
        latency = max((a.latency for a in answers), default=0.0)
        recovery = "-"
        if p.db_back_at is not None:
            firsts = [
                a.finished for a in answers if a.status == "201" and a.finished >= p.db_back_at
            ]
            recovery = f"{min(firsts) - p.db_back_at:.2f}s" if firsts else "none"
        rows.append(
            [p.name, *(str(counts.get(s, 0)) for s in statuses), f"{latency:.2f}s", recovery]
        )
        failures += sum(n for status, n in counts.items() if status.startswith("500"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join
    print(line(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print(line(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    for name, value in checks.items():
        print(f"{name:32} {value}")
    if checks["201 found in the database"] != checks["answered 201"]:
        failures += 1
    if checks["5xx with a booking written"] or checks["ticket types with counters off"]:
        failures += 1
    if not checks["event counter matches"]:
        failures += 1
    print("\nRESULT:", "FAIL" if failures else "OK")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="short outages (a few seconds)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.short, args.keep)))


if __name__ == "__main__":
    main()
