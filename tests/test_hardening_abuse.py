"""Abuse costs the attacker more than the service: body size, proxies, login bursts,
argon2 slots, re-authentication limits, token lifetimes, metrics and headers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import text

from app.auth.service import purge_expired_refresh_tokens
from app.core import security
from app.core.config import Settings
from tests.factories import ROOT, TEST_PASSWORD, TEST_SECRET_KEY, asgi_client, auth, started_app


async def running_client(settings: Settings, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        started_app(settings.model_copy(update=overrides)) as app,
        asgi_client(app, raise_app_exceptions=False) as c,
    ):
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def small_body_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in running_client(settings, max_body_bytes=2048):
        yield c


def _assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


# --- body size ----------------------------------------------------------------------------


async def test_body_over_max_body_bytes_is_413_before_reading(small_body_client) -> None:
    body = b'{"username": "' + b"a" * 4000 + b'", "password": "x"}'
    r = await small_body_client.post(
        "/api/auth/login/", content=body, headers={"Content-Type": "application/json"}
    )
    _assert_problem(r, 413, "payload_too_large")
    assert "2048" in r.json()["detail"]


async def test_chunked_body_over_the_limit_is_413_without_reading_it_all(
    small_body_client,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"username": "'
        for _ in range(1000):  # 1 MB if it were read whole
            sent += 1
            yield b"a" * 1000

    r = await small_body_client.post(
        "/api/auth/login/", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    _assert_problem(r, 413, "payload_too_large")
    assert sent < 10, f"{sent} chunks were read"


async def test_body_under_the_limit_is_served(small_body_client) -> None:
    r = await small_body_client.post("/api/auth/login/", json={"username": "a", "password": "b"})
    assert r.status_code == 401


# --- trusted proxies ----------------------------------------------------------------------


async def _failed_logins(client: httpx.AsyncClient, forwarded: list[str]) -> list[int]:
    statuses = []
    for n, address in enumerate(forwarded):
        r = await client.post(
            "/api/auth/login/",
            json={"username": f"nobody{n}", "password": "wrong-password"},
            headers={"X-Forwarded-For": address},
        )
        statuses.append(r.status_code)
    return statuses


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings) -> None:
    async for c in running_client(
        settings, rate_limit_enabled=True, rate_limit_login_ip="2/minute"
    ):
        statuses = await _failed_logins(c, ["1.1.1.1", "2.2.2.2", "3.3.3.3"])
        assert statuses == [401, 401, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(settings) -> None:
    async for c in running_client(
        settings,
        rate_limit_enabled=True,
        rate_limit_login_ip="2/minute",
        trusted_proxies=Settings(
            _env_file=None, trusted_proxies="127.0.0.0/8, 10.0.0.0/8"
        ).trusted_proxies,  # type: ignore[call-arg]
    ):
        # The test client's peer is 127.0.0.1: each forwarded address is its own client.
        assert await _failed_logins(c, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]) == [401] * 3
        # Entries a client wrote itself (left of the last untrusted hop) prove nothing.
        chain = ["9.9.9.1, 4.4.4.4, 10.0.0.7", "9.9.9.2, 4.4.4.4", "4.4.4.4, 10.1.1.1"]
        assert await _failed_logins(c, chain) == [401, 401, 429]


def test_container_does_not_trust_every_proxy() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--forwarded-allow-ips" not in dockerfile
    assert "--no-proxy-headers" in dockerfile


# --- login bursts and argon2 slots -----------------------------------------------------------


async def test_concurrent_wrong_logins_from_one_address_get_only_the_allowed_hashes(
    settings, create_user, monkeypatch
) -> None:
    user = await create_user(username="burst")
    checks = 0
    real_verify = security.pwd_context.verify

    def counting_verify(*args: Any) -> bool:
        nonlocal checks
        checks += 1
        return real_verify(*args)

    monkeypatch.setattr(security.pwd_context, "verify", counting_verify)
    async for c in running_client(
        settings,
        rate_limit_enabled=True,
        rate_limit_login_ip="5/minute",
        rate_limit_login="1000/minute",
    ):
        wrong = {"username": user.username, "password": "not-the-password"}
        responses = await asyncio.gather(
            *(c.post("/api/auth/login/", json=wrong) for _ in range(50))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(401) == 5 and statuses.count(429) == 45, statuses
    assert checks == 5


async def test_argon2_runs_one_per_slot_and_waiters_past_the_wait_get_busy(
    client, create_user, monkeypatch
) -> None:
    user = await create_user(username="slots")
    monkeypatch.setattr(security, "HASH_SLOTS", 1)
    monkeypatch.setattr(security, "HASH_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(security, "_hash_slots", type(security._hash_slots)())
    running = peak = 0
    lock = threading.Lock()
    real_verify = security.pwd_context.verify

    def slow_verify(*args: Any) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.15)
        try:
            return real_verify(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(security.pwd_context, "verify", slow_verify)
    body = {"username": user.username, "password": TEST_PASSWORD}
    responses = await asyncio.gather(
        *(client.post("/api/auth/login/", json=body) for _ in range(8))
    )
    statuses = [r.status_code for r in responses]
    assert peak == 1
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert set(statuses) <= {200, 503}
    busy = next(r for r in responses if r.status_code == 503)
    _assert_problem(busy, 503, "busy")
    assert busy.headers["retry-after"]


def test_argon2_parameters_follow_owasp() -> None:
    hashed = security.pwd_context.hash("Correct-Horse-42")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


# --- re-authentication limits and token lifetimes -------------------------------------------


async def test_change_password_attempts_are_limited_per_user(settings, create_user) -> None:
    user = await create_user()
    body = {"old_password": "not-the-password", "new_password": "Brand-new-pass-71"}
    async for c in running_client(
        settings, rate_limit_enabled=True, rate_limit_change_password="2/minute"
    ):
        statuses = [
            (await c.post("/api/auth/change-password/", json=body, headers=auth(user))).status_code
            for _ in range(3)
        ]
        assert statuses == [422, 422, 429]
        other = await create_user()
        r = await c.post("/api/auth/change-password/", json=body, headers=auth(other))
        assert r.status_code == 422


async def _login(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    r = await client.post(
        "/api/auth/login/", json={"username": username, "password": TEST_PASSWORD}
    )
    assert r.status_code == 200, r.text
    return r.json()


def _started_days_ago(refresh: str, days: float) -> str:
    claims = jwt.get_unverified_claims(refresh)
    claims["fst"] = int((datetime.now(UTC) - timedelta(days=days)).timestamp())
    return jwt.encode(claims, TEST_SECRET_KEY, algorithm="HS256")


async def test_refresh_family_dies_refresh_family_max_days_after_its_login(
    client, create_user
) -> None:
    user = await create_user()
    tokens = await _login(client, user.username)
    assert "fst" in jwt.get_unverified_claims(tokens["refresh"])
    r = await client.post(
        "/api/auth/token/refresh/", json={"refresh": _started_days_ago(tokens["refresh"], 31)}
    )
    _assert_problem(r, 401, "invalid_token")


async def test_rotation_never_carries_a_family_past_its_maximum(client, create_user) -> None:
    user = await create_user()
    tokens = await _login(client, user.username)
    started = _started_days_ago(tokens["refresh"], 29.5)
    r = await client.post("/api/auth/token/refresh/", json={"refresh": started})
    assert r.status_code == 200, r.text
    claims = jwt.get_unverified_claims(r.json()["refresh"])
    assert claims["fst"] == jwt.get_unverified_claims(started)["fst"]
    assert claims["exp"] <= claims["fst"] + 30 * 86400 + 1
    assert claims["exp"] - time.time() < 86400  # not the usual 7 days


async def test_maintenance_purges_expired_refresh_tokens_and_keeps_the_rest(
    client, db, create_user
) -> None:
    user = await create_user()
    tokens = await _login(client, user.username)
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert r.status_code == 200
    async with db() as s:
        # One more token, expired yesterday.
        await s.execute(
            text(
                "INSERT INTO refresh_tokens (jti, user_id, family_id, expires_at) "
                "VALUES (gen_random_uuid(), :u, gen_random_uuid(), now() - interval '1 day')"
            ),
            {"u": user.id},
        )
        await s.commit()
        assert await s.scalar(text("SELECT count(*) FROM refresh_tokens")) == 3
        removed = await purge_expired_refresh_tokens(s)
        await s.commit()
        assert removed == 1
        # The used one stays until it expires: presenting it again still revokes the family.
        assert await s.scalar(text("SELECT count(*) FROM refresh_tokens")) == 2
    r = await client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert r.status_code == 401


# --- metrics, headers, docs ------------------------------------------------------------------


async def test_metrics_needs_the_metrics_token_when_set(settings) -> None:
    token = "metrics-token-0123456789"
    async for c in running_client(settings, metrics_token=token):
        r = await c.get("/metrics")
        _assert_problem(r, 401, "not_authenticated")
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 401
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "http_requests_total" in r.text


def test_compose_sets_a_metrics_token_and_requires_the_secret_key() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "SECRET_KEY: ${SECRET_KEY:?" in compose
    assert "METRICS_TOKEN: ${METRICS_TOKEN:?" in compose


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/events/"),
        ("GET", "/nowhere"),
        ("GET", "/api/events/?page=0"),
        ("GET", "/metrics"),
    ],
)
async def test_every_response_carries_nosniff(client, method, path) -> None:
    r = await client.request(method, path)
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_token_responses_are_not_stored(client, create_user) -> None:
    user = await create_user()
    r = await client.post(
        "/api/auth/login/", json={"username": user.username, "password": TEST_PASSWORD}
    )
    assert r.headers["cache-control"] == "no-store"
    r = await client.post("/api/auth/token/refresh/", json={"refresh": r.json()["refresh"]})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"


# --- the generated secret key ------------------------------------------------------------------

_READ_KEY = (
    "import sys, pathlib; from app.core.config import _generated_secret_key as g; "
    "print(g(pathlib.Path(sys.argv[1])))"
)


def test_workers_starting_together_share_one_generated_key(tmp_path: Path) -> None:
    for round_ in range(3):
        directory = tmp_path / f"data{round_}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _READ_KEY, str(directory)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(6)
        ]
        keys = {p.communicate(timeout=60)[0].strip() for p in processes}
        assert len(keys) == 1, keys
        (key,) = keys
        assert len(key) >= 32
        assert (directory / "secret_key").read_text().strip() == key
        assert (directory / "secret_key").stat().st_mode & 0o777 == 0o600
        assert [p.name for p in directory.iterdir()] == ["secret_key"]  # no temporary left


# --- the password rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "email", "password", "similar_to"),
    [
        ("alice", "a@example.com", "alice-in-wonderland-2024", "username"),
        ("alice1", "a@example.com", "Alice1234", "username"),
        ("zed", "smith.johnson@example.com", "Smith-Johnson!", "email"),
    ],
)
async def test_password_similar_to_username_or_email_is_422(
    client, username, email, password, similar_to
) -> None:
    r = await client.post(
        "/api/auth/register/", json={"username": username, "email": email, "password": password}
    )
    _assert_problem(r, 422, "validation_error")
    assert any(
        e["field"] == "body.password" and f"similar to the {similar_to}" in e["message"]
        for e in r.json()["errors"]
    ), r.json()


async def test_unrelated_password_is_accepted(client) -> None:
    body = {"username": "olga", "email": "olga@example.com", "password": "Stage-lights-77"}
    r = await client.post("/api/auth/register/", json=body)
    assert r.status_code == 201, r.text
