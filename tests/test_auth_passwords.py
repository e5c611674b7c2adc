"""Passwords: change, reset by emailed link, and what each revokes."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, update

from app.auth import reset
from app.auth.models import User
from app.core.security import verify_password
from app.notifications import service as notifications
from tests.factories import TEST_PASSWORD, token_for
from tests.factories_auth import (
    STRONG_PASSWORD,
    assert_no_secrets,
    bearer,
    load_user,
    login,
    refresh_rows,
)

NEW_PASSWORD = "Brand-New-Secret-58"


# --- change-password --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/change-password/", "/api/auth/change-password"])
async def test_change_password_revokes_refresh_and_older_access_tokens(
    client, db, attendee, path
) -> None:
    tokens = await login(client, attendee.username)
    other = await login(client, attendee.username)
    r = await client.post(
        path,
        headers=bearer(tokens["access"]),
        json={"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"detail"}
    assert_no_secrets(r)

    stored = await load_user(db, attendee.id)
    assert await verify_password(NEW_PASSWORD, stored.hashed_password)
    assert stored.password_changed_at > attendee.password_changed_at
    rows = await refresh_rows(db, attendee.id)
    assert len(rows) == 2 and all(row.revoked_at is not None for row in rows)

    # Tokens issued within the same second as the change, before it, are dead.
    for access in (tokens["access"], other["access"]):
        r = await client.get("/api/auth/profile/", headers=bearer(access))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert r.status_code == 401

    # A login right after the change works; the old password does not.
    fresh = await login(client, attendee.username, NEW_PASSWORD)
    r = await client.get("/api/auth/profile/", headers=bearer(fresh["access"]))
    assert r.status_code == 200
    r = await client.post(
        "/api/auth/login/", json={"username": attendee.username, "password": TEST_PASSWORD}
    )
    assert r.status_code == 401


async def test_change_password_ends_access_tokens_without_a_password_version(
    client, db, attendee
) -> None:
    # Password set two minutes ago; token issued a minute ago without a password version.
    async with db() as session:
        await session.execute(
            update(User)
            .where(User.id == attendee.id)
            .values(password_changed_at=func.now() - timedelta(minutes=2))
        )
        await session.commit()
    old = token_for(attendee, lifetime=timedelta(minutes=14))
    assert (await client.get("/api/auth/profile/", headers=bearer(old))).status_code == 200
    r = await client.post(
        "/api/auth/change-password/",
        headers=bearer(old),
        json={"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200
    r = await client.get("/api/auth/profile/", headers=bearer(old))
    assert r.status_code == 401


async def test_wrong_old_password_is_422_wrong_password(client, db, attendee) -> None:
    tokens = await login(client, attendee.username)
    r = await client.post(
        "/api/auth/change-password/",
        headers=bearer(tokens["access"]),
        json={"old_password": "Not-The-Password-1", "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "wrong_password"
    assert r.headers["content-type"] == "application/problem+json"
    assert (await load_user(db, attendee.id)).hashed_password == attendee.hashed_password
    assert all(row.revoked_at is None for row in await refresh_rows(db, attendee.id))


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        ("short1!", "too short"),
        ("12345678901", "entirely numeric"),
        ("iloveyou1", "too common"),
        ("attendee-name", "similar to the username"),
        ("Mail.Box.Person", "similar to the email"),
        ("mail.box.person@example.com", "similar to the email"),
    ],
)
async def test_new_password_follows_the_rules(
    client, db, create_user, new_password, message
) -> None:
    user = await create_user(username="attendee-name-long", email="mail.box.person@example.com")
    r = await client.post(
        "/api/auth/change-password/",
        headers=bearer(token_for(user)),
        json={"old_password": TEST_PASSWORD, "new_password": new_password},
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert any(
        e["field"] == "body.new_password" and message in e["message"] for e in body["errors"]
    ), body
    assert (await load_user(db, user.id)).hashed_password == user.hashed_password


async def test_change_password_needs_authentication(client) -> None:
    r = await client.post(
        "/api/auth/change-password/",
        json={"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 401 and r.json()["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


# --- password reset ---------------------------------------------------------------------


@pytest.fixture
def outbox(monkeypatch) -> list[dict[str, str]]:
    """The reset emails the service sends, instead of sending them."""
    sent: list[dict[str, str]] = []

    async def capture(settings: object, *, email: str, username: str, link: str, **_) -> None:
        sent.append({"email": email, "username": username, "link": link})

    monkeypatch.setattr(notifications, "send_password_reset", capture)
    return sent


def _path(link: str) -> str:
    match = re.search(r"(/api/auth/password-reset-confirm/[^/]+/[^/]+/)$", link)
    assert match, link
    return match.group(1)


async def _request_reset(client, email: str) -> None:
    r = await client.post("/api/auth/password-reset-request/", json={"email": email})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    "path", ["/api/auth/password-reset-request/", "/api/auth/password-reset-request"]
)
async def test_reset_request_answers_the_same_for_known_and_unknown_emails(
    client, create_user, outbox, path
) -> None:
    await create_user(email="known@example.com")
    await create_user(email="gone@example.com", is_active=False)
    known = await client.post(path, json={"email": "KNOWN@example.com"})
    unknown = await client.post(path, json={"email": "unknown@example.com"})
    inactive = await client.post(path, json={"email": "gone@example.com"})
    assert known.status_code == unknown.status_code == inactive.status_code == 202
    assert known.content == unknown.content == inactive.content
    assert set(known.json()) == {"detail"}
    assert [m["email"] for m in outbox] == ["known@example.com"]


async def test_reset_request_with_invalid_email_is_422(client) -> None:
    r = await client.post("/api/auth/password-reset-request/", json={"email": "nope"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.email"


async def test_reset_email_is_logged_with_the_link(app, client, create_user, caplog) -> None:
    user = await create_user(email="logme@example.com")
    with caplog.at_level(logging.INFO, logger="app.notifications"):
        await _request_reset(client, "logme@example.com")
        await app.state.outbox.run_until_idle()  # the outbox's dispatcher sends (logs) it
    [record] = [r for r in caplog.records if r.name == "app.notifications"]
    message = record.getMessage()
    assert "logme@example.com" in message and user.username in message
    uidb64 = reset.encode_uid(user.id)
    assert f"http://127.0.0.1:8000/api/auth/password-reset-confirm/{uidb64}/" in message


async def test_reset_link_uses_the_configured_url(app, client, create_user, outbox) -> None:
    user = await create_user(email="front@example.com")
    settings = app.state.settings
    app.state.settings = settings.model_copy(
        update={"password_reset_url": "https://shop.example/reset?u={uidb64}&t={token}"}
    )
    try:
        await _request_reset(client, "front@example.com")
    finally:
        app.state.settings = settings
    [mail] = outbox
    assert mail["link"].startswith(f"https://shop.example/reset?u={reset.encode_uid(user.id)}&t=")


async def test_reset_confirm_end_to_end(client, db, create_user, outbox) -> None:
    user = await create_user(username="frank", email="frank@example.com")
    tokens = await login(client, "frank")
    await _request_reset(client, "frank@example.com")
    [mail] = outbox
    assert mail["username"] == "frank"
    path = _path(mail["link"])
    assert path.split("/")[4] == reset.encode_uid(user.id)
    assert "=" not in path.split("/")[4]

    r = await client.post(path, json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"detail"}
    assert_no_secrets(r)

    assert await verify_password(NEW_PASSWORD, (await load_user(db, user.id)).hashed_password)
    assert all(row.revoked_at is not None for row in await refresh_rows(db, user.id))
    r = await client.get("/api/auth/profile/", headers=bearer(tokens["access"]))
    assert r.status_code == 401
    await login(client, "frank", NEW_PASSWORD)

    # Single use: the password it was issued for is gone.
    r = await client.post(path, json={"new_password": "Another-Fresh-Key-77"})
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_reset_link"
    assert r.headers["content-type"] == "application/problem+json"


async def test_reset_confirm_without_trailing_slash(client, create_user, outbox) -> None:
    await create_user(email="noslash@example.com")
    await _request_reset(client, "noslash@example.com")
    r = await client.post(_path(outbox[0]["link"]).rstrip("/"), json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200


async def test_expired_reset_link_is_422(client, create_user, outbox, monkeypatch) -> None:
    await create_user(email="late@example.com")
    await _request_reset(client, "late@example.com")
    issued = reset._now()
    monkeypatch.setattr(reset, "_now", lambda: issued + 60 * 60 + 1)
    r = await client.post(_path(outbox[0]["link"]), json={"new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "invalid_reset_link"


async def test_reset_link_still_works_just_before_expiry(
    client, create_user, outbox, monkeypatch
) -> None:
    await create_user(email="ontime@example.com")
    await _request_reset(client, "ontime@example.com")
    issued = reset._now()
    monkeypatch.setattr(reset, "_now", lambda: issued + 60 * 60 - 5)
    r = await client.post(_path(outbox[0]["link"]), json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200


async def test_reset_link_dies_when_the_password_changes(client, create_user, outbox) -> None:
    user = await create_user(email="changer@example.com")
    await _request_reset(client, "changer@example.com")
    r = await client.post(
        "/api/auth/change-password/",
        headers=bearer(token_for(user)),
        json={"old_password": TEST_PASSWORD, "new_password": STRONG_PASSWORD},
    )
    assert r.status_code == 200
    r = await client.post(_path(outbox[0]["link"]), json={"new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "invalid_reset_link"


async def test_reset_link_dies_when_the_account_is_deactivated(client, create_user, outbox) -> None:
    user = await create_user(email="leaver@example.com")
    await _request_reset(client, "leaver@example.com")
    r = await client.request(
        "DELETE",
        "/api/auth/deactivate-account/",
        headers=bearer(token_for(user)),
        json={"password": TEST_PASSWORD},
    )
    assert r.status_code == 204
    r = await client.post(_path(outbox[0]["link"]), json={"new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "invalid_reset_link"


async def test_reset_link_of_one_user_does_not_work_for_another(
    client, create_user, outbox
) -> None:
    await create_user(email="one@example.com")
    other = await create_user(email="two@example.com")
    await _request_reset(client, "one@example.com")
    token = _path(outbox[0]["link"]).split("/")[5]
    r = await client.post(
        f"/api/auth/password-reset-confirm/{reset.encode_uid(other.id)}/{token}/",
        json={"new_password": NEW_PASSWORD},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_reset_link"


@pytest.mark.parametrize(
    ("uidb64", "token"),
    [
        ("MQ", "abc-0123456789abcdef0123456789abcdef"),
        ("!!!", "abc-def"),
        ("bm90LWEtbnVtYmVy", "abc-def"),  # "not-a-number"
        ("OTk5OTk5", "abc-def"),  # unknown id 999999
        (reset.encode_uid(10**19 - 1), "abc-def"),  # beyond BIGINT
        (reset.encode_uid(0), "abc-def"),
        ("MQ", "no-dash-here-but-wrong"),
        ("MQ", "x" * 500),
    ],
)
async def test_bogus_reset_links_are_422_invalid_reset_link(
    client, create_user, uidb64, token
) -> None:
    await create_user()
    r = await client.post(
        f"/api/auth/password-reset-confirm/{uidb64}/{token}/", json={"new_password": NEW_PASSWORD}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_reset_link"


async def test_reset_confirm_checks_the_new_password(client, create_user, outbox) -> None:
    user = await create_user(email="rules@example.com")
    await _request_reset(client, "rules@example.com")
    path = _path(outbox[0]["link"])
    r = await client.post(path, json={"new_password": "123"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert {e["field"] for e in body["errors"]} == {"body.new_password"}
    # The link was not spent by the refused attempt.
    r = await client.post(path, json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200
    assert user.id
