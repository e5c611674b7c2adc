"""Prometheus metrics of the service and the /metrics endpoint.

With several worker processes (uvicorn --workers N), set PROMETHEUS_MULTIPROC_DIR to an
empty directory writable by the workers before they start: every process then writes its
counters there and a scrape of any worker reports the sum. `python -m app serve
--workers N` and the container image set it up; wipe the directory on every restart.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template, method and status",
    ["method", "route", "status"],
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BOOKINGS_CREATED = Counter("bookings_created_total", "Bookings confirmed")
BOOKINGS_CANCELLED = Counter("bookings_cancelled_total", "Bookings cancelled")
BOOKING_CONFLICTS = Counter(
    "booking_conflicts_total", "Requests refused with a domain error, by code", ["code"]
)

OUTBOX_ATTEMPTS = Counter(
    "outbox_attempts_total",
    "Attempts to send outbox messages, by channel (email, webhook) and result "
    "(delivered, retry, dead, skipped)",
    ["channel", "result"],
)

UNMATCHED_ROUTE = "<unmatched>"

# Gauges read from the database when /metrics is scraped: ``app.state.metrics_probes``
# holds async callables returning metric families (the outbox's depth, for instance).
Probe = Callable[[], Awaitable[list[GaugeMetricFamily]]]
PROBE_TIMEOUT_SECONDS = 2.0


def record_conflict(code: str, status: int) -> None:
    if status in (409, 422, 429, 503) and code != "validation_error":
        BOOKING_CONFLICTS.labels(code=code).inc()


# Labelled children by (method, route, status): `.labels()` takes a lock and builds
# keys on every call, and this runs once per request.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(method, route, str(status)),
            REQUEST_LATENCY.labels(method, route),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def multiprocess_dir() -> str | None:
    # The environment is prometheus_client's own switch, read when it is imported.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class DatabasePoolCollector(Collector):
    """Connections of this process's SQLAlchemy pool, read at scrape time (free per request)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = getattr(self._state, "engine", None)
        if engine is None:
            return
        pool = engine.pool
        labels = ["pid"] if multiprocess_dir() else []
        values = [str(os.getpid())] if labels else []
        for name, doc, read in (
            ("db_pool_connections_in_use", "Connections checked out of the pool", "checkedout"),
            ("db_pool_connections_idle", "Connections idle in the pool", "checkedin"),
            ("db_pool_size", "Configured pool size", "size"),
        ):
            reader = getattr(pool, read, None)
            if reader is None:
                continue
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, float(reader()))
            yield family


def metrics_endpoint(
    app_registry: CollectorRegistry, *, token: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for /metrics: process-wide (or all workers') metrics plus the pool.

    With ``token`` (METRICS_TOKEN) it answers only `Authorization: Bearer <token>`.
    """

    async def metrics(request: Request) -> Response:
        if token and not _bearer_matches(request.headers.get("authorization", ""), token):
            from app.core.errors import NotAuthenticated, problem_response

            error = NotAuthenticated("/metrics needs Authorization: Bearer <METRICS_TOKEN>.")
            return problem_response(401, error.code, error.detail, headers=error.headers)
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest(REGISTRY)
        body += generate_latest(app_registry)
        state = request.app.state if request is not None else None
        for probe in getattr(state, "metrics_probes", ()):
            body += await _probed(probe)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families


async def _probed(probe: Probe) -> bytes:
    """The probe's metrics, or nothing when its source does not answer in time."""
    try:
        families = await asyncio.wait_for(probe(), PROBE_TIMEOUT_SECONDS)
    except Exception:  # a scrape must not fail because the database is down
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    sent = value.strip().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


def app_registry(state: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabasePoolCollector(state))
    return registry
