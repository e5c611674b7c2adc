"""Rate limits on login, registration, password reset and bookings (moving window).

The counters live in Redis when REDIS_URL is set, so every worker process and
replica shares them; without Redis each process keeps its own in memory.

Logins are counted so that a brute force is stopped and a legitimate user is not:
every attempt counts against the account name (a burst of concurrent guesses is cut
at the limit) and a successful login clears the account's counter; against the
client address only failed logins count (many users may share one address).

When Redis does not answer, limits fail open: the request goes through, a
warning is logged (at most once every ``_WARN_EVERY`` seconds) and
``rate_limit_errors_total`` is incremented. For ``_BREAKER_SECONDS`` after an
error the limiter does not call Redis at all, so an outage adds no latency to
every request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.openapi import raises
from app.core.redis import key_prefix

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.ratelimit")

RATE_LIMIT_ERRORS = Counter(
    "rate_limit_errors_total",
    "Rate limit checks let through because the limit storage (Redis) failed",
)
RATE_LIMITED = Counter("rate_limited_total", "Requests refused with 429, by limit", ["limit"])

_WARN_EVERY = 60.0
_BREAKER_SECONDS = 2.0

LimitName = Literal[
    "login", "login_ip", "register_ip", "password_reset", "password_reset_ip", "bookings"
]


def limits_from_settings(settings: Settings) -> dict[str, RateLimitItem]:
    """The configured limits; an invalid value raises ValueError naming the setting."""
    configured = {
        "login": ("rate_limit_login", settings.rate_limit_login),
        "login_ip": ("rate_limit_login_ip", settings.rate_limit_login_ip),
        "register_ip": ("rate_limit_register", settings.rate_limit_register),
        "password_reset": ("rate_limit_password_reset", settings.rate_limit_password_reset),
        "password_reset_ip": (
            "rate_limit_password_reset_ip",
            settings.rate_limit_password_reset_ip,
        ),
        "bookings": ("rate_limit_bookings", settings.rate_limit_bookings),
    }
    items: dict[str, RateLimitItem] = {}
    for name, (setting, value) in configured.items():
        try:
            items[name] = parse(value)
        except ValueError as exc:
            raise ValueError(f"{setting.upper()}: {value!r} is not a rate limit") from exc
    return items


class RateLimiter:
    """The limits of one process, checked with ``await limiter.hit("login", key)``."""

    def __init__(
        self, settings: Settings, redis: Redis | None = None, *, prefix: str = "eb:rl"
    ) -> None:
        self.enabled = settings.rate_limit_enabled
        self.limits = limits_from_settings(settings)
        self.storage: Storage
        if redis is not None:
            # Shares the application's connection pool (and its socket timeout).
            self.storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=prefix,
                wrap_exceptions=True,
                connection_pool=redis.connection_pool,
            )
        else:
            self.storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self.storage)
        self._skip_until = 0.0
        self._warned_at = -math.inf

    async def hit(self, name: LimitName, key: str) -> None:
        """Count one attempt against ``name`` for ``key``; raise RateLimited when over."""
        await self._enforce(name, key, count=True)

    async def check(self, name: LimitName, key: str) -> None:
        """Raise RateLimited when ``key`` has used up ``name``'s window, without counting."""
        await self._enforce(name, key, count=False)

    async def record(self, name: LimitName, key: str) -> None:
        """Count one attempt (a failed login, say) without refusing anything."""
        await self._call_storage(self._strategy.hit, name, key)

    async def clear(self, name: LimitName, key: str) -> None:
        """Forget ``key``'s attempts for ``name`` (a successful login)."""
        await self._call_storage(self._strategy.clear, name, key)

    async def _enforce(self, name: LimitName, key: str, *, count: bool) -> None:
        if not self._active():
            return
        item = self.limits[name]
        try:
            allowed = await (self._strategy.hit if count else self._strategy.test)(item, name, key)
            if allowed:
                return
            reset_at, _ = await self._strategy.get_window_stats(item, name, key)
        except Exception as exc:  # any storage failure: let the request through
            self._storage_failed(exc)
            return
        RATE_LIMITED.labels(limit=name).inc()
        raise RateLimited(math.ceil(reset_at - time.time()))

    async def _call_storage(self, operation: Any, name: LimitName, key: str) -> None:
        if not self._active():
            return
        try:
            await operation(self.limits[name], name, key)
        except Exception as exc:
            self._storage_failed(exc)

    def _active(self) -> bool:
        return self.enabled and time.monotonic() >= self._skip_until

    def _storage_failed(self, exc: Exception) -> None:
        RATE_LIMIT_ERRORS.inc()
        now = time.monotonic()
        self._skip_until = now + _BREAKER_SECONDS
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "rate limits are not enforced: the limit storage failed (%s: %s); "
                "letting requests through",
                type(exc).__name__,
                exc,
            )


def limiter_for(state: Any) -> RateLimiter:
    """The application's limiter (``app.state``), made on first use from its settings and Redis.

    The lifespan calls it at startup, so an invalid RATE_LIMIT_* value stops the process.
    """
    limiter: RateLimiter | None = getattr(state, "limiter", None)
    if limiter is None:
        limiter = RateLimiter(
            state.settings, getattr(state, "redis", None), prefix=key_prefix(state) + ":rl"
        )
        state.limiter = limiter
    return limiter


@raises(RateLimited)
async def get_limiter(request: Request) -> RateLimiter:
    return limiter_for(request.app.state)


Limiter = Annotated[RateLimiter, Depends(get_limiter)]


def client_ip(request: Request) -> str:
    """The client's address as the server saw it.

    X-Forwarded-For is not read here: behind a reverse proxy, uvicorn rewrites
    the client address from it only for proxies listed in FORWARDED_ALLOW_IPS
    (``--forwarded-allow-ips``), so a client cannot choose its own key.
    """
    return request.client.host if request.client else "unknown"


def limit_per_ip(name: LimitName) -> Callable[[Request], Awaitable[None]]:
    """A route dependency counting each request against ``name`` for the client address."""

    @raises(RateLimited)
    async def dependency(request: Request) -> None:
        await limiter_for(request.app.state).hit(name, client_ip(request))

    dependency.__name__ = f"rate_limit_{name}"
    return dependency
