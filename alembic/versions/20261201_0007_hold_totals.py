"""Hold totals as wide as booking totals.

A hold of up to MAX_TICKETS_PER_BOOKING tickets at the highest price (99,999,999.99)
needs 11 digits before the point, like a booking's total (0006): numeric(14, 2).

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "holds",
        "total_price",
        type_=sa.Numeric(14, 2),
        existing_type=sa.Numeric(10, 2),
        existing_nullable=False,
    )


def downgrade() -> None:
    # Totals above what numeric(10, 2) holds would make the downgrade fail: cap them.
    op.execute("UPDATE holds SET total_price = 99999999.99 WHERE total_price > 99999999.99")
    op.alter_column(
        "holds",
        "total_price",
        type_=sa.Numeric(10, 2),
        existing_type=sa.Numeric(14, 2),
        existing_nullable=False,
    )
