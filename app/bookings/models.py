"""Bookings, their items, and the idempotency keys of booking requests."""

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
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, BigId, CreatedAt, UpdatedAt


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed', 'cancelled')", name="status_valid"),
        CheckConstraint("total_price >= 0", name="total_price_nonnegative"),
        CheckConstraint(
            "(status = 'cancelled') = (cancelled_at IS NOT NULL)", name="cancelled_at_matches"
        ),
        Index("ix_bookings_user_id_created_at", "user_id", "created_at"),
        Index("ix_bookings_event_id_status", "event_id", "status"),
    )

    id: Mapped[BigId]
    booking_reference: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="RESTRICT"))
    # Deleting an event is refused while it has confirmed bookings; cancelled ones go with it.
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="confirmed")
    total_price: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]
    cancelled_at: Mapped[datetime | None]
    # Given at checkout of a hold (the payment provider's id); NULL otherwise.
    payment_reference: Mapped[str | None] = mapped_column(String(255))

    items: Mapped[list[BookingItem]] = relationship(
        back_populates="booking", lazy="raise", order_by="BookingItem.id"
    )


class BookingItem(Base):
    __tablename__ = "booking_items"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("price_at_booking >= 0", name="price_nonnegative"),
        UniqueConstraint("booking_id", "ticket_type_id"),
    )

    id: Mapped[BigId]
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("bookings.id", ondelete="CASCADE")
    )
    ticket_type_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="CASCADE"), index=True
    )
    quantity: Mapped[int] = mapped_column(Integer)
    price_at_booking: Mapped[Decimal] = mapped_column(Numeric(10, 2))

    booking: Mapped[Booking] = relationship(back_populates="items", lazy="raise")


class IdempotencyKey(Base):
    """A request's Idempotency-Key, kept at least 24 hours, per route (``scope``):
    a key used on /api/bookings/ and on /api/holds/ names two requests."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="bookings")
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    booking_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("bookings.id", ondelete="CASCADE")
    )
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("holds.id", ondelete="CASCADE")
    )
    created_at: Mapped[CreatedAt] = mapped_column(index=True)
