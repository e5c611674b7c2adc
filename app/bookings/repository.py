"""What bookings and holds read and write alike: the Idempotency-Keys of their requests
(claiming one, reading its holder) and their items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, String, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql import ColumnElement

from app.bookings.models import IdempotencyKey
from app.core.db import param
from app.events.models import TicketType

CLAIM_KEY = (
    insert(IdempotencyKey)
    .values(
        user_id=param("user_id", BigInteger),
        scope=param("scope", String),
        key=param("key", String),
        request_hash=param("request_hash", String),
    )
    .on_conflict_do_nothing(
        index_elements=[IdempotencyKey.user_id, IdempotencyKey.scope, IdempotencyKey.key]
    )
    .returning(IdempotencyKey.key)
)

HELD_KEY = select(
    IdempotencyKey.request_hash, IdempotencyKey.booking_id, IdempotencyKey.hold_id
).where(
    IdempotencyKey.user_id == param("user_id", BigInteger),
    IdempotencyKey.scope == param("scope", String),
    IdempotencyKey.key == param("key", String),
)

# The ticket type's name as every item reads it.
TICKET_TYPE_NAME = TicketType.name.label("ticket_type_name")


async def read_items(
    session: AsyncSession,
    owner: InstrumentedAttribute[int],
    ids: Sequence[int],
    *columns: ColumnElement[Any],
    order_by: ColumnElement[Any],
) -> dict[int, list[dict[str, Any]]]:
    """The items of several bookings or holds in one query, whatever their number: under
    each owner's id (``owner`` is ``BookingItem.booking_id`` or ``HoldItem.hold_id``), one
    dict per item of ``columns``, which may name the ticket type (``TICKET_TYPE_NAME``)."""
    items: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        result = await session.execute(
            select(owner.label("owner_id"), *columns)
            .join(TicketType, TicketType.id == owner.class_.ticket_type_id)
            .where(owner.in_(ids))
            .order_by(order_by)
        )
        for row in result.mappings():
            item = dict(row)
            items[item.pop("owner_id")].append(item)
    return items
