"""Rate limits: counted in Redis shared by every process, 429 with Retry-After, failing open."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.handlers import install_error_handlers
from app.core.ratelimit import RateLimiter, limit_per_ip, limits_from_settings
from tests.factories import TEST_PASSWORD, TEST_SECRET_KEY, asgi_client, auth
from tests.redis_server import free_port, serve, start_redis_server, stop


def limit_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"rate_limit_enabled": True, "redis_url": None}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def refused(limiter: RateLimiter, name: str, key: str) -> RateLimited | None:
    try:
        await limiter.hit(name, key)  # type: ignore[arg-type]
    except RateLimited as exc:
        return exc
    return None


def retry_after(exc: RateLimited) -> int:
    assert exc.headers is not None
    return int(exc.headers["Retry-After"])


def errors_total() -> float:
    return REGISTRY.get_sample_value("rate_limit_errors_total") or 0.0


@pytest.fixture
async def redis_limiter(redis_url: str, redis_prefix: str):
    redis = Redis.from_url(redis_url, socket_timeout=2)

    def make(**overrides: object) -> RateLimiter:
        return RateLimiter(limit_settings(**overrides), redis, prefix=f"{redis_prefix}:rl")

    yield make
    await redis.aclose()


async def test_sixth_login_for_one_account_within_a_minute_is_refused(redis_limiter) -> None:
    limiter = redis_limiter()
    account = unique("alice")
    for _ in range(5):
        assert await refused(limiter, "login", account) is None
    exc = await refused(limiter, "login", account)
    assert exc is not None
    assert exc.status == 429 and exc.code == "rate_limited"
    assert 1 <= retry_after(exc) <= 60
    # Another account is not affected.
    assert await refused(limiter, "login", unique("bob")) is None


async def test_limiters_on_one_redis_share_their_counts(redis_limiter) -> None:
    first, second = redis_limiter(), redis_limiter()
    account = unique("carol")
    for limiter in (first, second, first, second, first):
        assert await refused(limiter, "login", account) is None
    assert await refused(second, "login", account) is not None
    assert await refused(first, "login", account) is not None


async def test_concurrent_hits_go_together_and_count_exactly(redis_limiter) -> None:
    """Hits made at once share round trips, and still exactly the limit gets through,
    across two processes' limiters and for each key on its own."""
    first, second = (
        redis_limiter(rate_limit_bookings="7/minute"),
        redis_limiter(rate_limit_bookings="7/minute"),
    )
    hot, other = unique("hot"), unique("other")
    hits = [(first if i % 2 else second, hot) for i in range(60)] + [(first, other)] * 3
    outcomes = await asyncio.gather(*(refused(limiter, "bookings", key) for limiter, key in hits))
    hot_allowed = sum(o is None for (_, key), o in zip(hits, outcomes, strict=True) if key == hot)
    assert hot_allowed == 7
    assert all(o is None for (_, key), o in zip(hits, outcomes, strict=True) if key == other)
    assert all(o is None or retry_after(o) >= 1 for o in outcomes)
    trips = first._together.round_trips + second._together.round_trips  # type: ignore[union-attr]
    assert trips < len(hits) / 4, trips


async def test_a_request_gone_while_its_hit_waits_leaves_the_others_answered(
    redis_limiter,
) -> None:
    limiter = redis_limiter(rate_limit_bookings="3/minute")
    user = unique("user")
    tasks = [asyncio.create_task(refused(limiter, "bookings", user)) for _ in range(5)]
    await asyncio.sleep(0)  # every hit queued, none sent yet
    tasks[0].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    # The cancelled request's hit may have been sent already: it took at most one entry.
    assert 2 <= sum(o is None for o in done[1:]) <= 3
    assert await refused(limiter, "bookings", user) is not None


async def test_hits_find_their_script_again_after_redis_forgets_it(
    redis_limiter, redis_client: Redis
) -> None:
    limiter = redis_limiter(rate_limit_bookings="2/minute")
    user = unique("user")
    assert await refused(limiter, "bookings", user) is None
    await redis_client.script_flush()
    before = errors_total()
    outcomes = await asyncio.gather(*(refused(limiter, "bookings", user) for _ in range(3)))
    assert sum(o is None for o in outcomes) == 1
    assert errors_total() == before  # no failure on the way: nothing was let through
    assert await refused(limiter, "bookings", user) is not None


