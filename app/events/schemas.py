"""Request and response bodies of the events and ticket-type endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.core.schemas import PLAIN_TEXT, SINGLE_LINE, Money, UtcDatetime
from app.events.models import Event, TicketType
from app.events.status import STATUS_DESCRIPTION, EventStatus

INT4_MAX = 2_147_483_647


MoneyInput = Annotated[
    Decimal,
    Field(
        ge=0,
        max_digits=10,
        decimal_places=2,
        description="At least 0, at most two decimal places; a number or a string.",
        examples=["25.00"],
    ),
]

EventName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    SINGLE_LINE,
    Field(description="1 to 255 characters.", examples=["PyCon Berlin"]),
]
Location = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    SINGLE_LINE,
    Field(description="1 to 255 characters; filtered case-insensitively.", examples=["Berlin"]),
]
Description = Annotated[
    str,
    StringConstraints(max_length=10_000),
    PLAIN_TEXT,
    Field(description="Free text, up to 10 000 characters.", examples=["Talks and sprints."]),
]
Capacity = Annotated[
    int,
    Field(
        ge=1,
        le=INT4_MAX,
        description="Tickets the event can hold across all its ticket types; at least 1.",
        examples=[500],
    ),
]
StartTime = Annotated[
    AwareDatetime,
    Field(
        description="When the event starts: in the future, with a UTC offset.",
        examples=["2027-05-17T09:00:00+02:00"],
    ),
]
EndTime = Annotated[
    AwareDatetime,
    Field(
        description="When the event ends (optional): after `start_time`, with a UTC offset.",
        examples=["2027-05-19T18:00:00+02:00"],
    ),
]
TicketTypeName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    SINGLE_LINE,
    Field(
        description="1 to 100 characters, unique within the event (case-insensitively).",
        examples=["VIP"],
    ),
]


def _after_start_time(value: datetime | None, info: ValidationInfo) -> datetime | None:
    start = info.data.get("start_time")
    if value is not None and start is not None and value <= start:
        raise ValueError("must be after start_time")
    return value


def _in_future(value: datetime) -> datetime:
    if value <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


def _not_null(value: Any, info: ValidationInfo) -> Any:
    # PATCH fields are optional, but only `end_time` may be cleared with null.
    if value is None:
        raise ValueError(f"{info.field_name} may not be null")
    return value


class EventCreate(BaseModel):
    name: EventName
    description: Description = ""
    location: Location
    start_time: StartTime
    end_time: EndTime | None = None
    total_capacity: Capacity

    @field_validator("start_time")
    @classmethod
    def _start_in_future(cls, value: datetime) -> datetime:
        return _in_future(value)

    _end_after_start = field_validator("end_time")(_after_start_time)


class EventUpdate(BaseModel):
    """A partial update: only the fields sent change."""

    name: EventName | None = None
    description: Description | None = None
    location: Location | None = None
    start_time: StartTime | None = None
    end_time: EndTime | None = Field(
        default=None, description="After `start_time`; null removes the end time."
    )
    total_capacity: Capacity | None = Field(
        default=None, description="At least 1 and not below `tickets_sold` (409 otherwise)."
    )
    status: Literal["cancelled"] | None = Field(
        default=None,
        description=(
            "Only `cancelled` may be set: it cancels every confirmed booking of the event and "
            "releases their tickets. A cancelled event cannot be changed any more."
        ),
        examples=["cancelled"],
    )

    _no_nulls = field_validator(
        "name", "description", "location", "start_time", "total_capacity", "status"
    )(_not_null)

    @field_validator("start_time")
    @classmethod
    def _start_in_future(cls, value: datetime) -> datetime:
        return _in_future(value)

    _end_after_start = field_validator("end_time")(_after_start_time)

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, without `status`."""
        return self.model_dump(exclude_unset=True, exclude={"status"})


class OrganizerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(examples=[7])
    username: str = Field(examples=["alice"])


class TicketTypeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(examples=[12])
    event_id: int = Field(examples=[3])
    name: str = Field(examples=["VIP"])
    description: str = Field(examples=["Front rows and a drink."])
    price: Money
    quantity_available: int = Field(description="Tickets left to sell.", examples=[40])
    quantity_sold: int = Field(description="Tickets sold (confirmed bookings).", examples=[10])
    quantity_held: int = Field(
        description="Tickets in active holds: neither on sale nor sold.", examples=[2]
    )
    is_active: bool = Field(description="Only active ticket types can be booked.")
    created_at: UtcDatetime = Field(examples=["2026-11-25T16:30:00+00:00"])
    updated_at: UtcDatetime = Field(examples=["2026-11-25T16:30:00+00:00"])


