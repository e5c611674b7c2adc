"""HTTP routes of bookings: book, read, cancel, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.auth.deps import CurrentUser
from app.bookings import door_list, service
from app.bookings.deps import TicketRequestDep
from app.bookings.schemas import (
    BookingFilters,
    BookingRead,
    BookingStatus,
    EventBookingRead,
    Id,
)
from app.core.db import UoW
from app.core.errors import (
    AlreadyCancelled,
    Busy,
    CapacityExceeded,
    EventNotBookable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    SoldOut,
    TicketTypeInactive,
)
from app.core.links import created
from app.core.metrics import BOOKINGS_CANCELLED, BOOKINGS_CREATED
from app.core.openapi import problem_responses
from app.core.pagination import Page, Pagination, paginate
from app.core.schemas import QueryDatetime
from app.inventory.service import Aftermath

router = APIRouter(tags=["bookings"])


async def booking_filters(
    status: Annotated[BookingStatus | None, Query()] = None,
    event: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="An event id.")] = None,
    created_at__gte: Annotated[QueryDatetime | None, Query()] = None,
    created_at__lte: Annotated[QueryDatetime | None, Query()] = None,
) -> BookingFilters:
    return BookingFilters(
        status=status, event=event, created_at__gte=created_at__gte, created_at__lte=created_at__lte
    )


@router.post(
    "/api/bookings",
    status_code=201,
    operation_id="bookings_create",
    responses=problem_responses(
        NotFound,
        SoldOut,
        CapacityExceeded,
        TicketTypeInactive,
        EventNotBookable,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
        Busy,
        ServiceUnavailable,
    ),
    summary="Book tickets for an event",
    response_description="The booking; `Location` points at it.",
)
async def create_booking(
    request: Request, placing: TicketRequestDep, response: Response
) -> BookingRead:
    result = await placing.place(service.book_tickets)
    if not result.replayed:
        BOOKINGS_CREATED.inc()
    created(request, response, f"/api/bookings/{result.booking.booking_reference}/")
    return BookingRead.model_validate(result.booking, from_attributes=True)


@router.get(
    "/api/bookings/{booking_reference}",
    operation_id="bookings_retrieve",
    responses=problem_responses(NotFound),
    summary="Get one of your bookings",
)
async def get_booking(booking_reference: uuid.UUID, user: CurrentUser, uow: UoW) -> BookingRead:
    booking = await service.get_booking(uow, user, booking_reference)
    return BookingRead.model_validate(booking, from_attributes=True)


@router.put(
    "/api/bookings/{booking_reference}/cancel",
    operation_id="bookings_cancel",
    responses=problem_responses(NotFound, AlreadyCancelled, EventNotBookable, Busy),
    summary="Cancel one of your bookings and release its tickets",
)
async def cancel_booking(
    request: Request, booking_reference: uuid.UUID, user: CurrentUser, uow: UoW
) -> BookingRead:
    aftermath = Aftermath()
    booking = await service.cancel_booking(
        uow, user, booking_reference, settings=request.app.state.settings, aftermath=aftermath
    )
    BOOKINGS_CANCELLED.inc()
    return BookingRead.model_validate(booking, from_attributes=True)


@router.get(
    "/api/users/me/bookings",
    operation_id="bookings_list_mine",
    summary="List your bookings, newest first",
)
async def list_my_bookings(
    user: CurrentUser,
    uow: UoW,
    page: Pagination,
    filters: Annotated[BookingFilters, Depends(booking_filters)],
) -> Page[BookingRead]:
    count, bookings = await service.list_bookings(
        uow, offset=page.offset, limit=page.limit, user_id=user.id, filters=filters
    )
    return paginate(
        page, count, [BookingRead.model_validate(b, from_attributes=True) for b in bookings]
    )


@router.get(
    "/api/events/{event_id}/bookings",
    operation_id="events_bookings_list",
    responses=problem_responses(PermissionDenied, NotFound),
    summary="List the bookings of your event, newest first",
    tags=["events"],
)
async def list_event_bookings(
    event_id: Id,
    user: CurrentUser,
    uow: UoW,
    page: Pagination,
    filters: Annotated[BookingFilters, Depends(booking_filters)],
) -> Page[EventBookingRead]:
    count, bookings = await service.list_event_bookings(
        uow, user, event_id, filters, offset=page.offset, limit=page.limit
    )
    return paginate(
        page, count, [EventBookingRead.model_validate(b, from_attributes=True) for b in bookings]
    )


@router.get(
    "/api/events/{event_id}/bookings/export",
    operation_id="events_bookings_export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The door list as CSV, streamed: a header line, then one line per "
            "ticket type of each booking, oldest booking first.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "booking_reference,attendee,ticket_type,quantity,status,"
                    "booked_at\r\n3f2c...,ann,VIP,2,confirmed,2030-05-01T10:00:00+00:00\r\n",
                }
            },
        },
        **problem_responses(PermissionDenied, NotFound),
    },
    summary="Download the door list of your event (CSV)",
    description="The event's organizer only. Columns: `booking_reference`, `attendee` "
    "(username), `ticket_type`, `quantity`, `status` (confirmed or cancelled), `booked_at`. "
    "A cell that a spreadsheet would run as a formula starts with an apostrophe.",
    tags=["events"],
)
async def export_event_bookings(
    request: Request, event_id: Id, user: CurrentUser, uow: UoW
) -> StreamingResponse:
    await service.check_event_organizer(uow, user, event_id)
    return StreamingResponse(
        door_list.door_list(request.app.state.sessionmaker, event_id),
        media_type=door_list.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{door_list.filename(event_id)}"'},
    )
