"""Finding a PostgreSQL server for the tests and making throwaway databases on it."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

LOCAL_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _answers(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(_dsn(url)), timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def server_url() -> str:
    """TEST_DATABASE_URL, else the server on 127.0.0.1:5432, else an embedded one."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url.replace("postgresql://", "postgresql+asyncpg://", 1)
    if await _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    from app.core.embedded import start_embedded_postgres

    data_dir = Path(tempfile.gettempdir()) / "event-booking-test"
    return await asyncio.to_thread(start_embedded_postgres, data_dir)


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


async def create_database(server: str) -> tuple[str, str]:
    name = f"eb_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_dsn(server))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, with_database(server, name)


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def throwaway_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """The URL of a new database (at the migrations' head unless ``migrated`` is false),
    dropped on the way out."""
    server = await server_url()
    name, url = await create_database(server)
    try:
        if migrated:
            from app.core.migrate import upgrade_head

            await asyncio.to_thread(upgrade_head, url)
        yield url
    finally:
        await drop_database(server, name)
