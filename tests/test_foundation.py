"""The foundation: health, error format, trailing slashes, settings, migrations."""

from __future__ import annotations

import subprocess
import sys

import httpx
from sqlalchemy import text

from app.auth.models import User
from tests.factories import ROOT, asgi_client, auth, started_app


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await client.get("/health/ready/")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/nowhere/")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "not_found" and body["status"] == 404 and body["type"] == "about:blank"


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    r = await client.delete("/health/live/")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "method_not_allowed"


async def test_ready_is_503_when_database_is_down(settings) -> None:
    broken = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    )
    async with started_app(broken) as app, asgi_client(app, "http://t") as c:
        r = await c.get("/health/ready")
        listing = await c.get("/api/events/")
        booking = await c.post(
            "/api/bookings/",
            json={"event_id": 1, "items": [{"ticket_type_id": 1, "quantity": 1}]},
            headers=auth(User(id=1)),
        )
    for answer in (listing, booking):  # both hot paths run on the asyncpg connection
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "service_unavailable"
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "service_unavailable"


def test_invalid_setting_stops_with_its_name() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "LOCK_TIMEOUT_MS": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "LOCK_TIMEOUT_MS" in proc.stderr


async def test_database_refuses_duplicate_username_case_insensitively(db, create_user) -> None:
    await create_user(username="Alice")
    async with db() as session:
        try:
            await session.execute(
                text(
                    "INSERT INTO users (username, email, hashed_password, role) "
                    "VALUES ('ALICE', 'other@example.com', 'x', 'attendee')"
                )
            )
            await session.commit()
        except Exception as exc:  # IntegrityError
            assert "uq_users_username_lower" in str(exc)
        else:
            raise AssertionError("duplicate username was accepted")


def test_connection_limit_and_lock_timeout_are_busy_not_500() -> None:
    import asyncpg

    from app.core.db_errors import translate_db_error
    from app.core.errors import Busy, ServiceUnavailable

    assert isinstance(translate_db_error(asyncpg.TooManyConnectionsError("full")), Busy)
    assert isinstance(translate_db_error(asyncpg.LockNotAvailableError("lock")), Busy)
    assert isinstance(translate_db_error(asyncpg.DeadlockDetectedError("dl")), Busy)
    assert isinstance(translate_db_error(ConnectionRefusedError()), ServiceUnavailable)
    assert translate_db_error(ValueError("bug")) is None
