"""The embedded PostgreSQL (from the pgserver wheel) used when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("app.embedded")

_server: Any = None


def _socket_safe_dir(data_dir: Path) -> Path:
    """pgserver listens on a Unix socket inside its data directory, and socket paths
    are limited to ~100 bytes: deep checkouts fall back to a per-project temp dir."""
    pgdata = data_dir.resolve() / "postgres"
    if len(str(pgdata)) <= 70:
        return pgdata
    import hashlib

    digest = hashlib.sha1(str(pgdata).encode(), usedforsecurity=False).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"event-booking-pg-{digest}"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return an asyncpg URL for it.

    pgserver reference-counts the server across processes, so several workers
    share one postmaster; it stops when the last one exits.
    """
    global _server
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    import pgserver

    pgdata = _socket_safe_dir(data_dir)
    pgdata.mkdir(parents=True, exist_ok=True)
    if _server is None:
        _server = pgserver.get_server(pgdata, cleanup_mode="stop")
        logger.info("embedded PostgreSQL running in %s", pgdata)
    return f"postgresql+asyncpg://postgres@/postgres?host={pgdata}"


def libpq_url(asyncpg_url: str) -> str:
    return asyncpg_url.replace("postgresql+asyncpg://", "postgresql://", 1)
