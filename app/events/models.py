"""Events and their ticket types, with the counters the booking transaction updates in place."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.core.db import Base, BigId, CreatedAt, UpdatedAt


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("total_capacity >= 1", name="total_capacity_positive"),
        CheckConstraint(
            "tickets_sold >= 0 AND tickets_sold <= total_capacity", name="tickets_sold_in_capacity"
        ),
        CheckConstraint("tickets_held >= 0", name="tickets_held_nonnegative"),
        CheckConstraint(
            "tickets_sold + tickets_held <= total_capacity", name="tickets_within_capacity"
        ),
        CheckConstraint("end_time IS NULL OR end_time > start_time", name="end_after_start"),
        CheckConstraint("char_length(name) >= 1", name="name_not_empty"),
        CheckConstraint("char_length(location) >= 1", name="location_not_empty"),
        Index("ix_events_location_lower", func.lower(text("location"))),
        Index("ix_events_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[BigId]
    organizer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default="")
    location: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[datetime] = mapped_column(index=True)
    end_time: Mapped[datetime | None]
    total_capacity: Mapped[int] = mapped_column(Integer, index=True)
    tickets_sold: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Tickets in active holds (the sum of its ticket types' quantity_held).
    tickets_held: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[CreatedAt] = mapped_column(index=True)
    updated_at: Mapped[UpdatedAt]
    # Full-text search over name and description with the 'simple' configuration
    # (no stemming, language-neutral); core PostgreSQL, no extension needed.
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(
            "to_tsvector('simple'::regconfig, "
            "coalesce(name, '') || ' ' || coalesce(description, ''))",
            persisted=True,
        ),
        deferred=True,
    )

    organizer: Mapped[User] = relationship(lazy="raise")
    ticket_types: Mapped[list[TicketType]] = relationship(
        back_populates="event", lazy="raise", order_by="TicketType.price, TicketType.id"
    )


class TicketType(Base):
    __tablename__ = "ticket_types"
    __table_args__ = (
        CheckConstraint("quantity_available >= 0", name="quantity_available_nonnegative"),
        CheckConstraint("quantity_sold >= 0", name="quantity_sold_nonnegative"),
        CheckConstraint("quantity_held >= 0", name="quantity_held_nonnegative"),
        CheckConstraint("price >= 0", name="price_nonnegative"),
        CheckConstraint("char_length(name) >= 1", name="name_not_empty"),
        Index(
            "uq_ticket_types_event_id_name_lower",
            "event_id",
            func.lower(text("name")),
            unique=True,
        ),
        Index("ix_ticket_types_event_id_price", "event_id", "price"),
    )

    id: Mapped[BigId]
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, server_default="")
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    quantity_available: Mapped[int] = mapped_column(Integer)
    quantity_sold: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # In active holds: neither on sale (quantity_available) nor sold.
    quantity_held: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    event: Mapped[Event] = relationship(back_populates="ticket_types", lazy="raise")
