"""The catalogue cache: anonymous reads of events and ticket types, served from memory.

Ticket shops show availability from a cache while the booking itself stays exact; so
does this service. An anonymous ``GET`` of the events list, an event, its ticket types
or one ticket type is answered from a per-process cache for at most
``CATALOGUE_CACHE_SECONDS`` (default 1; 0 turns the cache off), with a strong ``ETag``
(``If-None-Match`` → 304) and ``Cache-Control: public, max-age=<seconds>``.

Invalidation is a per-process generation counter: any request with an unsafe method
(POST, PUT, PATCH, DELETE: a booking, a cancellation, a hold, an event or ticket-type
change, anything) bumps it when its response starts (the unit of work has committed
by then) and again when it ends, and an entry filled under an older generation is
never served. So a change is visible at once in the process that made it; other
processes (the other workers, the job worker's hold sweep) are seen within the TTL.

A miss is filled once: requests for the same entry that arrive while it is being made
wait for that response instead of each running the query (no stampede on the pool when
a popular entry expires); if it is not a 200, each runs its own request.

Never cached: a request with an ``Authorization`` header (a user's or organizer's view,
``organizer=me``, a token that must be checked and may be refused); its response says
``Cache-Control: private, no-store``. Bookings and holds never read the cache: they
lock and check the rows themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# /api/events, /api/events/{id}, /api/events/{id}/ticket-types[/{tt_id}], with or without
# the trailing slash (the slash-stripping middleware may run before or after this one).
CATALOGUE_PATH = re.compile(r"^/api/events(?:/\d{1,19}(?:/ticket-types(?:/\d{1,19})?)?)?/?$")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_ENTRIES = 4096
PRIVATE = (b"cache-control", b"private, no-store")
VARY = (b"vary", b"Authorization")
_KEY_HEADERS = frozenset({b"host", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})


@dataclass(slots=True)
class Entry:
    generation: int
    expires: float
    etag: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    route: object  # the route that answered: metrics label a hit by its template


class CatalogueCache:
    """Entries by request (scheme, host, path, query), valid for one generation and TTL."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.generation = 0
        self.entries: dict[tuple[object, ...], Entry] = {}
        # Entries being made now, by key: later requests for one wait for its answer.
        self.filling: dict[tuple[object, ...], asyncio.Future[Entry | None]] = {}
        self.cache_control = (b"cache-control", f"public, max-age={int(seconds)}".encode())

    def invalidate(self) -> None:
        """Something may have changed: no entry filled before now is served again."""
        self.generation += 1
        self.entries.clear()
        self.filling.clear()  # a fill under way may predate the change: nobody joins it

    def get(self, key: tuple[object, ...]) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.generation != self.generation or entry.expires <= time.monotonic():
            self.entries.pop(key, None)
            return None
        return entry

    def put(self, key: tuple[object, ...], entry: Entry) -> None:
        if entry.generation != self.generation:
            return  # a write happened while this response was being made
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = entry


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x"; `*` matches any.
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


class CatalogueCacheMiddleware:
    """Pure ASGI: a cache hit costs a dictionary look-up, no routing, no database."""

    def __init__(self, app: ASGIApp, cache: CatalogueCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in SAFE_METHODS:
            await self._write(scope, receive, send)
            return
        path = scope.get("original_path") or scope["path"]
        if method != "GET" or not CATALOGUE_PATH.match(path):
            await self.app(scope, receive, send)
            return
        key_headers: list[tuple[bytes, bytes]] = []
        if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                await self._private(scope, receive, send)
                return
            if name == b"if-none-match":
                if_none_match = value
            elif name in _KEY_HEADERS:
                key_headers.append((name, value))
        key = (scope["scheme"], path, scope["query_string"], *sorted(key_headers))
        entry = self.cache.get(key)
        if entry is None:
            entry = await self._made_by_another(key)
        if entry is None:
            entry = await self._fill(scope, receive, send, key)
            if entry is None:
                return  # answered uncached (not a 200)
        elif entry.route is not None:
            scope["route"] = entry.route  # counted under its route, like a miss
        if if_none_match is not None and _matches(if_none_match, entry.etag):
            await send(
                {
                    "type": "http.response.start",
                    "status": 304,
                    "headers": [(b"etag", entry.etag), self.cache.cache_control, VARY],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
        await send({"type": "http.response.body", "body": entry.body})

    async def _made_by_another(self, key: tuple[object, ...]) -> Entry | None:
        """The entry a request already running for ``key`` is making, once made (None
        when there is none, or its answer is not kept)."""
        filling = self.cache.filling.get(key)
        if filling is None:
            return None
        return await asyncio.shield(filling)

    async def _fill(
        self, scope: Scope, receive: Receive, send: Send, key: tuple[object, ...]
    ) -> Entry | None:
        """Run the request; a 200 is kept (and answered by the caller), anything else is
        passed on as it comes. Requests for ``key`` meanwhile wait for the result."""
        made: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self.cache.filling[key] = made
        entry = None
        try:
            entry = await self._run_and_keep(scope, receive, send, key)
        finally:
            made.set_result(entry)
            if self.cache.filling.get(key) is made:
                del self.cache.filling[key]
        return entry

    async def _run_and_keep(
        self, scope: Scope, receive: Receive, send: Send, key: tuple[object, ...]
    ) -> Entry | None:
        generation = self.cache.generation
        start: Message | None = None
        chunks: list[bytes] = []
        passing = False

        async def capture(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                if message["status"] != 200:
                    passing = True
                    await send(message)
                else:
                    start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            else:
                await send(message)

        await self.app(scope, receive, capture)
        if passing or start is None:
            return None
        body = b"".join(chunks)
        etag = _etag(body)
        headers = [
            (name, value)
            for name, value in start.get("headers", ())
            if name not in (b"cache-control", b"etag", b"vary")
        ]
        headers += [(b"etag", etag), self.cache.cache_control, VARY]
        entry = Entry(
            generation,
            time.monotonic() + self.cache.seconds,
            etag,
            headers,
            body,
            scope.get("route"),
        )
        self.cache.put(key, entry)
        return entry

    async def _private(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0] != b"cache-control"]
                message["headers"] = [*headers, PRIVATE, VARY]
            await send(message)

        await self.app(scope, receive, no_store)

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = self.cache

        async def invalidating(message: Message) -> None:
            if message["type"] == "http.response.start":
                cache.invalidate()  # committed: the client may read its change next
            await send(message)

        try:
            await self.app(scope, receive, invalidating)
        finally:
            cache.invalidate()
