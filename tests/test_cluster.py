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
    storm_client,
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


async def _users(db, role: str, n: int, prefix: str = ""):
    from app.auth.models import User

    users = [
        User(
            username=f"{prefix}{role}{i}",
            email=f"{prefix}{role}{i}@example.com",
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


async def test_cluster_opposite_orders_and_double_cancels_across_both_instances(
    cluster, primary
) -> None:
    """Through HAProxy (both instances, round robin) and PgBouncer: bookings naming two
    types in opposite orders never deadlock and fill the shared capacity exactly; two
    concurrent cancels of each booking release its tickets once."""
    [organizer] = await _users(primary, "organizer", 1, prefix="race")
    attendees = await _users(primary, "attendee", 12, prefix="race")
    event = await make_event(primary, organizer, name="Race night", total_capacity=30)
    first = await make_ticket_type(primary, event, quantity_available=20)
    second = await make_ticket_type(primary, event, quantity_available=20, name="Second")
    async with storm_client(cluster["api"], timeout=30) as http:

        async def book(i: int) -> tuple[int, httpx.Response]:
            items = [(first.id, 1), (second.id, 1)]
            if i % 2:
                items.reverse()
            payload = {
                "event_id": event.id,
                "items": [{"ticket_type_id": t, "quantity": q} for t, q in items],
            }
            owner = i % len(attendees)
            return owner, await http.post(
                "/api/bookings/", json=payload, headers=auth(attendees[owner])
            )

        booked = await asyncio.gather(*(book(i) for i in range(60)))
        codes = Counter(r.status_code for _, r in booked)
        assert codes == {201: 15, 409: 45}, codes
        assert {r.json()["code"] for _, r in booked if r.status_code == 409} <= {
            "capacity_exceeded",
            "sold_out",
        }
        await check_invariants(primary, {first.id: 20, second.id: 20})

        confirmed = [
            (owner, r.json()["booking_reference"]) for owner, r in booked if r.status_code == 201
        ]
        cancels = await asyncio.gather(
            *(
                http.put(f"/api/bookings/{ref}/cancel/", headers=auth(attendees[owner]))
                for owner, ref in confirmed
                for _ in range(2)
            )
        )
        assert Counter(r.status_code for r in cancels) == {200: 15, 409: 15}
        assert {r.json()["code"] for r in cancels if r.status_code == 409} == {"already_cancelled"}
        await check_invariants(primary, {first.id: 20, second.id: 20})
        r = await http.get(f"/api/events/{event.id}/", headers=auth(organizer))
        assert r.json()["tickets_sold"] == 0
        # Both instances took part (HAProxy's own count of sessions per server).
        stats = httpx.get(cluster["haproxy_stats"] + ";csv").text.splitlines()
        header = stats[0].lstrip("# ").split(",")
        served = {
            row["svname"]: int(row["stot"])
            for row in (dict(zip(header, line.split(","), strict=False)) for line in stats[1:])
            if row.get("pxname") == "apps" and row.get("svname", "").startswith("app")
        }
        assert set(served) == {"app1", "app2"} and min(served.values()) > 0, served


async def test_cluster_holds_end_exactly_one_way_across_both_instances(cluster, primary) -> None:
    """Holds through HAProxy and PgBouncer: concurrent holds take the tickets exactly as
    bookings do; each hold raced by two checkouts and a delete ends exactly one way."""
    [organizer] = await _users(primary, "organizer", 1, prefix="hold")
    attendees = await _users(primary, "attendee", 30, prefix="hold")
    event = await make_event(primary, organizer, name="Hold night", total_capacity=20)
    seats = await make_ticket_type(primary, event, quantity_available=40)
    async with storm_client(cluster["api"], timeout=30) as http:
        payload = {"event_id": event.id, "items": [{"ticket_type_id": seats.id, "quantity": 1}]}
        held = await asyncio.gather(
            *(http.post("/api/holds/", json=payload, headers=auth(a)) for a in attendees)
        )
        assert Counter(r.status_code for r in held) == {201: 20, 409: 10}, [
            r.text for r in held if r.status_code not in (201, 409)
        ]
        await check_invariants(primary, {seats.id: 40})
        holders = [
            (a, r.json()["hold_reference"])
            for a, r in zip(attendees, held, strict=True)
            if r.status_code == 201
        ]

        async def race(user, ref: str) -> list[httpx.Response]:
            return await asyncio.gather(
                http.post(f"/api/holds/{ref}/checkout/", json={}, headers=auth(user)),
                http.post(f"/api/holds/{ref}/checkout/", json={}, headers=auth(user)),
                http.delete(f"/api/holds/{ref}/", headers=auth(user)),
            )

        outcomes = await asyncio.gather(*(race(user, ref) for user, ref in holders))
    converted = 0
    for first, second, delete in outcomes:
        checkouts = sorted([first.status_code, second.status_code])
        if delete.status_code == 204:  # released first: neither checkout went through
            assert checkouts == [409, 409], (first.text, second.text)
        else:  # checked out first: one booking, answered twice; the delete is refused
            assert delete.status_code == 409 and delete.json()["code"] == "hold_not_active"
            assert checkouts == [200, 201], (first.text, second.text)
            assert first.json()["booking_reference"] == second.json()["booking_reference"]
            converted += 1
    await check_invariants(primary, {seats.id: 40})
    from sqlalchemy import text

    async with primary() as s:
        row = (
            await s.execute(
                text(
                    "SELECT e.tickets_sold, e.tickets_held, (SELECT count(*) FROM bookings b "
                    "WHERE b.event_id = e.id AND b.status = 'confirmed') AS bookings "
                    "FROM events e WHERE e.id = :e"
                ),
                {"e": event.id},
            )
        ).one()
    assert (row.tickets_sold, row.tickets_held, row.bookings) == (converted, 0, converted)


async def test_cluster_books_through_haproxy_survives_an_instance_and_the_replica(
    cluster, primary
) -> None:
    from sqlalchemy import text

    [organizer] = await _users(primary, "organizer", 1)
    attendees = await _users(primary, "attendee", 20)
    event = await make_event(primary, organizer, name="Cluster night", total_capacity=60)
    standard = await make_ticket_type(primary, event, quantity_available=40)
    vip = await make_ticket_type(primary, event, quantity_available=40, name="VIP")
    api = cluster["api"]
    answered: Counter[int] = Counter()
    references: dict[str, str] = {}

    async with storm_client(api, timeout=30) as http:

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
        assert "Cluster night" in {e["name"] for e in listed.json()["results"]}

        # The replica stops: the catalogue answers from the primary.
        os.kill(cluster["replica_pid"], signal.SIGINT)
        deadline = time.monotonic() + 20
        while _alive(cluster["replica_pid"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seen: Counter[int | str] = Counter()
        for _ in range(20):
            try:
                r = await http.get(f"/api/events/{event.id}/")
            except httpx.TransportError as exc:  # a reused keep-alive connection closed
                seen[type(exc).__name__] += 1
                continue
            seen[r.status_code] += 1
        assert seen[200] >= 17 and set(seen) <= {200, 503, "RemoteProtocolError"}, seen
        assert _alive(cluster["instances"][1]["pid"]), "the surviving instance died"
        r = await http.get("/api/events/", params={"status": "sold_out"})
        assert r.status_code == 200
        names = {e["name"] for e in r.json()["results"]}
        assert {"Cluster night", "After the kill"} <= names, names

    # Ctrl-C / SIGTERM stops everything.
    proc = cluster["process"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(cluster["output"])
    for pid in (cluster["primary_pid"], cluster["instances"][1]["pid"]):
        assert not _alive(pid)
