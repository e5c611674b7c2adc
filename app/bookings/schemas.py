"""Request and response schemas of bookings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import Money, UtcDatetime

BIGINT_MAX = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]

BookingStatus = Literal["confirmed", "cancelled"]


class BookingItemCreate(BaseModel):
    ticket_type_id: Id = Field(description="A ticket type of the event.", examples=[1])
    quantity: int = Field(ge=1, le=10_000, description="Tickets of this type.", examples=[2])


class BookingCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"event_id": 1, "items": [{"ticket_type_id": 1, "quantity": 2}]}]
        }
    )

    event_id: Id = Field(description="The event to book.", examples=[1])
    items: list[BookingItemCreate] = Field(
        min_length=1,
        max_length=20,
        description="1 to 20 items, each ticket type at most once; the total quantity is at most "
        "MAX_TICKETS_PER_BOOKING (10 by default).",
    )


class BookingItemRead(BaseModel):
    id: int
    ticket_type_id: int
    ticket_type_name: str = Field(examples=["VIP"])
    quantity: int = Field(examples=[2])
    price_at_booking: Money = Field(
        description="Unit price when booked.",
        examples=["25.00"],
        json_schema_extra={"type": "string"},
    )


class BookingRead(BaseModel):
    booking_reference: uuid.UUID
    event_id: int
    event_name: str
    status: BookingStatus
    items: list[BookingItemRead]
    total_price: Money = Field(examples=["50.00"], json_schema_extra={"type": "string"})
    created_at: UtcDatetime
    updated_at: UtcDatetime
    cancelled_at: UtcDatetime | None
    payment_reference: str | None = Field(
        description="Given at the checkout of a hold (at most 255 characters); null when none.",
        examples=[None],
    )


class BookingUser(BaseModel):
    id: int
    username: str


class EventBookingRead(BookingRead):
    """A booking as its event's organizer sees it: with the attendee."""

    user: BookingUser


class BookingFilters(BaseModel):
    status: BookingStatus | None = None
    event: Id | None = None
    created_at__gte: datetime | None = None
    created_at__lte: datetime | None = None