class EventRead(BaseModel):
    id: int = Field(examples=[3])
    organizer: OrganizerRead
    name: str = Field(examples=["PyCon Berlin"])
    description: str = Field(examples=["Talks and sprints."])
    location: str = Field(examples=["Berlin"])
    start_time: UtcDatetime = Field(
        description="In UTC (`+00:00`).", examples=["2027-05-17T07:00:00+00:00"]
    )
    end_time: UtcDatetime | None = Field(
        description="In UTC, or null when not set.", examples=["2027-05-19T16:00:00+00:00"]
    )
    total_capacity: int = Field(examples=[500])
    tickets_sold: int = Field(examples=[120])
    tickets_held: int = Field(
        description="Tickets in active holds (the sum of its ticket types' `quantity_held`).",
        examples=[4],
    )
    tickets_remaining: int = Field(
        description="`total_capacity - tickets_sold - tickets_held`.", examples=[376]
    )
    status: EventStatus = Field(description=STATUS_DESCRIPTION, examples=["upcoming"])
    created_at: UtcDatetime = Field(examples=["2026-11-25T16:30:00+00:00"])
    updated_at: UtcDatetime = Field(examples=["2026-11-25T16:30:00+00:00"])

    @classmethod
    def _fields_of(cls, event: Event, status: str) -> dict[str, Any]:
        return {
            "id": event.id,
            "organizer": OrganizerRead.model_validate(event.organizer),
            "name": event.name,
            "description": event.description,
            "location": event.location,
            "start_time": event.start_time,
            "end_time": event.end_time,
            "total_capacity": event.total_capacity,
            "tickets_sold": event.tickets_sold,
            "tickets_held": event.tickets_held,
            "tickets_remaining": event.total_capacity - event.tickets_sold - event.tickets_held,
            "status": status,
            "created_at": event.created_at,
            "updated_at": event.updated_at,
        }

    @classmethod
    def from_row(cls, event: Event, status: str) -> EventRead:
        return cls(**cls._fields_of(event, status))

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> EventRead:
        """From a row of the events list (its columns, ``organizer_username``, ``status``)."""
        return cls(
            id=row["id"],
            organizer=OrganizerRead(id=row["organizer_id"], username=row["organizer_username"]),
            name=row["name"],
            description=row["description"],
            location=row["location"],
            start_time=row["start_time"],
            end_time=row["end_time"],
            total_capacity=row["total_capacity"],
            tickets_sold=row["tickets_sold"],
            tickets_held=row["tickets_held"],
            tickets_remaining=row["total_capacity"] - row["tickets_sold"] - row["tickets_held"],
            status=row["status"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


class EventDetail(EventRead):
    ticket_types: list[TicketTypeRead] = Field(
        description="All ticket types of the event (active or not), by price then id."
    )

    @classmethod
    def from_detail(cls, event: Event, status: str, ticket_types: list[TicketType]) -> EventDetail:
        return cls(
            **cls._fields_of(event, status),
            ticket_types=[TicketTypeRead.model_validate(tt) for tt in ticket_types],
        )


class TicketTypeCreate(BaseModel):
    name: TicketTypeName
    description: Description = ""
    price: MoneyInput
    quantity_available: int = Field(
        ge=1, le=INT4_MAX, description="Tickets to sell; at least 1.", examples=[100]
    )
    is_active: bool = Field(default=True, description="Whether it can be booked.")


class TicketTypeUpdate(BaseModel):
    """A partial update: only the fields sent change."""

    name: TicketTypeName | None = None
    description: Description | None = None
    price: MoneyInput | None = None
    quantity_available: int | None = Field(
        default=None,
        ge=0,
        le=INT4_MAX,
        description="Tickets left to sell (0 stops sales of this type).",
        examples=[50],
    )
    is_active: bool | None = None

    _no_nulls = field_validator("name", "description", "price", "quantity_available", "is_active")(
        _not_null
    )

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)
