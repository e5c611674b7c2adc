"""The bookings' own hot statements: claiming an Idempotency-Key and reading the holder."""

from __future__ import annotations

from sqlalchemy import BigInteger, String, select
from sqlalchemy.dialects.postgresql import insert

from app.bookings.models import IdempotencyKey
from app.core.db import param

CLAIM_KEY = (
    insert(IdempotencyKey)
    .values(
        user_id=param("user_id", BigInteger),
        key=param("key", String),
        request_hash=param("request_hash", String),
    )
    .on_conflict_do_nothing(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key])
    .returning(IdempotencyKey.key)
)

HELD_KEY = select(IdempotencyKey.request_hash, IdempotencyKey.booking_id).where(
    IdempotencyKey.user_id == param("user_id", BigInteger),
    IdempotencyKey.key == param("key", String),
)
