"""Where a request's CPU goes: `python -m bench.profile` (`make profile`).

The app is called in-process through ASGI, one request at a time, on a throwaway
database seeded like `make bench`'s: no uvicorn, no network, no load generator on
the same cores. For POST /api/bookings/, POST /api/holds/ (each by an attendee of
its own: one active hold per attendee and event), the checkout of those holds, GET
/api/events/ and GET /health/live it prints the CPU time per request (process time
over N calls) and the SQL statements each sent (PostgreSQL's own count), then, from
cProfile, each package's share of the CPU spent in its own code. Time waiting for PostgreSQL
(epoll) is left out; cProfile slows pure-Python code more than C, so read the
shares as proportions, not as times.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson

from bench.run import create_database, drop_database, seed, server_url

PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "asyncpg",
    "sqlalchemy",
    "jose",
    "asyncio",
    "prometheus_client",
    "/app/",
    "json",
    "anyio",
)

Call = Callable[[], Awaitable[int]]


def shares(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """(package, % of the CPU spent in its own code), largest first."""
    by_package: collections.Counter[str] = collections.Counter()
    for (filename, _line, function), stat in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        own_time = stat[2]
        if "epoll" in function or function.startswith("<method 'select'"):
            continue  # waiting for the database
        if filename == "~":
            by_package["C calls (sockets, greenlet, pydantic-core)"] += own_time
            continue
        package = next((p.strip("/") for p in PACKAGES if p in filename), "other (stdlib)")
        by_package[package] += own_time
    total = sum(by_package.values()) or 1.0
    return [(name, 100 * t / total) for name, t in by_package.most_common()]


def asgi_caller(app: Any) -> Callable[..., Awaitable[int]]:
    """call(method, path, body, headers) -> status; ``answer``, when given, gets the body."""

    async def call(
        method: str,
        path: str,
        body: bytes = b"",
        headers: tuple = (),
        answer: Callable[[bytes], None] | None = None,
    ) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and answer is not None:
                answer(message.get("body", b""))

        await app(scope, receive, send)
        return status

    return call


WARM_UP = 50  # calls before measuring: pools, statement caches


def calls_per_endpoint(requests: int) -> int:
    return WARM_UP + requests + requests // 2


async def measure(
    calls: dict[str, tuple[Call, int]],
    requests: int,
    statements: Callable[[], Awaitable[int]],
) -> None:
    for label, (call, expected) in calls.items():
        for _ in range(WARM_UP):
            status = await call()
            if status != expected:
                raise SystemExit(f"{label}: {status}, expected {expected}")
        sent = await statements()
        started = time.process_time()
        for _ in range(requests):
            await call()
        cpu_ms = (time.process_time() - started) * 1000 / requests
        per_request = (await statements() - sent) / requests
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests // 2):
            await call()
        profile.disable()
        parts = ", ".join(f"{name} {share:.0f} %" for name, share in shares(profile) if share >= 1)
        print(
            f"{label}: {cpu_ms:.2f} ms CPU per request, {per_request:.1f} SQL statements "
            f"per request\n    {parts}"
        )


class StatementCounter:
    """Counts the SQL statements this process sends (BEGIN and COMMIT included: each is
    a round trip): those run on asyncpg connections directly, through asyncpg's query
    loggers, and those SQLAlchemy runs (on asyncpg's prepared statements, which the
    loggers do not see), through its ``before_cursor_execute`` event."""

    def __init__(self) -> None:
        self.sent = 0

    def install(self) -> None:
        from asyncpg.connection import Connection
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        counter = self
        original = Connection.__init__

        def init(conn: Connection, *args: Any, **kwargs: Any) -> None:
            original(conn, *args, **kwargs)
            conn.add_query_logger(counter.count)

        Connection.__init__ = init  # type: ignore[method-assign]
        event.listen(Engine, "before_cursor_execute", lambda *_: counter.count(None))

    def count(self, record: object) -> None:
        self.sent += 1

    async def __call__(self) -> int:
        await asyncio.sleep(0)  # the loggers run soon after each statement
        return self.sent


async def run(url: str, attendee_ids: list[int], event: tuple[int, int], requests: int) -> None:
    os.environ.update(DATABASE_URL=url, RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING")
    os.environ.setdefault("SECRET_KEY", "bench-profile-secret-key-0123456789abcdef")
    from app.core.config import get_settings
    from app.core.security import create_token
    from app.main import create_app

    statements = StatementCounter()
    statements.install()
    get_settings.cache_clear()
    app = create_app()
    call = asgi_caller(app)
    async with app.router.lifespan_context(app):

        def headers_of(user_id: int) -> tuple:
            token, _ = create_token(
                user_id=user_id,
                token_type="access",
                key=app.state.settings.signing_key,
                lifetime=timedelta(minutes=15),
            )
            return (
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-type", b"application/json"),
            )

        headers = headers_of(attendee_ids[0])
        body = orjson.dumps(
            {"event_id": event[0], "items": [{"ticket_type_id": event[1], "quantity": 1}]}
        )
        # A hold per attendee (one active hold per attendee and event), then its checkout.
        holders = collections.deque(headers_of(i) for i in attendee_ids)
        held: collections.deque[tuple[tuple, str]] = collections.deque()

        async def hold() -> int:
            holder = holders.popleft()

            def keep(answer: bytes) -> None:
                if answer:
                    held.append((holder, orjson.loads(answer)["hold_reference"]))

            return await call("POST", "/api/holds/", body, holder, keep)

        async def checkout() -> int:
            holder, reference = held.popleft()
            return await call("POST", f"/api/holds/{reference}/checkout/", b"{}", holder)

        await measure(
            {
                "POST /api/bookings/": (lambda: call("POST", "/api/bookings/", body, headers), 201),
                "POST /api/holds/": (hold, 201),
                "POST /api/holds/{reference}/checkout/": (checkout, 201),
                "GET /api/events/": (lambda: call("GET", "/api/events/"), 200),
                "GET /health/live": (lambda: call("GET", "/health/live"), 200),
            },
            requests,
            statements,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="calls per endpoint")
    args = parser.parse_args(argv)
    server, origin = server_url()
    database, url = create_database(server)
    print(f"profile database {database} on the {origin}", file=sys.stderr)
    try:
        seeded = seed(url, attendees=calls_per_endpoint(args.requests))
        asyncio.run(run(url, seeded.attendee_ids, seeded.spread[0], args.requests))
    finally:
        drop_database(server, database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
