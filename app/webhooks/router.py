"""HTTP routes of webhook endpoints: subscribe, read, change, delete, the deliveries log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from app.auth.deps import Organizer
from app.core.db import UoW
from app.core.errors import NotFound, PermissionDenied
from app.core.links import created
from app.core.openapi import problem_responses
from app.core.pagination import Page, Pagination, paginate
from app.webhooks import service
from app.webhooks.schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

EndpointId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A webhook endpoint's id.")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="webhooks_create",
    summary="Subscribe an endpoint to webhooks",
    description=(
        "Organizers only. The endpoint receives the chosen event types for the caller's "
        "own events. The `secret` is shown in this response only."
    ),
    response_description="The endpoint with its secret; `Location` points at it.",
    responses=problem_responses(PermissionDenied),
)
async def create_webhook(
    request: Request, response: Response, uow: UoW, user: Organizer, body: WebhookCreate
) -> WebhookCreated:
    endpoint, secret = await service.create_endpoint(uow, user, body, request.app.state.settings)
    created(request, response, f"/api/webhooks/{endpoint.id}/")
    return WebhookCreated.model_validate(
        {**WebhookRead.model_validate(endpoint).model_dump(), "secret": secret}
    )


@router.get(
    "",
    operation_id="webhooks_list",
    summary="List your webhook endpoints",
    responses=problem_responses(PermissionDenied),
)
async def list_webhooks(uow: UoW, user: Organizer, page: Pagination) -> Page[WebhookRead]:
    count, endpoints = await service.list_endpoints(uow, user, offset=page.offset, limit=page.limit)
    return paginate(page, count, [WebhookRead.model_validate(e) for e in endpoints])


@router.get(
    "/{endpoint_id}",
    operation_id="webhooks_retrieve",
    summary="Get one of your webhook endpoints",
    responses=problem_responses(PermissionDenied, NotFound),
)
async def get_webhook(uow: UoW, user: Organizer, endpoint_id: EndpointId) -> WebhookRead:
    return WebhookRead.model_validate(await service.get_endpoint(uow, user, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    operation_id="webhooks_update",
    summary="Change one of your webhook endpoints",
    description="Only the fields sent change. Re-enabling does not resend what was skipped.",
    responses=problem_responses(PermissionDenied, NotFound),
)
async def update_webhook(
    request: Request, uow: UoW, user: Organizer, endpoint_id: EndpointId, body: WebhookUpdate
) -> WebhookRead:
    endpoint = await service.update_endpoint(
        uow, user, endpoint_id, body, request.app.state.settings
    )
    return WebhookRead.model_validate(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="webhooks_delete",
    summary="Delete one of your webhook endpoints",
    responses=problem_responses(PermissionDenied, NotFound),
)
async def delete_webhook(uow: UoW, user: Organizer, endpoint_id: EndpointId) -> Response:
    await service.delete_endpoint(uow, user, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{endpoint_id}/deliveries",
    operation_id="webhooks_deliveries_list",
    summary="List the delivery attempts of one of your endpoints, newest first",
    responses=problem_responses(PermissionDenied, NotFound),
)
async def list_webhook_deliveries(
    uow: UoW, user: Organizer, endpoint_id: EndpointId, page: Pagination
) -> Page[WebhookDeliveryRead]:
    count, deliveries = await service.list_deliveries(
        uow, user, endpoint_id, offset=page.offset, limit=page.limit
    )
    return paginate(page, count, [WebhookDeliveryRead.model_validate(d) for d in deliveries])
