"""make cluster end to end: HAProxy → two app instances → PgBouncer → primary, + a replica.

Starts `python -m deploy.cluster` (real PostgreSQL primary and streaming replica,
PgBouncer in transaction mode, Redis, two app instances with their job workers,
HAProxy), books through HAProxy from many concurrent clients while one instance is
killed, checks the invariants on the primary, reads the catalogue with the replica
up and then stopped, and stops the cluster. Skips when a tool is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from deploy.cluster import missing_tools
from tests.booking_setup import check_invariants
from tests.factories import (
    ROOT,
    TEST_PASSWORD_HASH,
    TEST_SECRET_KEY,
    auth,
    make_event,
    make_settings,
    make_ticket_type,
)
from tests.redis_server import free_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        bool(missing_tools()),
        reason="make cluster needs " + ", ".join(missing_tools()) + "; the cluster test skips",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    workdir = tempfile.mkdtemp(prefix="eb-cluster-")
    env = {**os.environ, "SECRET_KEY": TEST_SECRET_KEY, "RATE_LIMIT_ENABLED": "false"}
    for name in ("DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL", "DB_POOLER"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy.cluster",
            "--json",
            "--workers",
            "1",
            "--port",
            str(free_port()),
            "--workdir",
            workdir,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    info = None
    deadline = time.monotonic() + 120
    while info is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line.startswith("CLUSTER "):
            info = json.loads(line.removeprefix("CLUSTER "))
    if info is None:
        proc.kill()
        pytest.fail("the cluster did not start:\n" + "".join(output))
    info["process"] = proc
    info["output"] = output
    try:
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
async def primary(cluster):
    """Sessions on the primary itself, to set up data and check invariants."""
    from app.core.db import create_engine, make_sessionmaker

    url = cluster["primary"].replace("postgresql://", "postgresql+asyncpg://")
    engine = create_engine(make_settings(url), pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _users(db, role: str, n: int):
    from app.auth.models import User

    users = [
        User(
            username=f"{role}{i}",
            email=f"{role}{i}@example.com",
            hashed_password=TEST_PASSWORD_HASH,
            role=role,
        )
        for i in range(n)
    ]
    async with db() as s:
        s.add_all(users)
        await s.commit()
        for user in users:
            await s.refresh(user)
    return users


def _alive(pid: int) -> bool:
    """The process runs (a zombie its parent has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_cluster_books_through_haproxy_survives_an_instance_and_the_replica(
    cluster, primary
) -> None:
    from sqlalchemy import text

    [organizer] = await _users(primary, "organizer", 1)
    attendees = await _users(primary, "attendee", 20)
    event = await make_event(primary, organizer, name="Cluster night", total_capacity=60)
    standard = await make_ticket_type(primary, event, quantity_available=40)
    vip = await make_ticket_type(primary, event, quantity_available=40, name="VIP")
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    api = cluster["api"]
    answered: Counter[int] = Counter()
    references: dict[str, str] = {}

    async with httpx.AsyncClient(base_url=api, limits=limits, timeout=30) as http:

        async def book(i: int) -> None:
            """A client that retries with its Idempotency-Key, as a real one would."""
            headers = {**auth(attendees[i % 20]), "Idempotency-Key": f"storm-{i}"}
            tt = standard.id if i % 2 else vip.id
            payload = {"event_id": event.id, "items": [{"ticket_type_id": tt, "quantity": 1}]}
            for attempt in range(8):
                try:
                    r = await http.post("/api/bookings/", json=payload, headers=headers)
                except httpx.TransportError:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if r.status_code in (502, 503, 504):
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                answered[r.status_code] += 1
                if r.status_code == 201:
                    references[f"storm-{i}"] = r.json()["booking_reference"]
                return
            answered[0] += 1  # never answered

        async def kill_instance_mid_storm() -> None:
            await asyncio.sleep(0.3)
            os.killpg(cluster["instances"][0]["pid"], signal.SIGKILL)

        await asyncio.gather(kill_instance_mid_storm(), *(book(i) for i in range(240)))
        assert set(answered) <= {201, 409}, answered
        assert answered[201] == 60, answered

        # The invariants, on the primary: exactly the answered bookings, nothing oversold.
        await check_invariants(primary, {standard.id: 40, vip.id: 40})
        async with primary() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT b.booking_reference::text AS ref, k.key FROM bookings b "
                        "JOIN idempotency_keys k ON k.booking_id = b.id "
                        "WHERE b.event_id = :e AND b.status = 'confirmed'"
                    ),
                    {"e": event.id},
                )
            ).all()
            sold = await s.scalar(
                text("SELECT tickets_sold FROM events WHERE id = :e"), {"e": event.id}
            )
        assert sold == 60
        assert {r.key: r.ref for r in rows} == references

        # The killed instance is gone and HAProxy routes around it: a second storm, with
        # no client-side retry, is answered by the survivor alone.
        assert not _alive(cluster["instances"][0]["pid"])
        second = await make_event(primary, organizer, name="After the kill", total_capacity=10)
        seats = await make_ticket_type(primary, second, quantity_available=10)
        again = await asyncio.gather(
            *(
                http.post(
                    "/api/bookings/",
                    json={
                        "event_id": second.id,
                        "items": [{"ticket_type_id": seats.id, "quantity": 1}],
                    },
                    headers=auth(attendees[i]),
                )
                for i in range(20)
            )
        )
        assert sorted(r.status_code for r in again) == [201] * 10 + [409] * 10

        # The catalogue, anonymous: from the replica (it catches up within moments).
        deadline = time.monotonic() + 10
        while True:
            r = await http.get(f"/api/events/{event.id}/")
            if r.status_code == 200 and r.json()["tickets_sold"] == 60:
                break
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.2)
        assert r.json()["status"] == "sold_out"
        listed = await http.get("/api/events/", params={"status": "sold_out"})
        assert {e["name"] for e in listed.json()["results"]} <= {"Cluster night", "After the kill"}
        assert "Cluster night" in {e["name"] for e in listed.json()["results"]}

        # The replica stops: the catalogue answers from the primary.
        os.kill(cluster["replica_pid"], signal.SIGINT)
        deadline = time.monotonic() + 20
        while _alive(cluster["replica_pid"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seen: Counter[int] = Counter()
        for _ in range(20):
            r = await http.get(f"/api/events/{event.id}/")
            seen[r.status_code] += 1
        assert seen[200] >= 18 and set(seen) <= {200, 503}, seen
        r = await http.get("/api/events/", params={"status": "sold_out"})
        assert r.status_code == 200 and r.json()["count"] == 2

    # Ctrl-C / SIGTERM stops everything.
    proc = cluster["process"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(cluster["output"])
    for pid in (cluster["primary_pid"], cluster["instances"][1]["pid"]):
        assert not _alive(pid)
