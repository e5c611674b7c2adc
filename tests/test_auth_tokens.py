"""Tokens: login, refresh rotation and reuse detection, logout, and rejected tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from jose import jwt
from sqlalchemy import update

from app.auth import service
from app.auth.models import RefreshToken, User
from app.core.security import create_token
from tests.factories import TEST_PASSWORD, TEST_SECRET_KEY, auth, token_for
from tests.factories_auth import assert_no_secrets, bearer, login, refresh_rows


def _claims(token: str) -> dict[str, object]:
    return jwt.get_unverified_claims(token)


# --- login ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/login/", "/api/auth/login"])
async def test_login_returns_a_token_pair(client, db, create_user, path) -> None:
    user = await create_user(username="Carol")
    r = await client.post(path, json={"username": "carol", "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access", "refresh", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    access, refresh = _claims(body["access"]), _claims(body["refresh"])
    assert access["type"] == "access" and access["sub"] == str(user.id)
    assert refresh["type"] == "refresh" and refresh["fam"]
    assert int(access["exp"]) - int(access["iat"]) == 15 * 60
    assert int(refresh["exp"]) - int(refresh["iat"]) == 7 * 24 * 3600
    [row] = await refresh_rows(db, user.id)
    assert str(row.jti) == refresh["jti"] and str(row.family_id) == refresh["fam"]
    assert row.used_at is None and row.revoked_at is None
    r = await client.get("/api/auth/profile/", headers=bearer(body["access"]))
    assert r.status_code == 200 and r.json()["id"] == user.id


async def test_login_by_email_in_any_case(client, create_user) -> None:
    user = await create_user(email="dora@example.com")
    tokens = await login(client, "DORA@Example.com")
    assert _claims(tokens["access"])["sub"] == str(user.id)


async def test_a_username_wins_over_an_equal_email_of_another_user(client, create_user) -> None:
    owner = await create_user(username="Grace@Example.com", email="grace.owner@example.com")
    await create_user(username="grace", email="grace@example.com")
    tokens = await login(client, "grace@example.com")
    assert _claims(tokens["access"])["sub"] == str(owner.id)


@pytest.mark.parametrize(
    ("username", "password"),
    [("erin", "Wrong-Password-1"), ("nobody", TEST_PASSWORD), ("inactive", TEST_PASSWORD)],
)
async def test_bad_credentials_and_inactive_accounts_look_alike(
    client, create_user, username, password
) -> None:
    await create_user(username="erin")
    await create_user(username="inactive", is_active=False)
    r = await client.post("/api/auth/login/", json={"username": username, "password": password})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["code"] == "invalid_credentials"
    assert body["detail"] == "No active account found with the given credentials."


async def test_login_racing_a_password_change_gets_no_tokens(
    client, db, attendee, monkeypatch
) -> None:
    checked = service.verify_password

    async def check_while_the_password_changes(password: str, hashed: str | None) -> bool:
        valid = await checked(password, hashed)
        async with db() as session:
            await session.execute(
                update(User).where(User.id == attendee.id).values(hashed_password="replaced")
            )
            await session.commit()
        return valid

    monkeypatch.setattr(service, "verify_password", check_while_the_password_changes)
    r = await client.post(
        "/api/auth/login/", json={"username": attendee.username, "password": TEST_PASSWORD}
    )
    assert r.status_code == 401
    assert await refresh_rows(db, attendee.id) == []


async def test_login_body_missing_fields_is_422(client) -> None:
    r = await client.post("/api/auth/login/", json={"username": "x"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.password"


# --- rejected access tokens -------------------------------------------------------------


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _token_with_alg_none(user_id: int) -> str:
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": str(user_id), "type": "access", "jti": "x", "iat": now, "exp": now + 600}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _forged(user_id: int) -> str:
    token, _ = create_token(
        user_id=user_id,
        token_type="access",
        key="another-secret-key-of-enough-length",
        lifetime=timedelta(minutes=5),
    )
    return token


def _refresh_token(user_id: int) -> str:
    token, _ = create_token(
        user_id=user_id,
        token_type="refresh",
        key=TEST_SECRET_KEY,
        lifetime=timedelta(days=1),
        extra={"fam": str(uuid.uuid4())},
    )
    return token


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda u: "Bearer not-a-jwt", id="malformed"),
        pytest.param(lambda u: "Bearer ", id="empty"),
        pytest.param(lambda u: "Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param(lambda u: f"Bearer {_token_with_alg_none(u.id)}", id="alg-none"),
        pytest.param(lambda u: f"Bearer {_forged(u.id)}", id="wrong-signature"),
        pytest.param(
            lambda u: f"Bearer {token_for(u, lifetime=timedelta(seconds=-5))}", id="expired"
        ),
        pytest.param(lambda u: f"Bearer {_refresh_token(u.id)}", id="refresh-as-access"),
        pytest.param(lambda u: f"Bearer {token_for(_Ghost())}", id="unknown-user"),
    ],
)
async def test_bad_access_tokens_are_401_invalid_token(client, attendee, make_header) -> None:
    r = await client.get("/api/auth/profile/", headers={"Authorization": make_header(attendee)})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_token"


class _Ghost:
    id = 987654


async def test_token_of_a_deactivated_user_is_401(client, create_user) -> None:
    user = await create_user(is_active=False)
    r = await client.get("/api/auth/profile/", headers=auth(user))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert r.headers["www-authenticate"] == "Bearer"


# --- refresh ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/token/refresh/", "/api/auth/token/refresh"])
async def test_refresh_rotates_once(client, db, attendee, path) -> None:
    first = await login(client, attendee.username)
    r = await client.post(path, json={"refresh": first["refresh"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert set(second) == {"access", "refresh", "token_type", "expires_in"}
    assert second["refresh"] != first["refresh"]
    assert _claims(second["refresh"])["fam"] == _claims(first["refresh"])["fam"]
    r = await client.get("/api/auth/profile/", headers=bearer(second["access"]))
    assert r.status_code == 200

    old, new = await refresh_rows(db, attendee.id)
    assert old.used_at is not None and old.revoked_at is None
    assert new.used_at is None and new.family_id == old.family_id

    third = await client.post(path, json={"refresh": second["refresh"]})
    assert third.status_code == 200


async def test_reusing_a_refresh_token_revokes_its_family(client, db, attendee) -> None:
    first = await login(client, attendee.username)
    other_session = await login(client, attendee.username)
    second = await client.post("/api/auth/token/refresh/", json={"refresh": first["refresh"]})
    assert second.status_code == 200

    r = await client.post("/api/auth/token/refresh/", json={"refresh": first["refresh"]})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    assert r.headers["www-authenticate"] == "Bearer"

    # The newest token of the family is dead too; another login's family is not.
    r = await client.post("/api/auth/token/refresh/", json={"refresh": second.json()["refresh"]})
    assert r.status_code == 401
    r = await client.post("/api/auth/token/refresh/", json={"refresh": other_session["refresh"]})
    assert r.status_code == 200

    family = _claims(first["refresh"])["fam"]
    rows = [row for row in await refresh_rows(db, attendee.id) if str(row.family_id) == family]
    assert len(rows) == 2 and all(row.revoked_at is not None for row in rows)


async def test_concurrent_refreshes_with_one_token_succeed_at_most_once(client, attendee) -> None:
    tokens = await login(client, attendee.username)
    responses = await asyncio.gather(
        *(
            client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
            for _ in range(5)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 401, 401, 401, 401]


async def test_access_token_is_refused_as_refresh_token(client, attendee) -> None:
    tokens = await login(client, attendee.username)
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["access"]})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_expired_refresh_token_is_401(client, db, attendee) -> None:
    tokens = await login(client, attendee.username)
    async with db() as session:
        await session.execute(
            update(RefreshToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        pytest.param("unknown", id="unknown-jti"),
        pytest.param("forged", id="wrong-signature"),
    ],
)
async def test_invalid_refresh_tokens_are_401(client, attendee, token) -> None:
    if token == "unknown":
        token = _refresh_token(attendee.id)
    elif token == "forged":
        token, _ = create_token(
            user_id=attendee.id,
            token_type="refresh",
            key="another-secret-key-of-enough-length",
            lifetime=timedelta(days=1),
            extra={"fam": str(uuid.uuid4())},
        )
    r = await client.post("/api/auth/token/refresh/", json={"refresh": token})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_refresh_without_body_is_422(client) -> None:
    r = await client.post("/api/auth/token/refresh/", json={})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.refresh"


# --- logout -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/logout/", "/api/auth/logout"])
async def test_logout_revokes_the_family(client, db, attendee, path) -> None:
    first = await login(client, attendee.username)
    rotated = (
        await client.post("/api/auth/token/refresh/", json={"refresh": first["refresh"]})
    ).json()
    kept = await login(client, attendee.username)

    r = await client.post(path, json={"refresh": rotated["refresh"]})
    assert r.status_code == 204 and r.content == b""
    assert_no_secrets(r)

    r = await client.post("/api/auth/token/refresh/", json={"refresh": rotated["refresh"]})
    assert r.status_code == 401
    family = _claims(first["refresh"])["fam"]
    for row in await refresh_rows(db, attendee.id):
        assert (row.revoked_at is not None) == (str(row.family_id) == family)
    r = await client.post("/api/auth/token/refresh/", json={"refresh": kept["refresh"]})
    assert r.status_code == 200

    # Logging out again is harmless.
    r = await client.post(path, json={"refresh": rotated["refresh"]})
    assert r.status_code == 204


async def test_logout_with_an_invalid_token_is_401(client, attendee) -> None:
    r = await client.post("/api/auth/logout/", json={"refresh": "nonsense"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await client.post("/api/auth/logout/", json={"refresh": _refresh_token(attendee.id)})
    assert r.status_code == 401
