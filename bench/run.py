"""`make bench`: the booking transaction under pgbench, then under the service, in one table.

    python -m bench [--duration 15] [--clients 64,16] [--workers auto|1|2]
                    [--generator auto|wrk|python]

On a fresh migrated throwaway database (on the server DATABASE_URL points at, else the
local 127.0.0.1:5432 server, else the embedded one), for each shape (hot: every client
on one event; spread: a random event of 50) and client count, it runs pgbench with the
service's own booking transaction, then the service under uvicorn with the same load,
checks the invariants in SQL after each run, and measures the events list against a
trivial endpoint. At the most clients, hot and spread also run as a booking in two
requests (a hold, then its checkout) against pgbench running the same statements. It
prints one table and writes it to bench/results/latest.md. Exit status 1 when an
invariant breaks or the service answered a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Integer, String, text
from sqlalchemy.dialects.postgresql import ARRAY

from app.core.db import CompiledStatement, compile_once, param
from bench import report
from bench.pgbench import (
    BOOKING_SCRIPT,
    HOLD_SCRIPT,
    PgbenchFailed,
    find_pgbench,
    pgbench_version,
    run_pgbench,
)
from bench.service import (
    CpuMeter,
    Generator,
    LoadResult,
    Service,
    ServiceConfig,
    issue_tokens,
    read_dockerfile,
    release_active_holds,
    shipped_config,
    stripped_config,
)

BENCH_DIR = Path(__file__).resolve().parent
LOCAL_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PASSWORD = "Bench-password-2718"
CAPACITY = 100_000_000  # never sells out within a run
LOCK_TIMEOUT_MS = 5000  # the service's default LOCK_TIMEOUT_MS
ATTENDEES = 64
SPREAD_EVENTS = 50
LIST_PATH = "/api/events/?page_size=10"
TRIVIAL_PATH = "/health/live"
LOCAL_REDIS = "redis://127.0.0.1:6379"
REDIS_DB = 14  # the bench's database number on a shared Redis server
CONFIGS = ("shipped", "stripped")
# More holds than a holds-alone row can make per second: each hold an attendee of its own.
HOLDERS_PER_SECOND = 1500


# ---------------------------------------------------------------- database


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


async def _answers(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(_dsn(url)), timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def server_url() -> tuple[str, str]:
    """(URL of a server to make the bench database on, where it came from)."""
    if url := os.environ.get("DATABASE_URL"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1], "DATABASE_URL"
    if asyncio.run(_answers(LOCAL_SERVER)):
        return LOCAL_SERVER, "local server"
    from app.core.embedded import start_embedded_postgres

    data_dir = Path(tempfile.gettempdir()) / "event-booking-bench"
    return start_embedded_postgres(data_dir), "embedded server"


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(server))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server: str) -> tuple[str, str]:
    from app.core.migrate import upgrade_head

    name = f"bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    url = _with_database(server, name)
    upgrade_head(url)
    return name, url


def drop_database(server: str, name: str) -> None:
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Seed:
    hot: list[tuple[int, int]]  # (event id, ticket type id)
    spread: list[tuple[int, int]]
    attendee_ids: list[int]
    usernames: list[str]
    holder_ids: list[int] = field(default_factory=list)  # attendees with minted tokens


def _seed_statement(sql: str, **types: Any) -> CompiledStatement:
    return compile_once(text(sql).bindparams(*(param(n, t) for n, t in types.items())))


_SEED_ORGANIZER = _seed_statement(
    "INSERT INTO users (username, email, hashed_password, role) "
    "VALUES ('bench_organizer', 'bench_organizer@example.com', :hashed, 'organizer') "
    "RETURNING id",
    hashed=String,
)
_SEED_ATTENDEES = _seed_statement(
    "INSERT INTO users (username, email, hashed_password, role) "
    "SELECT :prefix || g, :prefix || g || '@example.com', :hashed, "
    "'attendee' FROM generate_series(1, :attendees) g ORDER BY g RETURNING id, username",
    prefix=String,
    hashed=String,
    attendees=Integer,
)
_SEED_EVENTS = _seed_statement(
    "INSERT INTO events (organizer_id, name, description, location, start_time, end_time, "
    "total_capacity) SELECT :organizer_id, 'Bench event ' || g, 'Seeded by the benchmark', "
    "'Benchmark Hall', now() + interval '30 days', now() + interval '30 days 3 hours', "
    ":capacity "
    "FROM generate_series(0, :last) g ORDER BY g RETURNING id",
    organizer_id=BigInteger,
    capacity=Integer,
    last=Integer,
)
_SEED_TICKET_TYPES = _seed_statement(
    "INSERT INTO ticket_types (event_id, name, price, quantity_available) "
    "SELECT id, 'Standard', 10.00, :capacity FROM unnest(:event_ids) AS id ORDER BY id "
    "RETURNING event_id, id",
    event_ids=ARRAY(BigInteger),
    capacity=Integer,
)


async def _seed(url: str, attendees: int, spread_events: int, holders: int) -> Seed:
    from app.core.security import pwd_context

    hashed = pwd_context.hash(PASSWORD)
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            organizer = await _SEED_ORGANIZER.fetchval(conn, hashed=hashed)
            users = await _SEED_ATTENDEES.fetch(
                conn, prefix="bench_attendee_", hashed=hashed, attendees=attendees
            )
            holders_ = await _SEED_ATTENDEES.fetch(
                conn, prefix="bench_holder_", hashed=hashed, attendees=holders
            )
            # Event 0 is the hot one; ids come out consecutive on a fresh database.
            events = await _SEED_EVENTS.fetch(
                conn, organizer_id=organizer, capacity=CAPACITY, last=spread_events
            )
            pairs = await _SEED_TICKET_TYPES.fetch(
                conn, event_ids=[e["id"] for e in events], capacity=CAPACITY
            )
            await conn.execute(
                "CREATE TABLE issued_tickets AS "
                "SELECT id AS ticket_type_id, quantity_available AS quantity FROM ticket_types"
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    by_event = sorted((p["event_id"], p["id"]) for p in pairs)
    return Seed(
        hot=by_event[:1],
        spread=by_event[1:],
        attendee_ids=sorted(u["id"] for u in users),
        usernames=[u["username"] for u in sorted(users, key=lambda u: u["id"])],
        holder_ids=sorted(u["id"] for u in holders_),
    )


def seed(
    url: str, attendees: int = ATTENDEES, spread_events: int = SPREAD_EVENTS, holders: int = 0
) -> Seed:
    """An organizer, attendees, one hot event and `spread_events` others, one ticket type each;
    and `holders` more attendees, whose tokens the bench mints (for the holds-alone rows)."""
    return asyncio.run(_seed(url, attendees, spread_events, holders))


async def _query(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def check_invariants(url: str) -> list[str]:
    """Every broken invariant of the counters, in words (empty when all hold)."""
    sql = (BENCH_DIR / "sql" / "invariants.sql").read_text()
    return [r[0] for r in asyncio.run(_query(url, sql))]


def booking_count(url: str) -> int:
    return asyncio.run(_query(url, "SELECT count(*) FROM bookings"))[0][0]


def settled_booking_count(url: str, timeout: float = 20.0) -> int:
    """The number of bookings once requests still in the server (the generator has hung
    up on them) have finished: unchanged for a second."""
    deadline = time.monotonic() + timeout
    count = booking_count(url)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = booking_count(url)
        if again == count:
            break
        count = again
    return count


def sessions_opened(url: str) -> int:
    rows = asyncio.run(
        _query(url, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    )
    return int(rows[0][0] or 0) if rows else 0


def vacuum_counters(url: str) -> None:
    """Clear the dead row versions the previous run left on the counters' rows."""
    asyncio.run(_query(url, "VACUUM ANALYZE events, ticket_types"))


