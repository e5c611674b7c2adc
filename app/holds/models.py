"""Holds: tickets taken off sale for a limited time, and what each hold holds."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, CreatedAt


class Hold(Base):
    """A hold. Its stored status is `active` until it ends one way: `converted` (checked
    out), `released` (deleted, or its event cancelled) or `expired` (by the sweeper or a
    request that needed its tickets). An `active` row past `expires_at` reads `expired`."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'converted', 'released', 'expired')", name="status_valid"
        ),
        CheckConstraint("total_price >= 0", name="total_price_nonnegative"),
        CheckConstraint(
            "(status = 'converted') = (booking_id IS NOT NULL)", name="booking_matches"
        ),
        # One active hold per attendee and event.
        Index(
            "uq_holds_user_id_event_id_active",
            "user_id",
            "event_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        # The sweeper's and the event's "active holds past their time".
        Index(
            "ix_holds_active_expires_at",
            "expires_at",
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "ix_holds_event_id_active",
            "event_id",
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_holds_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[BigId]
    hold_reference: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="RESTRICT"))
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    total_price: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    expires_at: Mapped[datetime]
    created_at: Mapped[CreatedAt]
    ended_at: Mapped[datetime | None]
    booking_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("bookings.id", ondelete="CASCADE")
    )


class HoldItem(Base):
    __tablename__ = "hold_items"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_nonnegative"),
        UniqueConstraint("hold_id", "ticket_type_id"),
    )

    id: Mapped[BigId]
    hold_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("holds.id", ondelete="CASCADE"))
    ticket_type_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="CASCADE"), index=True
    )
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
