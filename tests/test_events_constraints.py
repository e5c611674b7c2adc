"""The database refuses bad event and ticket-type rows even when the API is bypassed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from app.events.models import Event, TicketType
from tests.factories import make_event, make_ticket_type


async def expect_refused(db, statement, constraint: str) -> None:
    async with db() as session:
        with pytest.raises(IntegrityError) as info:
            await session.execute(statement)
            await session.commit()
        assert constraint in str(info.value)


async def test_tickets_sold_cannot_exceed_capacity_or_be_negative(db, organizer) -> None:
    event = await make_event(db, organizer, total_capacity=5)
    for value in (6, -1):
        await expect_refused(
            db,
            update(Event).where(Event.id == event.id).values(tickets_sold=value),
            "ck_events_tickets_sold_in_capacity",
        )
    await expect_refused(
        db,
        update(Event).where(Event.id == event.id).values(total_capacity=0),
        "ck_events_total_capacity_positive",
    )


async def test_end_time_must_be_after_start_time(db, organizer) -> None:
    start = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(IntegrityError, match="ck_events_end_after_start"):
        await make_event(db, organizer, start_time=start, end_time=start)
    event = await make_event(db, organizer, start_time=start)
    await expect_refused(
        db,
        update(Event).where(Event.id == event.id).values(end_time=start - timedelta(hours=1)),
        "ck_events_end_after_start",
    )


async def test_empty_names_are_refused(db, organizer) -> None:
    with pytest.raises(IntegrityError, match="ck_events_name_not_empty"):
        await make_event(db, organizer, name="")
    event = await make_event(db, organizer)
    with pytest.raises(IntegrityError, match="ck_ticket_types_name_not_empty"):
        await make_ticket_type(db, event, name="")


async def test_ticket_type_counters_and_price_cannot_be_negative(db, organizer) -> None:
    event = await make_event(db, organizer)
    with pytest.raises(IntegrityError, match="ck_ticket_types_quantity_available_nonnegative"):
        await make_ticket_type(db, event, quantity_available=-1)
    with pytest.raises(IntegrityError, match="ck_ticket_types_price_nonnegative"):
        await make_ticket_type(db, event, price=Decimal("-0.01"))
    tt = await make_ticket_type(db, event)
    await expect_refused(
        db,
        update(TicketType)
        .where(TicketType.id == tt.id)
        .values(quantity_available=TicketType.quantity_available - 51),
        "ck_ticket_types_quantity_available_nonnegative",
    )
    await expect_refused(
        db,
        update(TicketType).where(TicketType.id == tt.id).values(quantity_sold=-1),
        "ck_ticket_types_quantity_sold_nonnegative",
    )


async def test_ticket_type_names_are_unique_per_event_ignoring_case(db, organizer) -> None:
    event = await make_event(db, organizer)
    await make_ticket_type(db, event, name="VIP")
    with pytest.raises(IntegrityError, match="uq_ticket_types_event_id_name_lower"):
        await make_ticket_type(db, event, name="vip")


async def test_sold_and_held_tickets_cannot_exceed_capacity_or_held_be_negative(
    db, organizer
) -> None:
    event = await make_event(db, organizer, total_capacity=5)
    await expect_refused(
        db,
        update(Event).where(Event.id == event.id).values(tickets_sold=3, tickets_held=3),
        "ck_events_tickets_within_capacity",
    )
    await expect_refused(
        db,
        update(Event).where(Event.id == event.id).values(tickets_held=-1),
        "ck_events_tickets_held_nonnegative",
    )
    ticket_type = await make_ticket_type(db, event)
    await expect_refused(
        db,
        update(TicketType).where(TicketType.id == ticket_type.id).values(quantity_held=-1),
        "ck_ticket_types_quantity_held_nonnegative",
    )
