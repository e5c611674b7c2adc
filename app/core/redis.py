"""Names shared by everything the service keeps in Redis (rate limits, the job queue)."""

from __future__ import annotations

from typing import Any

# Every key the service writes starts with this prefix; tests give each run its own.
DEFAULT_KEY_PREFIX = "eb"


def key_prefix(state: Any) -> str:
    """The key prefix of an application (``app.state``), or the default."""
    return getattr(state, "redis_key_prefix", None) or DEFAULT_KEY_PREFIX