def server_version(url: str) -> str:
    return asyncio.run(_query(url, "SHOW server_version"))[0][0]


# ---------------------------------------------------------------- Redis


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


@contextmanager
def bench_redis(requested: str | None) -> Iterator[tuple[str | None, str]]:
    """(REDIS_URL for the shipped configuration, where it came from): --redis-url, else
    REDIS_URL, else the local server (database 14), else a private redis-server."""
    if requested is not None:
        yield (requested or None), "--redis-url"
        return
    if url := os.environ.get("REDIS_URL"):
        yield url, "REDIS_URL"
        return
    if _redis_answers(LOCAL_REDIS):
        yield f"{LOCAL_REDIS}/{REDIS_DB}", "local server"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None, "none: no Redis answers and redis-server is not installed"
        return
    from bench.service import free_port

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield url, "private redis-server"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in (
        "uvicorn",
        "uvloop",
        "httptools",
        "fastapi",
        "starlette",
        "pydantic",
        "sqlalchemy",
        "asyncpg",
        "redis",
        "arq",
        "prometheus-client",
    ):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} —")
    return ", ".join(found)


def mint_tokens(user_ids: list[int]) -> list[str]:
    """Access tokens signed with the service's key, as POST /api/auth/login/ would issue
    them: for more attendees than logging each in would allow in a bench's time."""
    from datetime import timedelta

    from app.core.security import create_token
    from bench.service import SECRET_KEY

    return [
        create_token(
            user_id=user_id, token_type="access", key=SECRET_KEY, lifetime=timedelta(hours=2)
        )[0]
        for user_id in user_ids
    ]


