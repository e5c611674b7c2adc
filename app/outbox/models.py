"""The outbox: one row per message to send (an email, or a webhook to one endpoint)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint("channel IN ('email', 'webhook')", name="channel_valid"),
        CheckConstraint(
            "status IN ('pending', 'delivered', 'dead', 'skipped')", name="status_valid"
        ),
        CheckConstraint(
            "(channel = 'webhook') = (endpoint_id IS NOT NULL)", name="endpoint_matches_channel"
        ),
        # What the dispatcher scans: only the pending rows, by when they are due.
        Index(
            "ix_outbox_messages_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_messages_endpoint_id", "endpoint_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # The webhook's event type (booking.confirmed, ...) or the email's kind.
    topic: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # The webhook-id header: the same on every retry, so receivers can deduplicate.
    message_id: Mapped[str] = mapped_column(
        String(64),
        unique=True,
        server_default=text("'msg_' || replace(gen_random_uuid()::text, '-', '')"),
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    # The clock when the row is written (late in its transaction, close to the commit),
    # not the transaction's start: what delivery latency and the retry window count from.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
