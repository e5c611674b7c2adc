"""Dependencies of the events routes: the event from the path, ownership, list filters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Query
from pydantic import BeforeValidator

from app.auth.deps import CurrentUser, OptionalUser
from app.core.db import UoW
from app.core.errors import NotAuthenticated, NotFound, PermissionDenied, ValidationFailed
from app.core.openapi import raises
from app.core.replica import CatalogueUoW
from app.core.schemas import Line, QueryDatetime
from app.events import service
from app.events.service import DEFAULT_STATUSES, EventFilters, EventRow
from app.events.status import EventStatus

BIGINT_MAX = 2**63 - 1

Ordering = Literal[
    "start_time", "-start_time", "total_capacity", "-total_capacity", "created_at", "-created_at"
]


def _known_id(value: int) -> bool:
    # An id outside PostgreSQL's bigint cannot exist: it is unknown, not invalid.
    return 1 <= value <= BIGINT_MAX


EventIdPath = Annotated[int, Path(description="The event's id.", examples=[3])]


@raises(NotFound)
async def valid_event_id(event_id: EventIdPath, uow: UoW) -> EventRow:
    """The event named in the path, with its organizer and status, or 404."""
    row = await service.get_event(uow, event_id) if _known_id(event_id) else None
    if row is None:
        raise NotFound("No event with this id.")
    return row


ValidEvent = Annotated[EventRow, Depends(valid_event_id)]


@raises(NotFound)
async def catalogue_event(event_id: EventIdPath, uow: CatalogueUoW) -> EventRow:
    """Like ``ValidEvent``, read from the replica for an anonymous request."""
    return await valid_event_id(event_id, uow)


CatalogueEvent = Annotated[EventRow, Depends(catalogue_event)]


@raises(PermissionDenied)
async def owned_event(user: CurrentUser, row: ValidEvent) -> EventRow:
    """The event in the path, if the caller is its organizer (401 first, then 404, then 403)."""
    if row.event.organizer_id != user.id:
        raise PermissionDenied("Only the event's organizer can change it.")
    return row


OwnedEvent = Annotated[EventRow, Depends(owned_event)]


@raises(NotFound)
async def valid_ticket_type_id(
    ticket_type_id: Annotated[int, Path(description="The ticket type's id.", examples=[12])],
) -> int:
    if not _known_id(ticket_type_id):
        raise NotFound("No ticket type with this id in this event.")
    return ticket_type_id


TicketTypeId = Annotated[int, Depends(valid_ticket_type_id)]


def _blank_to_none(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return value.strip()


def _split_commas(values: object) -> object:
    # `?status=upcoming,past` is read like `?status=upcoming&status=past`.
    if isinstance(values, list):
        return [part.strip() for v in values for part in str(v).split(",") if part.strip()]
    return values


@raises(NotAuthenticated, ValidationFailed)
async def event_filters(
    user: OptionalUser,
    status: Annotated[
        list[EventStatus] | None,
        BeforeValidator(_split_commas),
        Query(
            description=(
                "Repeatable (`?status=upcoming&status=past`, or comma-separated); "
                "default `upcoming` and `sold_out`."
            ),
        ),
    ] = None,
    location: Annotated[
        Line | None,
        Query(max_length=255, description="Case-insensitive exact match.", examples=["Berlin"]),
    ] = None,
    search: Annotated[
        Line | None,
        Query(
            max_length=200,
            description=(
                "Words in the name or description, case-insensitive; each word matches the "
                "start of a word (`conf` finds `Conference`), all words must match."
            ),
            examples=["jazz"],
        ),
    ] = None,
    start_after: Annotated[
        QueryDatetime | None,
        Query(description="Events starting strictly after this instant (with an offset)."),
    ] = None,
    start_before: Annotated[
        QueryDatetime | None,
        Query(description="Events starting strictly before this instant (with an offset)."),
    ] = None,
    organizer: Annotated[
        Line | None,
        Query(
            max_length=20,
            description="An organizer's user id, or `me` (needs a token).",
            examples=["me"],
        ),
    ] = None,
    ordering: Annotated[
        Ordering, Query(description="Sort key; `-` for descending. Ties are broken by id.")
    ] = "start_time",
) -> EventFilters:
    organizer_id: int | None = None
    organizer = _blank_to_none(organizer)
    if organizer == "me":
        if user is None:
            raise NotAuthenticated("organizer=me needs an access token.")
        organizer_id = user.id
    elif organizer is not None:
        if not organizer.isascii() or not organizer.isdigit():
            raise ValidationFailed("organizer must be a user id or `me`.", field="query.organizer")
        organizer_id = int(organizer)
        if not _known_id(organizer_id):
            organizer_id = 0  # no such user: an empty list
    return EventFilters(
        statuses=tuple(dict.fromkeys(status)) if status else DEFAULT_STATUSES,
        location=_blank_to_none(location),
        search=_blank_to_none(search),
        start_after=start_after,
        start_before=start_before,
        organizer_id=organizer_id,
        ordering=ordering,
    )


Filters = Annotated[EventFilters, Depends(event_filters)]
