"""Helpers for the auth tests: log in through the API, inspect stored refresh tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import RefreshToken, User
from tests.factories import TEST_PASSWORD

STRONG_PASSWORD = "Sturdy-Lantern-93"


async def login(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> dict[str, Any]:
    r = await client.post("/api/auth/login/", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def refresh_rows(db: async_sessionmaker[AsyncSession], user_id: int) -> list[RefreshToken]:
    async with db() as session:
        rows = await session.scalars(
            select(RefreshToken)
            .where(RefreshToken.user_id == user_id)
            .order_by(RefreshToken.created_at)
        )
        return list(rows)


async def load_user(db: async_sessionmaker[AsyncSession], user_id: int) -> User:
    async with db() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value] + [k for v in value.values() for k in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def assert_no_secrets(response: httpx.Response) -> None:
    """No hash in the body, and no key named like a password (error `field`s are values)."""
    assert "$argon2" not in response.text
    if response.content:
        body = json.loads(response.content)
        assert not [k for k in _keys(body) if "password" in k.lower()], body
