"""HTTP routes of holds: hold, read, release, check out, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.deps import AccessClaims, CurrentUser
from app.bookings.deps import TicketRequestDep
from app.bookings.schemas import BookingRead
from app.core.db import UoW
from app.core.errors import (
    Busy,
    CapacityExceeded,
    EventNotBookable,
    HoldExists,
    HoldExpired,
    HoldNotActive,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    SoldOut,
    TicketTypeInactive,
)
from app.core.links import created
from app.core.metrics import BOOKINGS_CREATED
from app.core.openapi import problem_responses
from app.core.pagination import Page, Pagination, paginate
from app.holds import service
from app.holds.schemas import CheckoutRequest, HoldRead, HoldStatus

router = APIRouter(tags=["holds"])


@router.post(
    "/api/holds",
    status_code=201,
    operation_id="holds_create",
    responses=problem_responses(
        PermissionDenied,
        NotFound,
        SoldOut,
        CapacityExceeded,
        TicketTypeInactive,
        EventNotBookable,
        HoldExists,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
        Busy,
        RateLimited,
    ),
    summary="Hold tickets for a few minutes while you pay",
    response_description="The hold; `Location` points at it.",
)
async def create_hold(request: Request, placing: TicketRequestDep, response: Response) -> HoldRead:
    result = await placing.place(service.place_hold)
    created(request, response, f"/api/holds/{result.hold.hold_reference}/")
    return HoldRead.model_validate(result.hold, from_attributes=True)


@router.get(
    "/api/holds/{hold_reference}",
    operation_id="holds_retrieve",
    responses=problem_responses(NotFound),
    summary="Get one of your holds",
)
async def get_hold(hold_reference: uuid.UUID, user: CurrentUser, uow: UoW) -> HoldRead:
    hold = await service.get_hold(uow, user, hold_reference)
    return HoldRead.model_validate(hold, from_attributes=True)


@router.delete(
    "/api/holds/{hold_reference}",
    status_code=204,
    operation_id="holds_release",
    responses=problem_responses(NotFound, HoldNotActive, Busy),
    summary="Release one of your holds: its tickets go back on sale",
    response_description="Released",
)
async def release_hold(
    request: Request, hold_reference: uuid.UUID, user: CurrentUser, uow: UoW
) -> Response:
    await service.release_hold(uow, user, hold_reference, settings=request.app.state.settings)
    return Response(status_code=204)


@router.post(
    "/api/holds/{hold_reference}/checkout",
    status_code=201,
    operation_id="holds_checkout",
    responses={
        200: {"description": "The hold was checked out before: the same booking."},
        **problem_responses(
            NotFound, HoldExpired, HoldNotActive, EventNotBookable, Busy, ServiceUnavailable
        ),
    },
    summary="Check out one of your holds: a confirmed booking at the hold's prices",
    response_description="The booking; `Location` points at it.",
)
async def checkout_hold(
    request: Request,
    hold_reference: uuid.UUID,
    claims: AccessClaims,
    uow: UoW,
    response: Response,
    body: CheckoutRequest | None = None,
) -> BookingRead:
    booking, is_new = await service.checkout_hold(
        uow,
        claims,
        hold_reference,
        settings=request.app.state.settings,
        payment_reference=body.payment_reference if body is not None else None,
    )
    if is_new:
        BOOKINGS_CREATED.inc()
        created(request, response, f"/api/bookings/{booking.booking_reference}/")
    else:
        response.status_code = 200
    return BookingRead.model_validate(booking, from_attributes=True)


@router.get(
    "/api/users/me/holds",
    operation_id="holds_list_mine",
    summary="List your holds, newest first",
)
async def list_my_holds(
    user: CurrentUser,
    uow: UoW,
    page: Pagination,
    status: Annotated[HoldStatus | None, Query()] = None,
) -> Page[HoldRead]:
    count, holds = await service.list_holds(
        uow, user, offset=page.offset, limit=page.limit, status=status
    )
    return paginate(page, count, [HoldRead.model_validate(h, from_attributes=True) for h in holds])
