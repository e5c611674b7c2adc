"""Where a request's CPU goes: `python -m bench.profile` (`make profile`).

The app is called in-process through ASGI, one request at a time, on a throwaway
database seeded like `make bench`'s: no uvicorn, no network, no load generator on
the same cores. For POST /api/bookings/, GET /api/events/ and GET /health/live it
prints the CPU time per request (process time over N calls), then, from cProfile,
each package's share of the CPU spent in its own code. Time waiting for PostgreSQL
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
    async def call(method: str, path: str, body: bytes = b"", headers: tuple = ()) -> int:
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

        await app(scope, receive, send)
        return status

    return call


async def measure(calls: dict[str, tuple[Call, int]], requests: int) -> None:
    for label, (call, expected) in calls.items():
        for _ in range(50):  # warm up: pools, statement caches
            status = await call()
            if status != expected:
                raise SystemExit(f"{label}: {status}, expected {expected}")
        started = time.process_time()
        for _ in range(requests):
            await call()
        cpu_ms = (time.process_time() - started) * 1000 / requests
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests // 2):
            await call()
        profile.disable()
        parts = ", ".join(f"{name} {share:.0f} %" for name, share in shares(profile) if share >= 1)
        print(f"{label}: {cpu_ms:.2f} ms CPU per request\n    {parts}")


async def run(url: str, attendee_id: int, event: tuple[int, int], requests: int) -> None:
    os.environ.update(DATABASE_URL=url, RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING")
    os.environ.setdefault("SECRET_KEY", "bench-profile-secret-key-0123456789abcdef")
    from app.core.config import get_settings
    from app.core.security import create_token
    from app.main import create_app

    get_settings.cache_clear()
    app = create_app()
    call = asgi_caller(app)
    async with app.router.lifespan_context(app):
        token, _ = create_token(
            user_id=attendee_id,
            token_type="access",
            key=app.state.settings.signing_key,
            lifetime=timedelta(minutes=15),
        )
        headers = (
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        )
        body = orjson.dumps(
            {"event_id": event[0], "items": [{"ticket_type_id": event[1], "quantity": 1}]}
        )
        await measure(
            {
                "POST /api/bookings/": (lambda: call("POST", "/api/bookings/", body, headers), 201),
                "GET /api/events/": (lambda: call("GET", "/api/events/"), 200),
                "GET /health/live": (lambda: call("GET", "/health/live"), 200),
            },
            requests,
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
        seeded = seed(url, attendees=1)
        asyncio.run(run(url, seeded.attendee_ids[0], seeded.spread[0], args.requests))
    finally:
        drop_database(server, database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
