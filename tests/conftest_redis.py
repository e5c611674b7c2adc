"""Fixtures for tests that need Redis (one database, a key prefix per run) or SMTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from tests.redis_server import TEST_DB, RedisServer, SmtpSink, find_redis, free_port


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server, reason = find_redis()
    if server is None:
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}/{TEST_DB}"


@pytest.fixture(scope="session")
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test run; its keys (and only those) are deleted at the end."""
    prefix = f"ebtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        # arq keeps each job under a global "arq:" prefix: drop those of this run's queues.
        for queue in [k for k in keys if k.endswith(b":emails")]:
            for job_id in await client.zrange(queue, 0, -1):
                keys += [
                    f"arq:{kind}:{job_id.decode()}".encode()
                    for kind in ("job", "result", "retry", "in-progress")
                ]
        # The limits library wraps the moving-window keys in braces: "{prefix...}".
        keys += [key async for key in client.scan_iter(match=f"{{{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free port that keeps what it receives."""
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
