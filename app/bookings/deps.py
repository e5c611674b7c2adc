"""Request dependencies shared by the routes that create bookings (bookings and holds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from app.auth.deps import AttendeeClaims
from app.bookings.schemas import BookingCreate
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.ratelimit import Limiter
from app.core.schemas import Line
from app.core.security import TokenClaims

T = TypeVar("T")

IdempotencyKeyHeader = Annotated[
    Line | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key and body returns the original booking.",
    ),
]


@dataclass(frozen=True, slots=True)
class TicketRequest:
    """A request to take tickets (a booking or a hold), read and counted: what the
    service is called with."""

    uow: UnitOfWork
    claims: TokenClaims
    data: BookingCreate
    settings: Settings
    idempotency_key: str | None

    async def place(self, service: Callable[..., Awaitable[T]]) -> T:
        """Run ``service`` (``book_tickets`` or ``place_hold``) on this request."""
        return await service(
            self.uow,
            self.claims,
            self.data,
            settings=self.settings,
            idempotency_key=self.idempotency_key,
        )


async def ticket_request(
    request: Request,
    data: BookingCreate,
    claims: AttendeeClaims,
    limiter: Limiter,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TicketRequest:
    # Runs once the token, the body and the header are valid. The account behind the
    # token is read by the service's first statement (one round trip less than the
    # CurrentUser dependency); only attendees get past it. Holds count against the same
    # per-user limit as bookings.
    await limiter.hit("bookings", str(claims.user_id))
    return TicketRequest(
        UnitOfWork(request.app.state.sessionmaker),
        claims,
        data,
        request.app.state.settings,
        idempotency_key,
    )


TicketRequestDep = Annotated[TicketRequest, Depends(ticket_request)]
