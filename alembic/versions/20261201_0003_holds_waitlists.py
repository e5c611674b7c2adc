"""Holds and waiting lists: holds and their items, waiting-list entries, held counters,
the payment reference of a booking, Idempotency-Keys per route.

Revision ID: 0003
Revises: 0006
Create Date: 2026-12-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "hold_reference", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("total_price", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("booking_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(status = 'converted') = (booking_id IS NOT NULL)",
            name=op.f("ck_holds_booking_matches"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'converted', 'released', 'expired')",
            name=op.f("ck_holds_status_valid"),
        ),
        sa.CheckConstraint("total_price >= 0", name=op.f("ck_holds_total_price_nonnegative")),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
            name=op.f("fk_holds_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_holds_event_id_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_holds_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("hold_reference", name=op.f("uq_holds_hold_reference")),
    )
    op.create_index(
        "ix_holds_active_expires_at",
        "holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_holds_event_id_active",
        "holds",
        ["event_id"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("ix_holds_user_id_created_at", "holds", ["user_id", "created_at"], unique=False)
    op.create_index(
        "uq_holds_user_id_event_id_active",
        "holds",
        ["user_id", "event_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "hold_items",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("ticket_type_id", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_hold_items_quantity_positive")),
        sa.CheckConstraint("unit_price >= 0", name=op.f("ck_hold_items_unit_price_nonnegative")),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["holds.id"], name=op.f("fk_hold_items_hold_id_holds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["ticket_type_id"],
            ["ticket_types.id"],
            name=op.f("fk_hold_items_ticket_type_id_ticket_types"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold_items")),
        sa.UniqueConstraint(
            "hold_id", "ticket_type_id", name=op.f("uq_hold_items_hold_id_ticket_type_id")
        ),
    )
    op.create_index(
        op.f("ix_hold_items_ticket_type_id"), "hold_items", ["ticket_type_id"], unique=False
    )
    op.create_table(
        "waitlist_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("ticket_type_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="waiting", nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('waiting', 'offered', 'converted', 'expired', 'left')",
            name=op.f("ck_waitlist_entries_status_valid"),
        ),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_waitlist_entries_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_waitlist_entries_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["holds.id"],
            name=op.f("fk_waitlist_entries_hold_id_holds"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_type_id"],
            ["ticket_types.id"],
            name=op.f("fk_waitlist_entries_ticket_type_id_ticket_types"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_waitlist_entries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_entries")),
    )
    op.create_index(
        "ix_waitlist_entries_event_id_waiting",
        "waitlist_entries",
        ["event_id", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'waiting'"),
    )
    op.create_index(
        op.f("ix_waitlist_entries_hold_id"), "waitlist_entries", ["hold_id"], unique=False
    )
    op.create_index(
        "ix_waitlist_entries_user_id_created_at",
        "waitlist_entries",
        ["user_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "uq_waitlist_entries_user_id_ticket_type_id_open",
        "waitlist_entries",
        ["user_id", "ticket_type_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('waiting', 'offered')"),
    )
    op.add_column("bookings", sa.Column("payment_reference", sa.String(length=255), nullable=True))
    op.add_column(
        "events",
        sa.Column("tickets_held", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=16), server_default="bookings", nullable=False),
    )
    op.add_column("idempotency_keys", sa.Column("hold_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_idempotency_keys_hold_id_holds"),
        "idempotency_keys",
        "holds",
        ["hold_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.add_column(
        "ticket_types",
        sa.Column("quantity_held", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_ticket_types_quantity_held_nonnegative"), "ticket_types", "quantity_held >= 0"
    )
    op.create_check_constraint(
        op.f("ck_events_tickets_held_nonnegative"), "events", "tickets_held >= 0"
    )
    op.create_check_constraint(
        op.f("ck_events_tickets_within_capacity"),
        "events",
        "tickets_sold + tickets_held <= total_capacity",
    )
    # A key is one request per user AND route.
    op.drop_constraint(op.f("pk_idempotency_keys"), "idempotency_keys", type_="primary")
    op.create_primary_key(
        op.f("pk_idempotency_keys"), "idempotency_keys", ["user_id", "scope", "key"]
    )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE scope <> 'bookings'")
    op.drop_constraint(op.f("pk_idempotency_keys"), "idempotency_keys", type_="primary")
    op.create_primary_key(op.f("pk_idempotency_keys"), "idempotency_keys", ["user_id", "key"])
    op.drop_constraint(op.f("ck_events_tickets_within_capacity"), "events", type_="check")
    op.drop_constraint(op.f("ck_events_tickets_held_nonnegative"), "events", type_="check")
    op.drop_constraint(
        op.f("ck_ticket_types_quantity_held_nonnegative"), "ticket_types", type_="check"
    )
    op.drop_column("ticket_types", "quantity_held")
    op.drop_constraint(
        op.f("fk_idempotency_keys_hold_id_holds"), "idempotency_keys", type_="foreignkey"
    )
    op.drop_column("idempotency_keys", "hold_id")
    op.drop_column("idempotency_keys", "scope")
    op.drop_column("events", "tickets_held")
    op.drop_column("bookings", "payment_reference")
    op.drop_index(
        "uq_waitlist_entries_user_id_ticket_type_id_open",
        table_name="waitlist_entries",
        postgresql_where=sa.text("status IN ('waiting', 'offered')"),
    )
    op.drop_index("ix_waitlist_entries_user_id_created_at", table_name="waitlist_entries")
    op.drop_index(op.f("ix_waitlist_entries_hold_id"), table_name="waitlist_entries")
    op.drop_index(
        "ix_waitlist_entries_event_id_waiting",
        table_name="waitlist_entries",
        postgresql_where=sa.text("status = 'waiting'"),
    )
    op.drop_table("waitlist_entries")
    op.drop_index(op.f("ix_hold_items_ticket_type_id"), table_name="hold_items")
    op.drop_table("hold_items")
    op.drop_index(
        "uq_holds_user_id_event_id_active",
        table_name="holds",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index("ix_holds_user_id_created_at", table_name="holds")
    op.drop_index(
        "ix_holds_event_id_active",
        table_name="holds",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        "ix_holds_active_expires_at",
        table_name="holds",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_table("holds")
