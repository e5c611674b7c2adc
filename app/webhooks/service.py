"""The rules of webhook endpoints: an organizer's own, a checked URL, the secret shown once."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from app.auth.models import User
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.errors import NotFound, ValidationFailed
from app.webhooks import addresses, signing
from app.webhooks.models import WebhookDelivery, WebhookEndpoint
from app.webhooks.schemas import WebhookCreate, WebhookUpdate


async def _check_url(url: str, settings: Settings) -> None:
    reason = await addresses.check_url(url, allow_private=settings.webhook_allow_private_networks)
    if reason is not None:
        raise ValidationFailed(reason, field="body.url")


async def create_endpoint(
    uow: UnitOfWork, organizer: User, data: WebhookCreate, settings: Settings
) -> tuple[WebhookEndpoint, str]:
    """The endpoint created, and its secret (which is never shown again)."""
    url = str(data.url)
    await _check_url(url, settings)
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        organizer_id=organizer.id,
        url=url,
        secret=secret,
        event_types=[t.value for t in data.event_types],
    )
    async with uow:
        uow.session.add(endpoint)
        await uow.session.flush()
        await uow.session.refresh(endpoint)
    return endpoint, secret


async def _own_endpoint(uow: UnitOfWork, organizer: User, endpoint_id: int) -> WebhookEndpoint:
    endpoint = await uow.session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.organizer_id == organizer.id
        )
    )
    if endpoint is None:  # someone else's is not revealed
        raise NotFound("No webhook endpoint with this id.")
    return endpoint


async def get_endpoint(uow: UnitOfWork, organizer: User, endpoint_id: int) -> WebhookEndpoint:
    async with uow:
        return await _own_endpoint(uow, organizer, endpoint_id)


async def list_endpoints(
    uow: UnitOfWork, organizer: User, *, offset: int, limit: int
) -> tuple[int, list[WebhookEndpoint]]:
    mine = WebhookEndpoint.organizer_id == organizer.id
    async with uow:
        count = await uow.session.scalar(select(func.count()).where(mine))
        endpoints = await uow.session.scalars(
            select(WebhookEndpoint)
            .where(mine)
            .order_by(WebhookEndpoint.id)
            .offset(offset)
            .limit(limit)
        )
        return count or 0, list(endpoints)


async def update_endpoint(
    uow: UnitOfWork, organizer: User, endpoint_id: int, data: WebhookUpdate, settings: Settings
) -> WebhookEndpoint:
    changes: dict[str, object] = {}
    if data.url is not None:
        changes["url"] = str(data.url)
        await _check_url(changes["url"], settings)  # type: ignore[arg-type]
    if data.event_types is not None:
        changes["event_types"] = [t.value for t in data.event_types]
    if data.is_active is not None:
        changes["is_active"] = data.is_active
    if not changes:
        return await get_endpoint(uow, organizer, endpoint_id)
    async with uow:
        # One statement: a concurrent delete leaves nothing to update (404), never a
        # half-read row.
        endpoint = await uow.session.scalar(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.organizer_id == organizer.id)
            .values(**changes, updated_at=func.now())
            .returning(WebhookEndpoint)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        if endpoint is None:
            raise NotFound("No webhook endpoint with this id.")
        return endpoint


async def delete_endpoint(uow: UnitOfWork, organizer: User, endpoint_id: int) -> None:
    """Deleting an endpoint drops its pending messages and deliveries log with it."""
    async with uow:
        deleted = await uow.session.scalar(
            delete(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.organizer_id == organizer.id)
            .returning(WebhookEndpoint.id)
        )
        if deleted is None:
            raise NotFound("No webhook endpoint with this id.")


async def list_deliveries(
    uow: UnitOfWork, organizer: User, endpoint_id: int, *, offset: int, limit: int
) -> tuple[int, list[WebhookDelivery]]:
    """The attempts to deliver to one's own endpoint, newest first."""
    async with uow:
        endpoint = await _own_endpoint(uow, organizer, endpoint_id)
        of_endpoint = WebhookDelivery.endpoint_id == endpoint.id
        count = await uow.session.scalar(select(func.count()).where(of_endpoint))
        deliveries = await uow.session.scalars(
            select(WebhookDelivery)
            .where(of_endpoint)
            .order_by(WebhookDelivery.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return count or 0, list(deliveries)
