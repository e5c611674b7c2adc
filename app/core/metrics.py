"""Prometheus metrics of the service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status",
    ["method", "route", "status"],
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BOOKINGS_CREATED = Counter("bookings_created_total", "Bookings confirmed")
BOOKINGS_CANCELLED = Counter("bookings_cancelled_total", "Bookings cancelled")
BOOKING_CONFLICTS = Counter(
    "booking_conflicts_total", "Requests refused with a domain error, by code", ["code"]
)


def record_conflict(code: str, status: int) -> None:
    if status in (409, 422, 429, 503) and code != "validation_error":
        BOOKING_CONFLICTS.labels(code=code).inc()
