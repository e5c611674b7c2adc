"""A waiting-list offer as the inventory makes it: a leaf module, so that the messages
that tell about an offer need not import the inventory that calls them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Offer:
    """A hold made for a waiting entry: what its email says (sent after commit)."""

    entry_id: int
    email: str
    username: str
    event_id: int
    event_name: str
    event_start: datetime
    location: str
    ticket_type_name: str
    quantity: int
    unit_price: Decimal
    hold_reference: uuid.UUID
    expires_at: datetime
