"""Rate limits: counted in Redis shared by every process, 429 with Retry-After, failing open."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.errors import RateLimited, install_error_handlers
from app.core.ratelimit import RateLimiter, limit_per_ip, limits_from_settings
from tests.redis_server import free_port, start_redis_server


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
    limiter = RateLimiter(limit_settings(rate_limit_login="1/hour"), nothing_there)
    before = errors_total()
    caplog.set_level(logging.WARNING, logger="app.ratelimit")
    started = time.monotonic()
    for _ in range(50):
        assert await refused(limiter, "login", "frank") is None
    assert time.monotonic() - started < 2
    assert errors_total() > before
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
    limiter = RateLimiter(limit_settings(rate_limit_login="2/minute"), redis)
    try:
        assert await refused(limiter, "login", "grace") is None
        assert await refused(limiter, "login", "grace") is None
        assert await refused(limiter, "login", "grace") is not None
        server.stop()
        before = errors_total()
        for _ in range(5):
            assert await refused(limiter, "login", "grace") is None
        assert errors_total() > before
        # Back again (empty): limits apply once the short pause after an error is over.
        server = start_redis_server(port)
        await asyncio.sleep(2.1)
        assert await refused(limiter, "login", "grace") is None
        assert await refused(limiter, "login", "grace") is None
        assert await refused(limiter, "login", "grace") is not None
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

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/register")).status_code == 200
        assert (await client.post("/register")).status_code == 200
        response = await client.post("/register")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["code"] == "rate_limited" and body["status"] == 429
