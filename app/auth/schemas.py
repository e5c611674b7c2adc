"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from app.auth.models import Role
from app.core.schemas import Line, Text, UtcDatetime

USERNAME_RE = re.compile(r"^[\w.@+-]{3,150}$")
# Generous bound: argon2 accepts any length, but hashing megabytes is a cheap way to burn CPU.
PASSWORD_MAX_LENGTH = 1024


def _check_username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value):
        raise ValueError(
            "Enter a valid username: 3 to 150 characters, only letters, digits and @ . + - _."
        )
    return value


def _lower(value: str) -> str:
    return value.lower()


Username = Annotated[
    Line,
    AfterValidator(_check_username),
    Field(
        description="3 to 150 letters, digits and @ . + - _; case-insensitively unique.",
        examples=["alice"],
        json_schema_extra={"minLength": 3, "maxLength": 150, "pattern": r"^[\w.@+-]+$"},
    ),
]
Email = Annotated[
    EmailStr,
    AfterValidator(_lower),
    Field(
        max_length=254,
        description="Stored lower-cased; case-insensitively unique.",
        examples=["alice@example.com"],
    ),
]
Password = Annotated[
    Text,
    Field(
        max_length=PASSWORD_MAX_LENGTH,
        description="At least 8 characters, not all digits, not contained in the username or "
        "email, not a common password.",
        examples=["Correct-Horse-42"],
    ),
]


class UserRegister(BaseModel):
    username: Username
    email: Email
    password: Password
    role: Role = Field(
        default=Role.attendee,
        description="`attendee` (books tickets) or `organizer` (creates events); read-only later.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "alice",
                    "email": "alice@example.com",
                    "password": "Correct-Horse-42",
                    "role": "attendee",
                }
            ]
        }
    )


class UserRead(BaseModel):
    """A user as the API shows it; the password hash is never part of it."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(examples=[1])
    username: str = Field(examples=["alice"])
    email: str = Field(examples=["alice@example.com"])
    role: Role = Field(examples=["attendee"])
    is_active: bool = Field(examples=[True])
    date_joined: UtcDatetime


class ProfileUpdate(BaseModel):
    """Fields to change; absent (or null) ones stay as they are. `role` is read-only and ignored."""

    username: Username | None = None
    email: Email | None = None
    current_password: Text | None = Field(
        default=None,
        max_length=PASSWORD_MAX_LENGTH,
        description="The current password; needed to change the email (a stolen access token "
        "alone must not be able to redirect password resets).",
        examples=["Correct-Horse-42"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "alice2",
                    "email": "alice2@example.com",
                    "current_password": "Correct-Horse-42",
                }
            ]
        }
    )


class DeactivateAccount(BaseModel):
    password: Text = Field(
        max_length=PASSWORD_MAX_LENGTH,
        description="The current password.",
        examples=["Correct-Horse-42"],
    )


class Login(BaseModel):
    username: Line = Field(
        max_length=254,
        description="The username or the email address (case-insensitive).",
        examples=["alice"],
    )
    password: Text = Field(
        max_length=PASSWORD_MAX_LENGTH, description="The password.", examples=["Correct-Horse-42"]
    )


class TokenPair(BaseModel):
    access: str = Field(description="Access JWT; send it as `Authorization: Bearer <access>`.")
    refresh: str = Field(
        description="Refresh JWT; exchange it once at /api/auth/token/refresh/ for a new pair."
    )
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2 token type
    expires_in: int = Field(description="Lifetime of the access token in seconds.", examples=[900])

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIiwidHlwZSI6...",
                    "refresh": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIiwidHlwZSI6...",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )


class RefreshRequest(BaseModel):
    refresh: Line = Field(
        max_length=4096,
        description="A refresh token from login or the last refresh.",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."],
    )


class ChangePassword(BaseModel):
    old_password: Text = Field(
        max_length=PASSWORD_MAX_LENGTH,
        description="The current password.",
        examples=["Correct-Horse-42"],
    )
    new_password: Password


class PasswordResetRequest(BaseModel):
    email: EmailStr = Field(
        description="The account's email address; the answer is the same whether it exists or not.",
        examples=["alice@example.com"],
    )


class PasswordResetConfirm(BaseModel):
    new_password: Password


class Detail(BaseModel):
    detail: str = Field(examples=["Password changed."])


class Problem(BaseModel):
    """An RFC 9457 problem details body (`application/problem+json`)."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Conflict"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["A user with that username already exists."])
    code: str = Field(examples=["username_taken"])
    errors: list[dict[str, str]] | None = Field(
        default=None,
        description="With `validation_error`: one entry per invalid field, `{field, message}`.",
    )
