"""Account checks shared by the token dependencies and the services that read the account
in their own statement (the booking hot path): no FastAPI here, so services may use it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.auth.models import Role, User
from app.auth.passwords import password_stamp
from app.core.config import Settings
from app.core.errors import InvalidToken, PermissionDenied
from app.core.security import TokenClaims

# What a hot path's first statement selects of the caller's account, beside what it
# needs (the access token was only verified); ``account_of`` reads it back.
ACCOUNT_COLUMNS = (
    User.id,
    User.username,
    User.email,
    User.role,
    User.is_active,
    User.password_changed_at,
)


def account_of(row: Mapping[str, Any] | None) -> User | None:
    """The account in a row that selected ``ACCOUNT_COLUMNS``, or None."""
    if row is None or row["id"] is None:
        return None
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        role=row["role"],
        is_active=row["is_active"],
        password_changed_at=row["password_changed_at"],
    )


def check_token_user(user: User | None, claims: TokenClaims, settings: Settings) -> User:
    """The account a verified access token speaks for, if the token is still alive."""
    if user is None or not user.is_active:
        raise InvalidToken()
    # A token issued before the last password change, reset or deactivation is dead.
    # Tokens from login/refresh carry the password version they were issued for
    # (exact, even within one second); others are judged by their issue time.
    if claims.password_version is not None:
        if claims.password_version != password_stamp(user):
            raise InvalidToken()
        return user
    issued_at = claims.expires_at.timestamp() - settings.access_token_expire_minutes * 60
    if issued_at + 1 < user.password_changed_at.timestamp():
        raise InvalidToken()
    return user


def only(role: Role) -> PermissionDenied:
    return PermissionDenied(f"Only {role.value}s can do this.")


def check_role(user: User, role: Role) -> User:
    if user.role != role:
        raise only(role)
    return user
