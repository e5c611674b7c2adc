"""Every model, imported in one place for Alembic's autogenerate."""

from app.admin.models import AuditLog
from app.auth.models import RefreshToken, User
from app.bookings.models import Booking, BookingItem, IdempotencyKey
from app.core.db import Base
from app.events.models import Event, TicketType
from app.holds.models import Hold, HoldItem
from app.outbox.models import OutboxMessage
from app.waitlist.models import WaitlistEntry
from app.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "AuditLog",
    "Base",
    "Booking",
    "BookingItem",
    "Event",
    "Hold",
    "HoldItem",
    "IdempotencyKey",
    "OutboxMessage",
    "RefreshToken",
    "TicketType",
    "User",
    "WaitlistEntry",
    "WebhookDelivery",
    "WebhookEndpoint",
]
