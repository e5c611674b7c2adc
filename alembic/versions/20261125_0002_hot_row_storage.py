"""Storage settings for the rows every booking updates: events and ticket types.

A hot event's row is updated by every booking. A lower fillfactor leaves room on the
page for HOT updates (no index churn), and a fixed autovacuum threshold cleans the
dead row versions after a burst instead of waiting for 20 % of the table to be dead.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("events", "ticket_types")
OPTIONS = (
    "fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
    "autovacuum_analyze_scale_factor = 0.05"
)


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET ({OPTIONS})")


def downgrade() -> None:
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} RESET (fillfactor, autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor)"
        )
