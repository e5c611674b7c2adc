"""HTTP routes of the events domain: events and their ticket types."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.auth.deps import OptionalAuth, Organizer
from app.core.db import UnitOfWork, UoW
from app.core.errors import (
    Busy,
    CapacityBelowSold,
    EventHasBookings,
    EventNotBookable,
    ServiceUnavailable,
    TicketTypeNameTaken,
)
from app.core.links import created
from app.core.openapi import problem_responses
from app.core.pagination import Page, Pagination, paginate
from app.core.replica import CatalogueUoW, catalogue_sessionmaker
from app.events import service
from app.events.deps import CatalogueEvent, Filters, OwnedEvent, TicketTypeId
from app.events.schemas import (
    EventCreate,
    EventDetail,
    EventRead,
    EventUpdate,
    TicketTypeCreate,
    TicketTypeRead,
    TicketTypeUpdate,
)

router = APIRouter(prefix="/api/events")


@router.get(
    "",
    operation_id="events_list",
    response_description="One page of events",
    summary="List events",
    description=(
        "Paginated. Without `status`, only `upcoming` and `sold_out` events are listed. "
        "Filters combine with AND and are kept in the `next`/`previous` links."
    ),
    tags=["events"],
    response_model=Page[EventRead],
    # Busy: no pooled connection within DB_POOL_TIMEOUT, or a statement past its timeout.
    responses=problem_responses(ServiceUnavailable, Busy),
)
async def list_events(request: Request, filters: Filters, page: Pagination) -> Page[EventRead]:
    # One statement on the unit of work's asyncpg connection (no session to clean up,
    # so no UoW dependency); on the read replica for an anonymous request.
    count, rows = await service.list_events(
        UnitOfWork(catalogue_sessionmaker(request)),
        filters,
        offset=page.offset,
        limit=page.limit,
    )
    return paginate(page, count, [EventRead.from_record(row) for row in rows])


@router.post(
    "",
    operation_id="events_create",
    response_description="The event created",
    summary="Create an event",
    description="Organizers only; the caller becomes the event's organizer.",
    tags=["events"],
    status_code=status.HTTP_201_CREATED,
    response_model=EventRead,
)
async def create_event(
    request: Request, response: Response, uow: UoW, user: Organizer, body: EventCreate
) -> EventRead:
    row = await service.create_event(uow, user, body)
    created(request, response, f"/api/events/{row.event.id}/")
    return EventRead.from_row(row.event, row.status)


@router.get(
    "/{event_id}",
    operation_id="events_retrieve",
    response_description="The event with its ticket types",
    summary="Get an event with its ticket types",
    tags=["events"],
    response_model=EventDetail,
    dependencies=[OptionalAuth],
)
async def retrieve_event(uow: CatalogueUoW, row: CatalogueEvent) -> EventDetail:
    ticket_types = await service.list_ticket_types(uow, row.event.id)
    return EventDetail.from_detail(row.event, row.status, ticket_types)


@router.patch(
    "/{event_id}",
    operation_id="events_update",
    response_description="The event as changed",
    summary="Change or cancel an event",
    description=(
        "The event's organizer only; only the fields sent change. `status: cancelled` "
        "cancels every confirmed booking of the event and releases their tickets, in one "
        "transaction. A cancelled event cannot be changed any more."
    ),
    tags=["events"],
    response_model=EventRead,
    responses=problem_responses(EventNotBookable, CapacityBelowSold, Busy),
)
async def update_event(uow: UoW, row: OwnedEvent, body: EventUpdate) -> EventRead:
    change = await service.update_event(uow, row.event.id, body)
    return EventRead.from_row(change.row.event, change.row.status)


@router.delete(
    "/{event_id}",
    operation_id="events_delete",
    response_description="Deleted",
    summary="Delete an event",
    description="The event's organizer only; refused while the event has confirmed bookings.",
    tags=["events"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(EventHasBookings, Busy),
)
async def delete_event(uow: UoW, row: OwnedEvent) -> Response:
    await service.delete_event(uow, row.event.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{event_id}/ticket-types",
    operation_id="ticket_types_list",
    response_description="The event's ticket types, by price",
    summary="List an event's ticket types",
    description="All ticket types of the event, active or not, by price then id; not paginated.",
    tags=["ticket-types"],
    response_model=list[TicketTypeRead],
    dependencies=[OptionalAuth],
)
async def list_ticket_types(uow: CatalogueUoW, row: CatalogueEvent) -> list[TicketTypeRead]:
    ticket_types = await service.list_ticket_types(uow, row.event.id)
    return [TicketTypeRead.model_validate(tt) for tt in ticket_types]


@router.post(
    "/{event_id}/ticket-types",
    operation_id="ticket_types_create",
    response_description="The ticket type created",
    summary="Add a ticket type to an event",
    tags=["ticket-types"],
    status_code=status.HTTP_201_CREATED,
    response_model=TicketTypeRead,
    responses=problem_responses(TicketTypeNameTaken, EventNotBookable, Busy),
)
async def create_ticket_type(
    request: Request, response: Response, uow: UoW, row: OwnedEvent, body: TicketTypeCreate
) -> TicketTypeRead:
    ticket_type = await service.create_ticket_type(uow, row.event.id, body)
    created(request, response, f"/api/events/{row.event.id}/ticket-types/{ticket_type.id}/")
    return TicketTypeRead.model_validate(ticket_type)


@router.get(
    "/{event_id}/ticket-types/{ticket_type_id}",
    operation_id="ticket_types_retrieve",
    response_description="The ticket type",
    summary="Get one ticket type of an event",
    tags=["ticket-types"],
    response_model=TicketTypeRead,
    dependencies=[OptionalAuth],
)
async def retrieve_ticket_type(
    uow: CatalogueUoW, row: CatalogueEvent, ticket_type_id: TicketTypeId
) -> TicketTypeRead:
    ticket_type = await service.get_ticket_type(uow, row.event.id, ticket_type_id)
    return TicketTypeRead.model_validate(ticket_type)


@router.patch(
    "/{event_id}/ticket-types/{ticket_type_id}",
    operation_id="ticket_types_update",
    response_description="The ticket type as changed",
    summary="Change a ticket type",
    description=(
        "The event's organizer only; only the fields sent change. `quantity_available` is "
        "what is left to sell."
    ),
    tags=["ticket-types"],
    response_model=TicketTypeRead,
    responses=problem_responses(TicketTypeNameTaken, EventNotBookable, Busy),
)
async def update_ticket_type(
    request: Request,
    uow: UoW,
    row: OwnedEvent,
    ticket_type_id: TicketTypeId,
    body: TicketTypeUpdate,
) -> TicketTypeRead:
    # Tickets added go to the waiting list first; the offers' emails are in the outbox.
    ticket_type, _ = await service.update_ticket_type(
        uow, row.event.id, ticket_type_id, body, settings=request.app.state.settings
    )
    return TicketTypeRead.model_validate(ticket_type)
