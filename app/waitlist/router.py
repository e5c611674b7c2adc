"""HTTP routes of waiting lists: join, leave, one's own entries, an event's line."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.deps import Attendee, CurrentUser
from app.bookings.schemas import Id
from app.core.db import UoW
from app.core.errors import (
    AlreadyWaiting,
    Busy,
    EventNotBookable,
    NotFound,
    PermissionDenied,
    TicketsAvailable,
)
from app.core.links import created
from app.core.openapi import problem_responses
from app.core.pagination import Page, Pagination, paginate
from app.events.deps import OwnedEvent
from app.waitlist import service
from app.waitlist.schemas import (
    EntryStatus,
    EventWaitlistEntryRead,
    WaitlistEntryRead,
    WaitlistJoin,
)

router = APIRouter(tags=["waiting lists"])


@router.post(
    "/api/events/{event_id}/waitlist",
    status_code=201,
    operation_id="waitlist_join",
    responses=problem_responses(
        PermissionDenied, NotFound, TicketsAvailable, AlreadyWaiting, EventNotBookable, Busy
    ),
    summary="Wait for tickets of a sold-out ticket type",
    response_description="The entry; `Location` points at it.",
)
async def join_waitlist(
    request: Request,
    event_id: Id,
    data: WaitlistJoin,
    user: Attendee,
    uow: UoW,
    response: Response,
) -> WaitlistEntryRead:
    entry, _ = await service.join(uow, user, event_id, data, settings=request.app.state.settings)
    created(request, response, f"/api/waitlist/{entry['id']}/")
    return WaitlistEntryRead.model_validate(entry)


@router.get(
    "/api/waitlist/{entry_id}",
    operation_id="waitlist_retrieve",
    responses=problem_responses(NotFound),
    summary="Get one of your waiting-list entries",
)
async def get_entry(entry_id: Id, user: CurrentUser, uow: UoW) -> WaitlistEntryRead:
    return WaitlistEntryRead.model_validate(await service.get_entry(uow, user, entry_id))


@router.delete(
    "/api/waitlist/{entry_id}",
    status_code=204,
    operation_id="waitlist_leave",
    responses=problem_responses(NotFound, Busy),
    summary="Leave a waiting list; an offered hold is released",
    response_description="Left",
)
async def leave_waitlist(request: Request, entry_id: Id, user: CurrentUser, uow: UoW) -> Response:
    await service.leave(uow, user, entry_id, settings=request.app.state.settings)
    return Response(status_code=204)


@router.get(
    "/api/users/me/waitlist",
    operation_id="waitlist_list_mine",
    summary="List your waiting-list entries, newest first",
)
async def list_my_entries(user: CurrentUser, uow: UoW, page: Pagination) -> Page[WaitlistEntryRead]:
    count, entries = await service.list_mine(uow, user, offset=page.offset, limit=page.limit)
    return paginate(page, count, [WaitlistEntryRead.model_validate(e) for e in entries])


@router.get(
    "/api/events/{event_id}/waitlist",
    operation_id="events_waitlist_list",
    responses=problem_responses(PermissionDenied, NotFound),
    summary="The waiting list of your event, in line order",
    tags=["events"],
)
async def list_event_line(
    row: OwnedEvent,
    uow: UoW,
    page: Pagination,
    status: Annotated[EntryStatus | None, Query()] = None,
) -> Page[EventWaitlistEntryRead]:
    count, entries = await service.list_line(
        uow, row.event.id, offset=page.offset, limit=page.limit, status=status
    )
    return paginate(page, count, [EventWaitlistEntryRead.model_validate(e) for e in entries])