async def test_limit_frees_after_its_window_and_retry_after_says_when(redis_limiter) -> None:
    limiter = redis_limiter(rate_limit_bookings="3/2 second")
    user = unique("user")
    for _ in range(3):
        assert await refused(limiter, "bookings", user) is None
    exc = await refused(limiter, "bookings", user)
    assert exc is not None
    assert 1 <= retry_after(exc) <= 2
    await asyncio.sleep(retry_after(exc) + 0.1)
    assert await refused(limiter, "bookings", user) is None


async def test_counters_are_kept_in_redis_under_the_key_prefix(
    redis_limiter, redis_client: Redis, redis_prefix: str
) -> None:
    limiter = redis_limiter()
    account = unique("dave")
    await limiter.hit("login", account)
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}:rl:*")]
    assert any(account in key for key in keys), keys


async def test_in_memory_limits_without_redis() -> None:
    limiter = RateLimiter(limit_settings(rate_limit_register="2/minute"))
    ip = "203.0.113.7"
    assert await refused(limiter, "register_ip", ip) is None
    assert await refused(limiter, "register_ip", ip) is None
    assert await refused(limiter, "register_ip", ip) is not None


async def test_disabled_limits_never_refuse(redis_limiter) -> None:
    limiter = redis_limiter(rate_limit_enabled=False, rate_limit_login="1/hour")
    account = unique("erin")
    for _ in range(20):
        assert await refused(limiter, "login", account) is None


def test_invalid_limit_setting_names_the_setting() -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT_LOGIN"):
        limits_from_settings(limit_settings(rate_limit_login="five a minute"))


