"""Request and response schemas of holds."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.core.schemas import Money, UtcDatetime

HoldStatus = Literal["active", "converted", "released", "expired"]


class HoldItemRead(BaseModel):
    ticket_type_id: int
    ticket_type_name: str = Field(examples=["VIP"])
    quantity: int = Field(examples=[2])
    unit_price: Money = Field(
        description="Unit price when held; the booking keeps it.",
        examples=["25.00"],
        json_schema_extra={"type": "string"},
    )


class HoldRead(BaseModel):
    hold_reference: uuid.UUID
    event_id: int
    event_name: str
    status: HoldStatus = Field(
        description="`active`; `converted` (checked out: `booking_reference` is set); "
        "`released` (deleted by its owner, or its event was cancelled); `expired` from "
        "`expires_at` on."
    )
    items: list[HoldItemRead]
    total_price: Money = Field(examples=["50.00"], json_schema_extra={"type": "string"})
    expires_at: UtcDatetime
    created_at: UtcDatetime
    booking_reference: uuid.UUID | None = Field(
        description="The booking made by checkout; null until then."
    )


class CheckoutRequest(BaseModel):
    payment_reference: str | None = Field(
        default=None,
        max_length=255,
        description="The payment's reference (e.g. the payment provider's id), kept on the "
        "booking.",
        examples=["pi_3Nc8x2"],
    )

    @field_validator("payment_reference")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL: refuse it here (422), not in the database (500).
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class HoldFilters(BaseModel):
    status: HoldStatus | None = None
