"""Booking totals wide enough for any price times MAX_TICKETS_PER_BOOKING.

A ticket type's price is numeric(10, 2) (up to 99,999,999.99); a booking of up to
1000 tickets (the largest MAX_TICKETS_PER_BOOKING) at that price needs 11 digits
before the point, so the total is numeric(14, 2).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "bookings",
        "total_price",
        type_=sa.Numeric(14, 2),
        existing_type=sa.Numeric(10, 2),
        existing_nullable=False,
    )


def downgrade() -> None:
    # Totals above what numeric(10, 2) holds would make the downgrade fail: cap them.
    op.execute("UPDATE bookings SET total_price = 99999999.99 WHERE total_price > 99999999.99")
    op.alter_column(
        "bookings",
        "total_price",
        type_=sa.Numeric(10, 2),
        existing_type=sa.Numeric(14, 2),
        existing_nullable=False,
    )