async def test_redis_down_fails_open_with_one_warning_and_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nothing_there = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    limiter = RateLimiter(limit_settings(rate_limit_bookings="1/hour"), nothing_there)
    before = errors_total()
    caplog.set_level(logging.WARNING, logger="app.ratelimit")
    started = time.monotonic()
    for _ in range(50):
        assert await refused(limiter, "bookings", "frank") is None
    assert time.monotonic() - started < 2
    assert errors_total() > before
    warnings = [r for r in caplog.records if r.name == "app.ratelimit"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    await nothing_there.aclose()


async def test_concurrent_hits_while_redis_is_down_fail_open_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hits waiting together for a Redis that does not answer all get the failure: the
    bookings go through, with one warning, and the next hits skip Redis for a while."""
    nothing_there = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    limiter = RateLimiter(limit_settings(rate_limit_bookings="1/hour"), nothing_there)
    caplog.set_level(logging.WARNING, logger="app.ratelimit")
    before = errors_total()
    started = time.monotonic()
    outcomes = await asyncio.gather(*(refused(limiter, "bookings", f"u{i % 3}") for i in range(40)))
    assert outcomes == [None] * 40
    assert time.monotonic() - started < 2
    assert errors_total() > before
    assert limiter._together is not None and limiter._together.round_trips <= 2
    warnings = [r for r in caplog.records if r.name == "app.ratelimit"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    await nothing_there.aclose()


def fallbacks_total(name: str) -> float:
    value = REGISTRY.get_sample_value("rate_limit_fallbacks_total", {"limit": name})
    return value or 0.0


@pytest.mark.parametrize("name", ["login", "password_reset", "change_password"])
async def test_redis_down_account_limits_fall_back_to_this_process(
    caplog: pytest.LogCaptureFixture, name: str
) -> None:
    nothing_there = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    limiter = RateLimiter(limit_settings(**{f"rate_limit_{name}": "2/hour"}), nothing_there)
    before, fallbacks_before = errors_total(), fallbacks_total(name)
    caplog.set_level(logging.WARNING, logger="app.ratelimit")
    outcomes = [await refused(limiter, name, "frank") for _ in range(20)]  # type: ignore[arg-type]
    assert outcomes[:2] == [None, None]
    assert all(isinstance(o, RateLimited) for o in outcomes[2:])
    assert errors_total() > before
    assert fallbacks_total(name) >= fallbacks_before + 20
    warnings = [r for r in caplog.records if r.name == "app.ratelimit"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    await nothing_there.aclose()


@pytest.mark.skipif(
    not __import__("shutil").which("redis-server"), reason="redis-server is not installed"
)
async def test_redis_dying_mid_way_lets_requests_through_then_limits_again() -> None:
    server = start_redis_server()
    port = int(server.url.rsplit(":", 1)[1])
    redis = Redis.from_url(f"{server.url}/0", socket_timeout=1)
    limiter = RateLimiter(
        limit_settings(rate_limit_bookings="2/minute", rate_limit_login="2/minute"), redis
    )
    try:
        assert await refused(limiter, "bookings", "grace") is None
        assert await refused(limiter, "bookings", "grace") is None
        assert await refused(limiter, "bookings", "grace") is not None
        server.stop()
        before = errors_total()
        for _ in range(5):
            assert await refused(limiter, "bookings", "grace") is None
        # Login counts in this process meanwhile (fresh counters: 2 go through).
        assert [await refused(limiter, "login", "grace") is None for _ in range(3)] == [
            True,
            True,
            False,
        ]
        assert errors_total() > before
        # Back again (empty): limits are counted in Redis once the short pause after an
        # error is over.
        server = start_redis_server(port)
        await asyncio.sleep(2.1)
        assert await refused(limiter, "bookings", "grace") is None
        assert await refused(limiter, "bookings", "grace") is None
        assert await refused(limiter, "bookings", "grace") is not None
        assert await refused(limiter, "login", "grace") is None
        assert await redis.keys("*login*"), "login is counted in Redis again"
    finally:
        await redis.aclose()
        server.stop()


async def test_over_the_limit_is_a_429_problem_with_retry_after() -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.state.settings = limit_settings(rate_limit_register="2/minute")

    @app.post("/register", dependencies=[Depends(limit_per_ip("register_ip"))])
    async def register() -> dict[str, str]:
        return {"detail": "ok"}

    async with asgi_client(app, "http://test") as client:
        assert (await client.post("/register")).status_code == 200
        assert (await client.post("/register")).status_code == 200
        response = await client.post("/register")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["code"] == "rate_limited" and body["status"] == 429


# ------------------------------------------------------------------ the real service, 2 workers

# Long enough that a burst of requests (each hashing a password) fits in one window
# on a loaded machine, short enough to wait for it to free.
WINDOW_SECONDS = 6
WINDOW = f"3/{WINDOW_SECONDS} second"


def server_env(database_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "OUTBOX_IN_PROCESS": "false",
        "SECRET_KEY": TEST_SECRET_KEY,
        "REDIS_URL": redis_url,
        "TEST_REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_LOGIN": WINDOW,
        "RATE_LIMIT_LOGIN_IP": "1000/minute",
        "RATE_LIMIT_REGISTER": WINDOW,
        "RATE_LIMIT_PASSWORD_RESET": WINDOW,
        "RATE_LIMIT_BOOKINGS": WINDOW,
        "SMTP_HOST": "",
        "LOG_LEVEL": "WARNING",
        # Few connections: the suite shares PostgreSQL's 100 with other servers it starts.
        "DB_POOL_SIZE": "3",
        "DB_MAX_OVERFLOW": "2",
    }


@pytest.fixture(scope="module")
def limited_server(database_url: str, redis_url: str, redis_prefix: str) -> Iterator[str]:
    """uvicorn with 2 worker processes, limits on, counted in Redis under this run's prefix."""
    process, base = serve(server_env(database_url, redis_url, f"{redis_prefix}-srv"))
    try:
        yield base
    finally:
        stop(process)


async def concurrently(count: int, send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]):
    # No keep-alive: every request opens its own connection, so both workers accept some.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        return await asyncio.gather(*(send(client) for _ in range(count)))


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW_SECONDS
    body = response.json()
    assert body["code"] == "rate_limited" and body["status"] == 429 and body["type"]


