"""Request and response schemas of waiting lists."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from app.bookings.schemas import Id
from app.core.schemas import UtcDatetime

EntryStatus = Literal["waiting", "offered", "converted", "expired", "left"]


class WaitlistJoin(BaseModel):
    ticket_type_id: Id = Field(description="A ticket type of the event.", examples=[1])
    quantity: int = Field(
        ge=1,
        le=10_000,
        description="Tickets wanted, 1 to MAX_TICKETS_PER_BOOKING (10 by default).",
        examples=[2],
    )


class WaitlistEntryRead(BaseModel):
    id: int
    event_id: int
    ticket_type_id: int
    quantity: int
    status: EntryStatus = Field(
        description="`waiting`; `offered` (a hold was made for it: `hold_reference`); "
        "`converted` (the hold was checked out); `expired` (the offer ran out); `left`."
    )
    position: int | None = Field(
        description="1-based place among the waiting entries of its ticket type; null unless "
        "`waiting`.",
        examples=[3],
    )
    hold_reference: uuid.UUID | None = Field(description="The offered hold; null before an offer.")
    created_at: UtcDatetime
    offered_at: UtcDatetime | None


class EventWaitlistEntryRead(WaitlistEntryRead):
    """An entry as the event's organizer sees it: with the attendee."""

    user: dict[str, int | str] = Field(examples=[{"id": 4, "username": "bob"}])
