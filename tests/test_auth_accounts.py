"""Accounts: registration, validation rules, uniqueness, profile, deactivation."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.auth import service
from app.auth.models import User
from tests.factories import TEST_PASSWORD, auth
from tests.factories_auth import (
    STRONG_PASSWORD,
    assert_no_secrets,
    bearer,
    load_user,
    login,
    refresh_rows,
)


def _body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "username": "alice",
        "email": "alice@example.com",
        "password": STRONG_PASSWORD,
        "role": "attendee",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("path", ["/api/auth/register/", "/api/auth/register"])
async def test_register_returns_201_user_with_and_without_slash(client, db, path) -> None:
    r = await client.post(path, json=_body(email="Alice@Example.COM", role="organizer"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "username", "email", "role", "is_active", "date_joined"}
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["role"] == "organizer"
    assert body["is_active"] is True
    assert body["date_joined"].endswith(("Z", "+00:00"))
    assert_no_secrets(r)
    stored = await load_user(db, body["id"])
    assert stored.email == "alice@example.com"
    assert stored.hashed_password.startswith("$argon2")


async def test_registered_user_can_log_in(client) -> None:
    r = await client.post("/api/auth/register/", json=_body())
    assert r.status_code == 201
    tokens = await login(client, "alice", STRONG_PASSWORD)
    assert tokens["token_type"] == "bearer"


async def test_role_defaults_to_attendee_and_unknown_role_is_422(client) -> None:
    body = _body()
    del body["role"]
    r = await client.post("/api/auth/register/", json=body)
    assert r.status_code == 201 and r.json()["role"] == "attendee"
    r = await client.post("/api/auth/register/", json=_body(username="bob", role="admin"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.role"


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (("Alice", "a@example.com"), ("aLICE", "b@example.com"), "username_taken"),
        (("alice", "Same@Example.com"), ("bob", "same@EXAMPLE.com"), "email_taken"),
    ],
)
async def test_duplicates_are_409_case_insensitively(client, create_user, first, second, code):
    await create_user(username=first[0], email=first[1])
    r = await client.post("/api/auth/register/", json=_body(username=second[0], email=second[1]))
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code


@pytest.mark.parametrize(
    ("username", "email", "code"),
    [("ALICE", "new@example.com", "username_taken"), ("bob", "ALICE@example.com", "email_taken")],
)
async def test_unique_indexes_decide_when_the_precheck_misses(
    client, create_user, monkeypatch, username, email, code
) -> None:
    """A concurrent registration can pass the check; the database's unique index answers."""
    await create_user(username="alice", email="alice@example.com")

    async def no_precheck(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(service, "_ensure_available", no_precheck)
    r = await client.post("/api/auth/register/", json=_body(username=username, email=email))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == code


async def test_concurrent_registrations_of_one_username_create_one_user(client, db) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/auth/register/", json=_body(username="Race", email=f"r{i}@example.com")
            )
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"username_taken"}
    async with db() as session:
        count = await session.scalar(
            select(func.count()).where(func.lower(User.username) == "race")
        )
    assert count == 1


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Sh0rt!", "too short"),
        ("83920174651", "entirely numeric"),
        ("password123", "too common"),
        ("Qwerty123", "too common"),
        ("alice-wonderland", "similar to the username"),
        ("ALICE.SMITH", "similar to the email"),
        ("alice.smith@example.com", "similar to the email"),
    ],
)
async def test_password_rules_are_422_at_body_password(client, db, password, message) -> None:
    body = _body(username="alice-wonderland", email="alice.smith@example.com", password=password)
    r = await client.post("/api/auth/register/", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "validation_error"
    assert r.headers["content-type"] == "application/problem+json"
    assert any(
        e["field"] == "body.password" and message in e["message"] for e in problem["errors"]
    ), problem
    async with db() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 0


async def test_every_broken_password_rule_is_reported(client) -> None:
    r = await client.post("/api/auth/register/", json=_body(password="1234567"))
    messages = [e["message"] for e in r.json()["errors"]]
    assert any("too short" in m for m in messages)
    assert any("entirely numeric" in m for m in messages)
    assert any("too common" in m for m in messages)


@pytest.mark.parametrize("username", ["ab", "x" * 151, "has space", "semi;colon", "slash/name", ""])
async def test_invalid_usernames_are_422(client, username) -> None:
    r = await client.post("/api/auth/register/", json=_body(username=username))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["body.username"]


@pytest.mark.parametrize("username", ["abc", "a.b@c+d-e_f", "Zoë", "x" * 150])
async def test_valid_usernames_are_accepted(client, username) -> None:
    r = await client.post("/api/auth/register/", json=_body(username=username))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com"])
async def test_invalid_email_is_422(client, email) -> None:
    r = await client.post("/api/auth/register/", json=_body(email=email))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.email"


async def test_body_that_is_not_json_is_422(client) -> None:
    r = await client.post(
        "/api/auth/register/", content=b"username=alice", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"


# --- profile ----------------------------------------------------------------------------

# PUT and PATCH of the profile are one operation: every test of it runs with both.
both_methods = pytest.mark.parametrize("method", ["PUT", "PATCH"])


async def change_profile(client, user, method: str, body: dict[str, str]) -> httpx.Response:
    return await client.request(method, "/api/auth/profile/", headers=auth(user), json=body)


@pytest.mark.parametrize("path", ["/api/auth/profile/", "/api/auth/profile"])
async def test_profile_returns_the_current_user(client, attendee, path) -> None:
    r = await client.get(path, headers=auth(attendee))
    assert r.status_code == 200
    assert r.json()["id"] == attendee.id
    assert r.json()["username"] == attendee.username
    assert_no_secrets(r)


async def test_profile_without_token_is_401_not_authenticated(client) -> None:
    r = await client.get("/api/auth/profile/")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == "not_authenticated"


@both_methods
async def test_profile_update_changes_username_and_lowercases_email(
    client, db, attendee, method
) -> None:
    change = {
        "username": "Renamed",
        "email": "New.Address@Example.COM",
        "role": "organizer",
        "current_password": TEST_PASSWORD,
    }
    r = await change_profile(client, attendee, method, change)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["username"] == "Renamed"
    assert body["email"] == "new.address@example.com"
    assert body["role"] == "attendee"  # read-only, ignored
    assert_no_secrets(r)
    stored = await load_user(db, attendee.id)
    assert (stored.username, stored.email, stored.role) == (
        "Renamed",
        "new.address@example.com",
        "attendee",
    )


async def test_profile_patch_keeps_fields_left_out(client, attendee) -> None:
    r = await client.patch("/api/auth/profile", headers=auth(attendee), json={"username": "solo"})
    assert r.status_code == 200
    assert r.json()["email"] == attendee.email
    r = await client.patch("/api/auth/profile", headers=auth(attendee), json={})
    assert r.status_code == 200 and r.json()["username"] == "solo"


async def test_profile_may_change_the_case_of_its_own_username(client, create_user) -> None:
    user = await create_user(username="casey")
    r = await client.patch("/api/auth/profile/", headers=auth(user), json={"username": "CASEY"})
    assert r.status_code == 200 and r.json()["username"] == "CASEY"


@pytest.mark.parametrize(
    ("change", "code"),
    [({"username": "TAKEN"}, "username_taken"), ({"email": "Taken@Example.com"}, "email_taken")],
)
async def test_profile_update_to_a_taken_name_is_409(client, create_user, change, code) -> None:
    await create_user(username="taken", email="taken@example.com")
    user = await create_user()
    change = {**change, "current_password": TEST_PASSWORD}
    r = await client.put("/api/auth/profile/", headers=auth(user), json=change)
    assert r.status_code == 409
    assert r.json()["code"] == code


async def test_profile_update_validates_fields(client, attendee) -> None:
    r = await client.patch("/api/auth/profile/", headers=auth(attendee), json={"email": "nope"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.email"


# --- deactivation -----------------------------------------------------------------------


async def test_deactivate_account_revokes_everything(client, db, create_user) -> None:
    user = await create_user()
    tokens = await login(client, user.username)
    r = await client.request(
        "DELETE",
        "/api/auth/deactivate-account/",
        headers=bearer(tokens["access"]),
        json={"password": TEST_PASSWORD},
    )
    assert r.status_code == 204
    assert r.content == b""

    assert (await load_user(db, user.id)).is_active is False
    assert all(row.revoked_at is not None for row in await refresh_rows(db, user.id))

    r = await client.get("/api/auth/profile/", headers=bearer(tokens["access"]))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert r.status_code == 401
    r = await client.post(
        "/api/auth/login/", json={"username": user.username, "password": TEST_PASSWORD}
    )
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"


async def test_deactivate_without_token_is_401(client) -> None:
    r = await client.delete("/api/auth/deactivate-account")
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"


async def test_no_auth_response_exposes_a_hash_or_password_field(
    client: httpx.AsyncClient, create_user, monkeypatch
) -> None:
    user = await create_user(username="sweep")
    responses = [
        await client.post("/api/auth/register/", json=_body()),
        await client.post("/api/auth/register/", json=_body()),
        await client.post("/api/auth/register/", json=_body(username="x", password="1")),
    ]
    tokens = await login(client, "sweep")
    headers = bearer(tokens["access"])
    responses += [
        await client.post("/api/auth/login/", json={"username": "sweep", "password": "wrong!!!"}),
        await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}),
        await client.get("/api/auth/profile/", headers=headers),
        await client.patch("/api/auth/profile/", headers=headers, json={"username": "sweep2"}),
        await client.put("/api/auth/profile/", headers=headers, json={"email": "s@example.com"}),
        await client.post(
            "/api/auth/change-password/",
            headers=headers,
            json={"old_password": "wrong-one", "new_password": STRONG_PASSWORD},
        ),
        await client.post("/api/auth/password-reset-request/", json={"email": "s@example.com"}),
        await client.post("/api/auth/password-reset-confirm/MQ/bad/", json={"new_password": "x"}),
        await client.post("/api/auth/logout/", json={"refresh": tokens["refresh"]}),
        await client.delete("/api/auth/deactivate-account/", headers=headers),
    ]
    assert user.id
    for response in responses:
        assert_no_secrets(response)


# --- re-authentication ------------------------------------------------------------------


async def test_changing_the_email_without_current_password_is_422(client, db, attendee) -> None:
    r = await client.patch(
        "/api/auth/profile/", headers=auth(attendee), json={"email": "thief@example.com"}
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert r.json()["errors"][0]["field"] == "body.current_password"
    assert (await load_user(db, attendee.id)).email == attendee.email


@both_methods
async def test_changing_the_email_with_a_wrong_password_is_wrong_password(
    client, db, attendee, method
) -> None:
    change = {"email": "thief@example.com", "current_password": "not-the-password"}
    r = await change_profile(client, attendee, method, change)
    assert r.status_code == 422 and r.json()["code"] == "wrong_password"
    assert (await load_user(db, attendee.id)).email == attendee.email


async def test_keeping_the_same_email_needs_no_password(client, attendee) -> None:
    r = await client.patch(
        "/api/auth/profile/",
        headers=auth(attendee),
        json={"email": attendee.email.upper(), "username": "samemail"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "samemail"


async def test_deactivation_needs_the_password(client, db, attendee) -> None:
    path = "/api/auth/deactivate-account/"
    r = await client.request("DELETE", path, headers=auth(attendee))
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await client.request(
        "DELETE", path, headers=auth(attendee), json={"password": "not-the-password"}
    )
    assert r.status_code == 422 and r.json()["code"] == "wrong_password"
    assert (await load_user(db, attendee.id)).is_active is True