async def test_login_limit_holds_across_two_worker_processes_then_frees(
    limited_server: str, create_user: Callable[..., Any]
) -> None:
    user = await create_user("attendee")
    wrong = {"username": user.username.upper(), "password": "not-the-password"}

    responses = await concurrently(
        10, lambda c: c.post(f"{limited_server}/api/auth/login/", json=wrong)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 3 + [429] * 7, statuses
    limited = [r for r in responses if r.status_code == 429]
    for response in limited:
        assert_rate_limited(response)
    async with httpx.AsyncClient(timeout=30) as client:
        # The account name counts in any case: the right password is refused too, for now.
        right = {"username": user.username, "password": TEST_PASSWORD}
        assert_rate_limited(await client.post(f"{limited_server}/api/auth/login/", json=right))
        await asyncio.sleep(max(int(r.headers["retry-after"]) for r in limited) + 0.2)
        response = await client.post(f"{limited_server}/api/auth/login/", json=right)
        assert response.status_code == 200, response.text


async def test_registration_is_limited_per_client_address(limited_server: str) -> None:
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=30) as client:
        statuses = []
        for n in range(5):
            response = await client.post(
                f"{limited_server}/api/auth/register/",
                json={
                    "username": f"reg{tag}{n}",
                    "email": f"reg{tag}{n}@example.com",
                    "password": "Sturdy-Passphrase-19",
                    "role": "attendee",
                },
            )
            statuses.append(response.status_code)
        assert statuses == [201, 201, 201, 429, 429], statuses
        assert_rate_limited(response)


async def test_password_reset_requests_are_limited_per_email(
    limited_server: str, create_user: Callable[..., Any]
) -> None:
    user = await create_user("attendee")
    url = f"{limited_server}/api/auth/password-reset-request/"
    async with httpx.AsyncClient(timeout=30) as client:
        statuses = [
            (await client.post(url, json={"email": user.email})).status_code for _ in range(3)
        ]
        over = await client.post(url, json={"email": user.email.upper()})
    assert statuses == [202, 202, 202]
    assert_rate_limited(over)


async def test_bookings_are_limited_per_user(
    limited_server: str, db: Any, organizer: Any, create_user: Callable[..., Any]
) -> None:
    from tests.factories import make_event, make_ticket_type

    event = await make_event(db, organizer.id)
    standard = await make_ticket_type(db, event.id)
    first, second = await create_user("attendee"), await create_user("attendee")
    body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 1}]}
    url = f"{limited_server}/api/bookings/"
    responses = await concurrently(6, lambda c: c.post(url, json=body, headers=auth(first)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [429] * 3
    async with httpx.AsyncClient(timeout=30) as client:
        other = await client.post(url, json=body, headers=auth(second))
    assert other.status_code == 201, other.text


@pytest.mark.skipif(
    not __import__("shutil").which("redis-server"), reason="redis-server is not installed"
)
async def test_api_keeps_answering_when_redis_dies(
    database_url: str, create_user: Callable[..., Any]
) -> None:
    redis = start_redis_server()
    # One worker, so that /metrics shows the counter of the process that saw the errors.
    process, base = serve(server_env(database_url, f"{redis.url}/0", "outage"), workers=1)
    try:
        user = await create_user("attendee")
        wrong = {"username": user.username, "password": "not-the-password"}
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = [
                (await client.post(f"{base}/api/auth/login/", json=wrong)).status_code
                for _ in range(4)
            ]
            assert statuses == [401, 401, 401, 429]
            assert (await client.get(f"{base}/health/ready")).status_code == 200

            redis.stop()
            # The login limit falls back to this process's counters (fresh): nothing is
            # a 500 and a brute force is still cut.
            statuses = [
                (await client.post(f"{base}/api/auth/login/", json=wrong)).status_code
                for _ in range(6)
            ]
            assert statuses == [401, 401, 401, 429, 429, 429]
            other = await create_user("attendee")
            right = {"username": other.username, "password": TEST_PASSWORD}
            assert (await client.post(f"{base}/api/auth/login/", json=right)).status_code == 200
            # Bookings go on without Redis: ready, with Redis reported as degraded.
            ready = await client.get(f"{base}/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "redis": "degraded"}
            metrics = (await client.get(f"{base}/metrics")).text
        assert re.search(r"^rate_limit_errors_total [1-9]", metrics, re.M), metrics[-2000:]
        assert re.search(r"^rate_limit_fallbacks_total\{limit=\"login\"\} [1-9]", metrics, re.M)
        assert re.search(r"^redis_up 0", metrics, re.M), metrics[-3000:]
    finally:
        stop(process)
        redis.stop()