# ---------------------------------------------------------------- runs


def _pgbench_variables(events: list[tuple[int, int]], seed_: Seed) -> dict[str, int]:
    return {
        "ev_lo": events[0][0],
        "ev_hi": events[-1][0],
        "tt_off": events[0][1] - events[0][0],
        "u_lo": seed_.attendee_ids[0],
        "u_hi": seed_.attendee_ids[-1],
    }


def _consistent(url: str, bookings_before: int, confirmed: int, clients: int) -> list[str]:
    """The counters' invariants; every booking confirmed to a client exists, and no more
    were written than confirmed plus the requests in flight when the generator stopped."""
    created = settled_booking_count(url) - bookings_before
    problems = check_invariants(url)
    if created < confirmed:
        problems.append(f"{confirmed} bookings confirmed to clients, {created} in the database")
    elif created > confirmed + clients:
        problems.append(f"{created} bookings written, {confirmed} confirmed (+{clients} in flight)")
    return problems


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        database: str,
        seed_: Seed,
        configs: dict[str, ServiceConfig] | None = None,
    ) -> None:
        self.args = args
        self.configs = configs or {"stripped": stripped_config()}
        self.url = url
        self.database = database
        self.seed = seed_
        self.generator = Generator(args.generator)
        self.tokens: list[str] = []
        self.holders_used = 0  # of seed_.holder_ids, by the holds-alone rows
        self.tokens_file = Path(tempfile.mkstemp(prefix="bench-tokens-", suffix=".txt")[1])
        self.pgbench = find_pgbench()
        self.service_env = {
            name: os.environ[name]
            for name in ("DB_POOL_SIZE", "DB_MAX_OVERFLOW")
            if name in os.environ
        }
        if args.pool_size is not None:
            self.service_env["DB_POOL_SIZE"] = str(args.pool_size)
        if args.max_overflow is not None:
            self.service_env["DB_MAX_OVERFLOW"] = str(args.max_overflow)

    def shape(self, name: str) -> list[tuple[int, int]]:
        return self.seed.hot if name == "hot" else self.seed.spread

    @contextmanager
    def service(self, workers: int, config: str = "stripped") -> Iterator[Service]:
        service = self.start_service(workers, config)
        try:
            yield service
        finally:
            service.__exit__(None, None, None)

    def start_service(self, workers: int, config: str = "stripped") -> Service:
        service = Service(self.url, workers, self.service_env, self.configs[config]).__enter__()
        try:
            if not self.tokens:
                self.tokens = issue_tokens(service.base_url, self.seed.usernames, PASSWORD)
                self.tokens_file.write_text("\n".join(self.tokens) + "\n")
            # Warm up: open the pools, fill the statement caches.
            self.book(service, "spread", max(self.args.clients), min(2, self.args.duration))
        except BaseException:
            service.__exit__(None, None, None)
            raise
        return service

    def book(self, service: Service, shape: str, clients: int, duration: float) -> LoadResult:
        return self.load("booking", service, shape, clients, duration)

    def load(
        self, kind: str, service: Service, shape: str, clients: int, duration: float
    ) -> LoadResult:
        """Bookings, holds then their checkouts, or holds alone (``Generator.SCRIPTS``);
        holds alone with tokens minted for attendees no row has used yet."""
        tokens, tokens_file = self.tokens, self.tokens_file
        if kind == "hold alone":
            count = HOLDERS_PER_SECOND * self.args.duration
            holders = self.seed.holder_ids[self.holders_used : self.holders_used + count]
            self.holders_used += count
            tokens = mint_tokens(holders)
            tokens_file = Path(tempfile.mkstemp(prefix="bench-holders-", suffix=".txt")[1])
            tokens_file.write_text("\n".join(tokens) + "\n")
        try:
            return self.generator.attendees(
                kind,
                service.base_url,
                tokens_file=tokens_file,
                tokens=tokens,
                events=self.shape(shape),
                clients=clients,
                duration=duration,
            )
        finally:
            if tokens_file != self.tokens_file:
                tokens_file.unlink(missing_ok=True)

    def measured(self, service: Service, run: Callable[[], LoadResult]) -> LoadResult:
        with CpuMeter(service, self.database, lambda: sessions_opened(self.url)) as meter:
            result = run()
        return meter.fill(result)

    def pgbench_row(self, row: report.Row, shape: str, ctx: report.Context) -> None:
        """pgbench with the row's script: a booking, or a hold and its checkout."""
        if self.pgbench is None or self.args.skip_pgbench or row.kind == "hold alone":
            return
        vacuum_counters(self.url)
        before = booking_count(self.url)
        try:
            row.pgbench = run_pgbench(
                self.url,
                clients=row.clients,
                duration=self.args.duration,
                variables=_pgbench_variables(self.shape(shape), self.seed),
                lock_timeout_ms=LOCK_TIMEOUT_MS,
                pgbench=self.pgbench,
                script=HOLD_SCRIPT if row.kind == "hold" else BOOKING_SCRIPT,
            )
        except PgbenchFailed as exc:
            # e.g. the shared server's max_connections is taken by other clients
            ctx.notes.append(f"{row.label}: pgbench did not run: {exc}")
            return
        row.problems = _consistent(self.url, before, row.pgbench.transactions, row.clients)
        if row.pgbench.failed or row.pgbench.aborted_clients:
            row.problems.append(
                f"pgbench: {row.pgbench.failed} failed transactions, "
                f"{row.pgbench.aborted_clients} aborted clients: {row.pgbench.errors}"
            )

    def service_booking_row(self, service: Service, row: report.Row, shape: str) -> None:
        """The service under the row's load (bookings, or holds and their checkouts), then
        the invariants and the bookings confirmed to clients against the database."""
        before = settled_booking_count(self.url)  # after the warm-up's last requests
        vacuum_counters(self.url)
        row.load = self.measured(
            service, lambda: self.load(row.kind, service, shape, row.clients, self.args.duration)
        )
        problems = _consistent(self.url, before, row.bookings, row.clients)
        row.problems = (row.problems or []) + problems
        if row.kind == "hold":  # the next run's attendees start without a hold
            release_active_holds(service.base_url, self.tokens)

    def choose_workers(self, ctx: report.Context) -> int:
        """1 or 2 workers: the one with more bookings/s (geometric mean of hot and spread)."""
        clients = max(self.args.clients)
        scores = {}
        for workers in (1, 2):
            service = self.start_service(workers, "stripped")
            try:
                hot = self.book(service, "hot", clients, self.args.choose_duration)
                spread = self.book(service, "spread", clients, self.args.choose_duration)
            finally:
                service.__exit__(None, None, None)
            scores[workers] = (hot.per_second("201") * spread.per_second("201")) ** 0.5
            ctx.worker_choice.append(
                f"{workers} worker(s), c={clients}, {self.args.choose_duration} s each: hot "
                f"{hot.per_second('201'):,.0f} bookings/s (p99 {hot.p99_ms:.0f} ms), spread "
                f"{spread.per_second('201'):,.0f} bookings/s (p99 {spread.p99_ms:.0f} ms)"
            )
        chosen = max(scores, key=lambda w: scores[w])
        ctx.worker_choice.append(f"chosen: {chosen} (higher geometric mean of the two)")
        problems = check_invariants(self.url)
        if problems:
            ctx.notes.append(f"invariants broken after the worker-count runs: {problems}")
        return chosen


