"""Rate limits on login, registration, password reset and bookings (moving window).

The counters live in Redis when REDIS_URL is set, so every worker process and
replica shares them; without Redis each process keeps its own in memory. The hits
of one process share their round trips to Redis (``HitsTogether``): one pipeline of
the moving-window script per round trip, the counts as exact as one call per hit.

Logins are counted so that a brute force is stopped and a legitimate user is not:
every attempt counts against the account name (a burst of concurrent guesses is cut
at the limit) and a successful login clears the account's counter; against the
client address only failed logins count (many users may share one address).

The per-address login counter is taken before the password hash runs, in one
atomic step (``reserve``), and given back when the login succeeds (``refund``):
a burst of concurrent guesses from one address gets exactly the allowed number
of hashes, and users sharing an address are not blocked by each other's
successful logins.

When Redis does not answer, the limits that protect accounts (login, password
reset, change-password) fall back to this process's own counters, and the
others (registration, bookings) let the request through. Either way
``rate_limit_errors_total`` is incremented, a warning is logged when Redis
fails and an info line when it answers again (then at most once every
``_WARN_EVERY`` seconds), and for ``_BREAKER_SECONDS`` after an error the
limiter does not call Redis at all, so an outage adds no latency to every
request. After that pause the next check tries Redis again.
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
from redis.exceptions import NoScriptError

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.openapi import raises
from app.core.redis import key_prefix
from app.core.together import Together

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.ratelimit")

RATE_LIMIT_ERRORS = Counter(
    "rate_limit_errors_total",
    "Rate limit checks let through because the limit storage (Redis) failed",
)
RATE_LIMITED = Counter("rate_limited_total", "Requests refused with 429, by limit", ["limit"])
RATE_LIMIT_FALLBACKS = Counter(
    "rate_limit_fallbacks_total",
    "Rate limit checks made with the in-process counters because Redis failed, by limit",
    ["limit"],
)

_WARN_EVERY = 60.0
_BREAKER_SECONDS = 2.0

LimitName = Literal[
    "login",
    "login_ip",
    "register_ip",
    "password_reset",
    "password_reset_ip",
    "change_password",
    "bookings",
]
# Limits that guard accounts never fail open: without Redis they count in-process.
_FAIL_CLOSED: frozenset[str] = frozenset(
    {"login", "login_ip", "password_reset", "password_reset_ip", "change_password"}
)


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
        "change_password": ("rate_limit_change_password", settings.rate_limit_change_password),
        "bookings": ("rate_limit_bookings", settings.rate_limit_bookings),
    }
    items: dict[str, RateLimitItem] = {}
    for name, (setting, value) in configured.items():
        try:
            items[name] = parse(value)
        except ValueError as exc:
            raise ValueError(f"{setting.upper()}: {value!r} is not a rate limit") from exc
    return items


class HitsTogether:
    """Moving-window hits of one process sent to Redis together, one round trip at a time.

    The hits that requests make in the same turn of the event loop, or while a round
    trip is out, go in one pipeline (one write, one read: ``Together``). Each hit is
    still the library's own atomic script, run in queue order in Redis, so every limit
    counts exactly as with one call per hit.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self._bridge: Any = storage.bridge
        self._together: Together[tuple[str, int, int], Any] = Together(self._pipeline)
        self.round_trips = 0  # pipelines sent, for the tests

    async def acquire(self, key: str, limit: int, expiry: int) -> bool:
        """Take one entry of ``key``'s window (``limit`` per ``expiry`` seconds) if free."""
        return bool(await self._together((self._bridge.prefixed_key(key), limit, expiry)))

    async def _pipeline(self, batch: list[tuple[str, int, int]]) -> list[Any]:
        """The script's answer for each hit, or the error Redis gave for it."""
        script = self._bridge.lua_acquire_moving_window
        answers: list[Any] = [None] * len(batch)
        unsent = list(range(len(batch)))
        for attempt in (1, 2):
            pipe = self._bridge.get_connection().pipeline(transaction=False)
            now = time.time()
            for i in unsent:
                key, limit, expiry = batch[i]
                pipe.evalsha(script.sha, 1, key, now, limit, expiry, 1)
            self.round_trips += 1
            for i, answer in zip(unsent, await pipe.execute(raise_on_error=False), strict=True):
                answers[i] = answer
            # Redis restarted or its scripts were flushed: load the script and send again
            # the hits it refused (a refused script took nothing; the others counted).
            unsent = [i for i in unsent if isinstance(answers[i], NoScriptError)]
            if not unsent or attempt == 2:
                break
            script.sha = await self._bridge.get_connection().script_load(script.script)
        return answers


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
        self._together = (
            HitsTogether(self.storage) if isinstance(self.storage, RedisStorage) else None
        )
        # The in-process counters used while Redis fails (only for _FAIL_CLOSED limits).
        self._fallback_storage: Storage = MemoryStorage()
        self._fallback = (
            MovingWindowRateLimiter(self._fallback_storage) if redis is not None else None
        )
        self._skip_until = 0.0
        self._failing = False
        self._warned_at = -math.inf

    async def hit(self, name: LimitName, key: str) -> None:
        """Count one attempt against ``name`` for ``key``; raise RateLimited when over."""
        await self._enforce(name, key, count=True)

    async def check(self, name: LimitName, key: str) -> None:
        """Raise RateLimited when ``key`` has used up ``name``'s window, without counting."""
        await self._enforce(name, key, count=False)

    async def record(self, name: LimitName, key: str) -> None:
        """Count one attempt (a failed login, say) without refusing anything."""
        await self._run(name, lambda strategy, _: strategy.hit(self.limits[name], name, key))

    async def clear(self, name: LimitName, key: str) -> None:
        """Forget ``key``'s attempts for ``name`` (a successful login)."""
        await self._run(name, lambda strategy, _: strategy.clear(self.limits[name], name, key))

    async def reserve(self, name: LimitName, key: str) -> None:
        """Count one attempt and refuse it when over, in one atomic step (a counter per
        window, INCR in Redis); ``refund`` gives it back. RateLimited when over."""
        item = self.limits[name]
        counter = f"{name}/reserved/{key}"

        async def attempt(_: Any, storage: Storage) -> float | None:
            if await storage.incr(counter, item.get_expiry(), 1) <= item.amount:
                return None
            await storage.incr(counter, item.get_expiry(), -1)  # refused: not an attempt
            return await storage.get_expiry(counter)

        reset_at = await self._run(name, attempt)
        if reset_at is not None:
            self._refuse(name, reset_at)

    async def refund(self, name: LimitName, key: str) -> None:
        """Give back an attempt taken with ``reserve`` (the login succeeded)."""
        item = self.limits[name]
        counter = f"{name}/reserved/{key}"
        await self._run(name, lambda _, storage: storage.incr(counter, item.get_expiry(), -1))

    async def _enforce(self, name: LimitName, key: str, *, count: bool) -> None:
        item = self.limits[name]

        async def attempt(strategy: MovingWindowRateLimiter, storage: Storage) -> float | None:
            if count and storage is self.storage and self._together is not None:
                allowed = await self._together.acquire(
                    item.key_for(name, key), item.amount, item.get_expiry()
                )
            else:
                allowed = await (strategy.hit if count else strategy.test)(item, name, key)
            if allowed:
                return None
            reset_at, _remaining = await strategy.get_window_stats(item, name, key)
            return reset_at

        reset_at = await self._run(name, attempt)
        if reset_at is not None:
            self._refuse(name, reset_at)

    def _refuse(self, name: LimitName, reset_at: float) -> None:
        RATE_LIMITED.labels(limit=name).inc()
        raise RateLimited(math.ceil(reset_at - time.time()))

    async def _run(
        self,
        name: LimitName,
        operation: Callable[[MovingWindowRateLimiter, Storage], Awaitable[Any]],
    ) -> Any:
        """Run a limit operation on Redis, or on the fallback while Redis fails; None when
        the limit is off or fails open."""
        if not self.enabled:
            return None
        if time.monotonic() >= self._skip_until:
            try:
                result = await operation(self._strategy, self.storage)
            except Exception as exc:  # any storage failure
                self._storage_failed(exc)
            else:
                self._storage_answered()
                return result
        if self._fallback is None or name not in _FAIL_CLOSED:
            return None
        RATE_LIMIT_FALLBACKS.labels(limit=name).inc()
        return await operation(self._fallback, self._fallback_storage)

    def _storage_answered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("the rate limit storage (Redis) answers again: limits are shared again")

    def _storage_failed(self, exc: Exception) -> None:
        RATE_LIMIT_ERRORS.inc()
        now = time.monotonic()
        self._skip_until = now + _BREAKER_SECONDS
        # Once when it starts failing, then at most every _WARN_EVERY seconds.
        if not self._failing or now - self._warned_at >= _WARN_EVERY:
            self._failing = True
            self._warned_at = now
            logger.warning(
                "the rate limit storage (Redis) failed (%s: %s): login, password reset and "
                "change-password limits count in this process only; the others let "
                "requests through until it answers",
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
    """The client's address: the peer, or what a trusted proxy forwarded.

    X-Forwarded-For is not read here: TrustedProxyMiddleware rewrites the client
    address from it only for peers listed in TRUSTED_PROXIES, so a client cannot
    choose its own key.
    """
    return request.client.host if request.client else "unknown"


def limit_per_ip(name: LimitName) -> Callable[[Request], Awaitable[None]]:
    """A route dependency counting each request against ``name`` for the client address."""

    @raises(RateLimited)
    async def dependency(request: Request) -> None:
        await limiter_for(request.app.state).hit(name, client_ip(request))

    dependency.__name__ = f"rate_limit_{name}"
    return dependency
