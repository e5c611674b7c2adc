"""Users and their refresh tokens."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, CreatedAt, UpdatedAt


class Role(enum.StrEnum):
    attendee = "attendee"
    organizer = "organizer"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('attendee', 'organizer')", name="role_valid"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        # Case-insensitive uniqueness lives in the database (no citext on every server).
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        Index("uq_users_email", "email", unique=True),
    )

    id: Mapped[BigId]
    username: Mapped[str] = mapped_column(String(150))
    email: Mapped[str] = mapped_column(String(254))
    hashed_password: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # May sign in to the staff console (/admin). Set only from the command line
    # (`create-user --staff`), never through the API.
    is_staff: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    date_joined: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]
    password_changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RefreshToken(Base):
    """One issued refresh token; tokens rotated from one login share a family."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[CreatedAt]
