"""`python -m app`: create-user, migrate, shell."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import httpx
import pytest

from tests import pg
from tests.factories import ROOT, TEST_SECRET_KEY, create_user_cli, run_cli, server_process
from tests.redis_server import free_port


async def test_create_user_then_log_in_with_that_password(
    client: httpx.AsyncClient, database_url: str
) -> None:
    password = "Staging-Boss-2027"
    result = create_user_cli(
        "Boss", "Boss@Example.com", role="organizer", password=password, database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert "created organizer 'Boss'" in result.stdout

    r = await client.post("/api/auth/login/", json={"username": "boss", "password": password})
    assert r.status_code == 200, r.text
    access = r.json()["access"]
    profile = await client.get("/api/auth/profile/", headers={"Authorization": f"Bearer {access}"})
    assert profile.status_code == 200
    assert profile.json()["role"] == "organizer"
    assert profile.json()["email"] == "boss@example.com"

    wrong = await client.post("/api/auth/login/", json={"username": "boss", "password": "nope!"})
    assert wrong.status_code == 401


async def test_create_user_takes_the_password_from_the_environment(
    client: httpx.AsyncClient, database_url: str
) -> None:
    result = create_user_cli(
        "visitor",
        "visitor@example.com",
        role="attendee",
        database_url=database_url,
        CREATE_USER_PASSWORD="Visiting-Hours-9",
    )
    assert result.returncode == 0, result.stderr
    r = await client.post(
        "/api/auth/login/", json={"username": "visitor", "password": "Visiting-Hours-9"}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--username", "x", "--email", "x@example.com"], "letters, digits"),
        (["--username", "good_name", "--email", "not-an-email"], "email"),
        (["--username", "good_name", "--email", "g@example.com", "--role", "admin"], "admin"),
    ],
)
def test_create_user_rejects_bad_input(args: list[str], message: str, database_url: str) -> None:
    result = run_cli("create-user", *args, "--password", "Long-Enough-1", database_url=database_url)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


async def test_create_user_refuses_a_taken_username(create_user, database_url: str) -> None:
    await create_user("attendee", username="taken")
    result = create_user_cli(
        "TAKEN", "other@example.com", password="Long-Enough-1", database_url=database_url
    )
    assert result.returncode != 0
    assert "username already exists" in result.stdout + result.stderr


async def test_migrate_brings_a_fresh_database_to_head() -> None:
    async with pg.throwaway_database(migrated=False) as url:
        result = run_cli("migrate", database_url=url)
        assert result.returncode == 0, result.stderr
        assert "database is at head" in result.stdout
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            version = await conn.fetchval("SELECT version_num FROM alembic_version")
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
        finally:
            await conn.close()
        assert version
        assert {"users", "events", "ticket_types", "bookings"} <= tables
        again = run_cli("migrate", database_url=url)
        assert again.returncode == 0, again.stderr


async def test_shell_runs_top_level_await(create_user, database_url: str) -> None:
    await create_user("organizer", username="in_shell")
    script = (
        "async with sessionmaker() as s:\n"
        "    names = (await s.scalars(select(User.username))).all()\n"
        "\n"
        "print('users:', names)\n"
        "print('limit:', settings.max_tickets_per_booking)\n"
    )
    result = run_cli("shell", database_url=database_url, input=script)
    assert result.returncode == 0, result.stderr
    assert "users: ['in_shell']" in result.stdout
    assert "limit: 10" in result.stdout


def test_serve_takes_workers_from_web_concurrency() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "--workers" in result.stdout
    assert "WEB_CONCURRENCY" in result.stdout


def test_serve_with_workers_on_the_embedded_database(tmp_path) -> None:
    """No DATABASE_URL and two workers: the parent starts and migrates the embedded server,
    the workers share it, and /metrics adds up the counters of both workers."""
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": TEST_SECRET_KEY,
        "LOG_LEVEL": "WARNING",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "app", "serve", "--workers", "2", "--port", str(port)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with server_process(argv, env, port, timeout=90, stop_timeout=20, **quiet) as base:
        with httpx.Client(base_url=base) as client:
            for _ in range(20):  # new connections: both workers get some
                assert httpx.get(f"{base}/api/events/", timeout=5).status_code == 200
            metrics = client.get("/metrics").text
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("http_requests_total{") and 'route="/api/events"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) == 20
