"""A real HTTP receiver for webhooks, served from a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    answered: int = 0

    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers with ``answers`` in turn, then ``default``."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0  # requests read, not yet answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def next_answer(self) -> int:
        with self.lock:
            return self.answers.pop(0) if self.answers else self.default

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} of {count} webhooks arrived")
            await asyncio.sleep(0.02)
        return list(self.requests)

    async def stays_at(self, count: int, seconds: float = 0.6) -> None:
        await asyncio.sleep(seconds)
        assert len(self.requests) == count, [r.json()["type"] for r in self.requests]


def serve() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with receiver.lock:
                receiver.in_flight += 1
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.next_answer()
            with receiver.lock:
                receiver.requests.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                        status,
                    )
                )
                receiver.in_flight -= 1
            self.send_response(status)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
