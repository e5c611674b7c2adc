"""Idempotency-Keys of the booking and hold requests: claiming one, reading its holder."""

from __future__ import annotations

from sqlalchemy import BigInteger, String, select
from sqlalchemy.dialects.postgresql import insert

from app.bookings.models import IdempotencyKey
from app.core.db import param

CLAIM_KEY = (
    insert(IdempotencyKey)
    .values(
        user_id=param("user_id", BigInteger),
        scope=param("scope", String),
        key=param("key", String),
        request_hash=param("request_hash", String),
    )
    .on_conflict_do_nothing(
        index_elements=[IdempotencyKey.user_id, IdempotencyKey.scope, IdempotencyKey.key]
    )
    .returning(IdempotencyKey.key)
)

HELD_KEY = select(
    IdempotencyKey.request_hash, IdempotencyKey.booking_id, IdempotencyKey.hold_id
).where(
    IdempotencyKey.user_id == param("user_id", BigInteger),
    IdempotencyKey.scope == param("scope", String),
    IdempotencyKey.key == param("key", String),
)
