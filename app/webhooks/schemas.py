"""Request and response bodies of the webhook endpoints, and the event types."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, UrlConstraints, field_validator

from app.core.schemas import UtcDatetime


class WebhookEventType(enum.StrEnum):
    booking_confirmed = "booking.confirmed"
    booking_cancelled = "booking.cancelled"
    hold_expired = "hold.expired"
    event_cancelled = "event.cancelled"
    event_sold_out = "event.sold_out"
    waitlist_offered = "waitlist.offered"


WebhookUrl = Annotated[
    AnyUrl,
    UrlConstraints(max_length=2048, allowed_schemes=["http", "https"], host_required=True),
    Field(
        description=(
            "Where the messages are POSTed: http or https. Addresses on loopback, private "
            "or link-local networks are refused unless WEBHOOK_ALLOW_PRIVATE_NETWORKS is set."
        ),
        examples=["https://crm.example.com/hooks/tickets"],
    ),
]
EventTypes = Annotated[
    list[WebhookEventType],
    Field(
        min_length=1,
        max_length=20,
        description="The event types to receive; at least one (each counted once).",
        examples=[["booking.confirmed", "booking.cancelled"]],
    ),
]


class _EventTypesOnce(BaseModel):
    @field_validator("event_types", check_fields=False)
    @classmethod
    def _once_each(cls, types: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
        return None if types is None else list(dict.fromkeys(types))


class WebhookCreate(_EventTypesOnce):
    url: WebhookUrl
    event_types: EventTypes


class WebhookUpdate(_EventTypesOnce):
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    is_active: bool | None = Field(
        default=None, description="false stops deliveries; re-enabling does not resend."
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    event_types: list[WebhookEventType]
    is_active: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WebhookCreated(WebhookRead):
    """The endpoint as created, with its signing secret: shown only in this response."""

    secret: str = Field(
        description="`whsec_` + base64; the key of the `webhook-signature` HMAC. Shown once.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookDeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str = Field(description="The `webhook-id` header of the message.")
    event_type: WebhookEventType
    attempt: int = Field(description="1 for the first try, then 2, 3, ...")
    status_code: int | None = Field(description="The receiver's HTTP status; null when none.")
    error: str | None = Field(description="Why the attempt failed; null after a 2xx.")
    created_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = Field(description="When the next try is due, if any.")
