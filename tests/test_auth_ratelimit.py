"""Rate limits on the auth endpoints: 429 `rate_limited` with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.core.config import Settings
from tests.factories import TEST_PASSWORD, asgi_client


@pytest.fixture
async def limited_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from app.main import create_app

    app = create_app(
        settings.model_copy(
            update={
                "rate_limit_enabled": True,
                "rate_limit_login": "2/minute",
                "rate_limit_login_ip": "4/minute",
                "rate_limit_register": "1/hour",
                "rate_limit_password_reset": "2/hour",
                "rate_limit_password_reset_ip": "2/hour",
            }
        )
    )
    async with app.router.lifespan_context(app), asgi_client(app) as c:
        yield c


def _assert_429(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


async def test_login_is_limited_per_account_and_per_address(limited_client, create_user) -> None:
    user = await create_user(username="limited")
    body = {"username": "limited", "password": TEST_PASSWORD}
    wrong = {"username": "LIMITED", "password": "Not-It-123"}
    for _ in range(2):
        assert (await limited_client.post("/api/auth/login/", json=wrong)).status_code == 401
    # The account's attempts are used up: even the right password waits for the window.
    _assert_429(await limited_client.post("/api/auth/login/", json=body))
    # Another account from the same address still gets through, until the address has
    # used up its failed logins (4 per minute here).
    other = {"username": user.email.replace("limited", "other"), "password": "x" * 8}
    assert (await limited_client.post("/api/auth/login/", json=other)).status_code == 401
    assert (await limited_client.post("/api/auth/login/", json=other)).status_code == 401
    fresh = {"username": "never-tried", "password": "x" * 8}
    _assert_429(await limited_client.post("/api/auth/login/", json=fresh))


async def test_successful_logins_reset_the_account_counter(limited_client, create_user) -> None:
    await create_user(username="regular")
    body = {"username": "regular", "password": TEST_PASSWORD}
    wrong = {"username": "regular", "password": "Not-It-123"}
    assert (await limited_client.post("/api/auth/login/", json=wrong)).status_code == 401
    for _ in range(6):  # well over the 2/minute limit, none refused
        assert (await limited_client.post("/api/auth/login/", json=body)).status_code == 200


async def test_register_is_limited_per_address(limited_client) -> None:
    def body(n: int) -> dict[str, str]:
        return {"username": f"new{n}", "email": f"new{n}@example.com", "password": "Sturdy-93-x"}

    assert (await limited_client.post("/api/auth/register/", json=body(1))).status_code == 201
    _assert_429(await limited_client.post("/api/auth/register/", json=body(2)))


async def test_password_reset_request_is_limited_per_email(limited_client) -> None:
    for _ in range(2):
        r = await limited_client.post(
            "/api/auth/password-reset-request/", json={"email": "someone@example.com"}
        )
        assert r.status_code == 202
    _assert_429(
        await limited_client.post(
            "/api/auth/password-reset-request/", json={"email": "SOMEONE@example.com"}
        )
    )