def _named(args: argparse.Namespace, label: str) -> bool:
    # "hold->checkout hot c=64" names the row "hold→checkout hot c=64" too.
    return bool(args.rows) and label in [r.replace("->", "→") for r in args.rows]


def _wanted(args: argparse.Namespace, label: str) -> bool:
    return not args.rows or _named(args, label)


def run(args: argparse.Namespace) -> int:
    with bench_redis(args.redis_url) as (redis_url, redis_origin):
        return _run(args, redis_url, redis_origin)


def _run(args: argparse.Namespace, redis_url: str | None, redis_origin: str) -> int:
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    server, origin = server_url()
    database, url = create_database(server)
    print(f"bench database {database} on the {origin}", file=sys.stderr)
    dockerfile = read_dockerfile()
    all_configs = {
        "shipped": shipped_config(redis_url, dockerfile),
        "stripped": stripped_config(dockerfile),
    }
    unknown = set(args.configs) - set(all_configs)
    if unknown or not args.configs:
        raise SystemExit(f"--configs: {', '.join(CONFIGS)} (got {args.configs})")
    configs = {name: all_configs[name] for name in args.configs}
    rows: list[report.Row] = []
    try:
        c_max = max(args.clients)
        # Holds alone (named in --rows only): each hold by an attendee of its own.
        alone = [shape for shape in ("hot", "spread") if _named(args, f"hold {shape} c={c_max}")]
        holders = HOLDERS_PER_SECOND * args.duration
        seed_ = seed(url, attendees=args.attendees, holders=holders * len(alone) * len(configs))
        bench = Bench(args, url, database, seed_, configs)
        ctx = report.Context(
            started=started,
            database=database,
            postgres_version=server_version(url),
            pgbench=pgbench_version(bench.pgbench) if bench.pgbench else "not found",
            generator=bench.generator.name,
            workers=None,
            service_env=bench.service_env,
            load_before=load_before,
            duration=args.duration,
            versions=versions(),
            redis=(
                f"Redis {redis_version(redis_url)} ({redis_origin}, {redis_url})"
                if redis_url
                else f"no Redis ({redis_origin})"
            ),
        )
        if bench.pgbench is None:
            ctx.notes.append("pgbench not found: no PostgreSQL baseline in this run")
        if "shipped" in configs and redis_url is None:
            ctx.notes.append("shipped without Redis and the job worker: no Redis was found")
        shapes = [
            (shape, c)
            for shape in ("hot", "spread")
            for c in args.clients
            if _wanted(args, f"{shape} c={c}")
        ]
        booking_rows: dict[tuple[Any, ...], list[report.Row]] = {
            (shape, c): [
                report.Row(f"{shape} c={c}", "booking", c, config=name) for name in configs
            ]
            for shape, c in shapes
        }
        booking_rows |= {
            (shape, c_max, "alone"): [
                report.Row(f"hold {shape} c={c_max}", "hold alone", c_max, config=name)
                for name in configs
            ]
            for shape in alone
        }
        # A booking in two requests, at the most clients only (the bench's time).
        booking_rows |= {
            (shape, c_max, "hold"): [
                report.Row(f"hold→checkout {shape} c={c_max}", "hold", c_max, config=name)
                for name in configs
            ]
            for shape in ("hot", "spread")
            if _wanted(args, f"hold→checkout {shape} c={c_max}")
        }
        read_labels = [
            label
            for label in (f"events list c={c_max}", f"trivial c={c_max}")
            if _wanted(args, label) and not args.skip_service
        ]
        read_rows = {
            name: [report.Row(label, "get", c_max, config=name) for label in read_labels]
            for name in configs
        }
        rows = [r for pair in booking_rows.values() for r in pair]
        rows += [r for name in configs for r in read_rows[name]]

        if not args.skip_service:
            if args.workers == "auto":
                ctx.workers = bench.choose_workers(ctx)
            elif args.workers is None:
                ctx.workers = dockerfile.workers  # WEB_CONCURRENCY of the image
            else:
                ctx.workers = int(args.workers)
            ctx.configs = [config.describe(ctx.workers) for config in configs.values()]
        try:
            # pgbench and the configurations take turns row by row, so that a ratio compares
            # runs a few seconds apart (the machine is shared). The service is stopped while
            # pgbench runs: its idle pool would hold connections pgbench needs.
            for (shape, *_), pair in booking_rows.items():
                label = pair[0].label
                print(f"{label}: pgbench", file=sys.stderr)
                bench.pgbench_row(pair[0], shape, ctx)
                for row in pair[1:]:
                    row.pgbench = pair[0].pgbench
                if ctx.workers is None:
                    continue
                for row in pair:
                    print(f"{label}: service, {row.config}", file=sys.stderr)
                    with bench.service(ctx.workers, row.config) as service:
                        bench.service_booking_row(service, row, shape)
            if ctx.workers is not None:
                for name, reads in read_rows.items():
                    if not reads:
                        continue
                    trivial = next((r for r in reads if r.label.startswith("trivial")), None)
                    with bench.service(ctx.workers, name) as service:
                        for row in reversed(reads):  # the reference first
                            path = TRIVIAL_PATH if row is trivial else LIST_PATH
                            print(f"{row.label}: service, {name}", file=sys.stderr)
                            row.load = bench.measured(
                                service,
                                lambda path=path, c=row.clients, s=service: bench.generator.get(
                                    s.base_url, path=path, clients=c, duration=args.duration
                                ),
                            )
                            if row is not trivial and trivial is not None:
                                row.reference = trivial.load
        finally:
            bench.tokens_file.unlink(missing_ok=True)
        ctx.load_after = os.getloadavg()
        text = report.render(rows, ctx)
    finally:
        if not args.keep_db:
            drop_database(server, database)
    print(text)
    if args.output:
        report.write(Path(args.output), text)
        print(f"\nwritten to {args.output}", file=sys.stderr)
    broken = any(r.problems for r in rows)
    server_errors = any(r.load.server_errors() for r in rows if r.load is not None)
    return 1 if broken or server_errors else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument(
        "--clients",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[64, 16],
        help="comma-separated client counts (default 64,16)",
    )
    parser.add_argument(
        "--workers",
        default=None,
        choices=["auto", "1", "2", "3", "4"],
        help="worker processes (default: WEB_CONCURRENCY of the Dockerfile; auto: the faster "
        "of 1 and 2 in the stripped configuration)",
    )
    parser.add_argument(
        "--configs",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=list(CONFIGS),
        help="comma-separated: shipped (the Dockerfile's command with Redis and the job "
        "worker), stripped (no access log, no Redis, rate limits off); default both",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis of the shipped configuration ('' for none); default REDIS_URL, else "
        f"{LOCAL_REDIS}/{REDIS_DB}, else a private redis-server",
    )
    parser.add_argument("--choose-duration", type=int, default=8, help="seconds per choice run")
    parser.add_argument("--generator", default="auto", choices=["auto", "wrk", "python"])
    parser.add_argument(
        "--attendees", type=int, default=ATTENDEES, help="attendees (and access tokens) to seed"
    )
    parser.add_argument("--pool-size", type=int, help="DB_POOL_SIZE for the service")
    parser.add_argument("--max-overflow", type=int, help="DB_MAX_OVERFLOW for the service")
    parser.add_argument(
        "--rows",
        type=lambda s: [r.strip() for r in s.split(";")],
        help="only these rows, ';'-separated labels, e.g. 'hot c=64;spread c=64', "
        "'hold->checkout hot c=64' (the hold rows run at the most clients only); "
        "'hold hot c=64' and 'hold spread c=64' (POST /api/holds/ alone, each by an "
        "attendee of its own) run only when named",
    )
    parser.add_argument("--skip-service", action="store_true", help="pgbench and invariants only")
    parser.add_argument("--skip-pgbench", action="store_true")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--output",
        default=str(BENCH_DIR / "results" / "latest.md"),
        help="markdown file for the table ('' for none)",
    )
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Unwind as on Ctrl-C, so the service is stopped and the bench database dropped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    code = run(parse_args(argv))
    print(f"bench took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return code
