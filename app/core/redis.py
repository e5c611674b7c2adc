"""Names shared by everything the service keeps in Redis (rate limits, the job queue)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from prometheus_client import Gauge

logger = logging.getLogger("app.redis")

# Every key the service writes starts with this prefix; tests give each run its own.
DEFAULT_KEY_PREFIX = "eb"


def key_prefix(state: Any) -> str:
    """The key prefix of an application (``app.state``), or the default."""
    return getattr(state, "redis_key_prefix", None) or DEFAULT_KEY_PREFIX


class RedisState:
    """Whether Redis answers, as the callers of one process last saw it.

    Its trouble is logged once when it starts (a warning) and once when it ends (info),
    and while it lasts at most every ``warn_every`` seconds, never once per request.
    After a failure callers skip Redis for ``pause`` seconds (``available()``), so an
    outage adds no timeout to every request. ``redis_up`` (1 or 0) is exported.
    """

    def __init__(self, *, warn_every: float = 60.0, pause: float = 2.0) -> None:
        self.warn_every = warn_every
        self.pause = pause
        self.up = True
        self._skip_until = 0.0
        self._warned_at = -math.inf

    def available(self) -> bool:
        return self.up or time.monotonic() >= self._skip_until

    def failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._skip_until = now + self.pause
        if self.up or now - self._warned_at >= self.warn_every:
            self._warned_at = now
            logger.warning("Redis does not answer (%s: %s): %s", type(exc).__name__, exc, what)
        self.up = False
        REDIS_UP.set(0)

    def answered(self) -> None:
        if not self.up:
            logger.info("Redis answers again")
        self.up = True
        REDIS_UP.set(1)


REDIS_UP = Gauge(
    "redis_up",
    "1 while Redis answers (as this process last saw it), 0 while it does not",
    multiprocess_mode="livemin",
)


def redis_state(state: Any) -> RedisState:
    """The application's RedisState (``app.state``), made on first use."""
    current: RedisState | None = getattr(state, "redis_state", None)
    if current is None:
        current = state.redis_state = RedisState()
    return current
