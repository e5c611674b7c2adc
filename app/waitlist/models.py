"""Waiting-list entries: an attendee waiting for tickets of one ticket type."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, CreatedAt


class WaitlistEntry(Base):
    __tablename__ = "waitlist_entries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('waiting', 'offered', 'converted', 'expired', 'left')", name="status_valid"
        ),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        # One waiting or offered entry per attendee and ticket type.
        Index(
            "uq_waitlist_entries_user_id_ticket_type_id_open",
            "user_id",
            "ticket_type_id",
            unique=True,
            postgresql_where=text("status IN ('waiting', 'offered')"),
        ),
        # The line: waiting entries of an event in joining order.
        Index(
            "ix_waitlist_entries_event_id_waiting",
            "event_id",
            "created_at",
            "id",
            postgresql_where=text("status = 'waiting'"),
        ),
        Index("ix_waitlist_entries_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[BigId]
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id", ondelete="CASCADE"))
    ticket_type_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="waiting")
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("holds.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[CreatedAt]
    offered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
