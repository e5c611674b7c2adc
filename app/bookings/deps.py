"""Request dependencies shared by the routes that create bookings (bookings and holds)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from app.core.schemas import Line

IdempotencyKeyHeader = Annotated[
    Line | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key and body returns the original booking.",
    ),
]
