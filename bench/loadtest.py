"""Load-test a running event-booking-api: hammer POST /api/bookings/ and check the invariants.

    python -m bench.loadtest --base-url http://127.0.0.1:8000 --clients 64 --duration 20
    python -m bench.loadtest --flow hold ...   # hold, then check out: two requests per booking

It creates its own organizer, attendees, events and ticket types through the API,
runs C concurrent clients for T seconds against one hot event (or spread over
many events), prints bookings/s, latency percentiles and counts per status, then
checks through the API that nothing was oversold and the counters are exact.
Exit status 1 when an invariant is broken or a 5xx was seen. Run the server with
RATE_LIMIT_ENABLED=false, or the per-user booking limit will answer 429.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

PASSWORD = "Load-test-password-9"


@dataclass
class Plan:
    events: list[dict] = field(default_factory=list)  # {id, ticket_types: [{id, quantity}]}
    tokens: list[str] = field(default_factory=list)


@dataclass
class Result:
    statuses: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    booked: Counter = field(default_factory=Counter)  # tickets per ticket type id
    retries: Counter = field(default_factory=Counter)  # transport errors retried
    elapsed: float = 0.0
    holds: int = 0  # holds placed (flow "hold")
    hold_latencies: list[float] = field(default_factory=list)

    @property
    def created(self) -> int:
        return self.statuses.get(201, 0)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _check(r: httpx.Response, *expected: int) -> dict:
    if r.status_code not in expected:
        raise SystemExit(
            f"setup failed: {r.request.method} {r.request.url} -> {r.status_code} {r.text}"
        )
    return r.json() if r.content else {}


async def register_and_login(http: httpx.AsyncClient, role: str, tag: str) -> str:
    username = f"lt_{role}_{tag}"
    await _check(
        await http.post(
            "/api/auth/register/",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": PASSWORD,
                "role": role,
            },
        ),
        201,
    )
    tokens = await _check(
        await http.post("/api/auth/login/", json={"username": username, "password": PASSWORD}), 200
    )
    return tokens["access"]


async def set_up(http: httpx.AsyncClient, *, events: int, users: int, capacity: int) -> Plan:
    run = uuid.uuid4().hex[:8]
    plan = Plan()
    organizer = await register_and_login(http, "organizer", run)
    headers = {"Authorization": f"Bearer {organizer}"}
    start = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for n in range(events):
        event = await _check(
            await http.post(
                "/api/events/",
                json={
                    "name": f"Load test {run} #{n}",
                    "location": "Benchmark Hall",
                    "start_time": start,
                    "total_capacity": capacity,
                },
                headers=headers,
            ),
            201,
        )
        tt = await _check(
            await http.post(
                f"/api/events/{event['id']}/ticket-types/",
                json={"name": "Standard", "price": "10.00", "quantity_available": capacity},
                headers=headers,
            ),
            201,
        )
        plan.events.append(
            {"id": event["id"], "ticket_types": [{"id": tt["id"], "quantity": capacity}]}
        )
    plan.tokens = [await register_and_login(http, "attendee", f"{run}_{i}") for i in range(users)]
    return plan


async def _post(
    http: httpx.AsyncClient, result: Result, url: str, payload: dict, headers: dict
) -> httpx.Response | None:
    for _attempt in range(3):
        try:
            return await http.post(url, json=payload, headers=headers)
        except httpx.TransportError as exc:
            result.retries[type(exc).__name__] += 1
    result.statuses["error:transport"] += 1
    return None


async def hammer(
    http: httpx.AsyncClient, plan: Plan, *, clients: int, duration: float, flow: str = "book"
) -> Result:
    result = Result()
    deadline = time.perf_counter() + duration
    rng = random.Random(1)

    async def hold_then_checkout(n: int) -> None:
        """One attendee per client (one active hold per attendee and event)."""
        headers = {"Authorization": f"Bearer {plan.tokens[n % len(plan.tokens)]}"}
        while time.perf_counter() < deadline:
            event = plan.events[rng.randrange(len(plan.events))]
            tt = event["ticket_types"][0]
            payload = {
                "event_id": event["id"],
                "items": [{"ticket_type_id": tt["id"], "quantity": 1}],
            }
            headers["Idempotency-Key"] = uuid.uuid4().hex
            t0 = time.perf_counter()
            r = await _post(http, result, "/api/holds/", payload, headers)
            if r is None:
                continue
            result.hold_latencies.append(time.perf_counter() - t0)
            if r.status_code != 201:
                result.statuses[f"hold {r.status_code}"] += 1
                if r.headers.get("content-type", "").startswith("application/problem+json"):
                    result.codes[r.json().get("code", "?")] += 1
                continue
            result.holds += 1
            ref = r.json()["hold_reference"]
            t1 = time.perf_counter()
            r = await _post(http, result, f"/api/holds/{ref}/checkout/", {}, headers)
            if r is None:
                continue
            result.latencies.append(time.perf_counter() - t1)
            result.statuses[r.status_code] += 1
            if r.status_code == 201:
                result.booked[tt["id"]] += 1
            elif r.headers.get("content-type", "").startswith("application/problem+json"):
                result.codes[r.json().get("code", "?")] += 1

    async def client(n: int) -> None:
        if flow == "hold":
            await hold_then_checkout(n)
            return
        headers = {"Authorization": f"Bearer {plan.tokens[n % len(plan.tokens)]}"}
        while time.perf_counter() < deadline:
            event = plan.events[rng.randrange(len(plan.events))]
            tt = event["ticket_types"][0]
            payload = {
                "event_id": event["id"],
                "items": [{"ticket_type_id": tt["id"], "quantity": 1}],
            }
            # A unique Idempotency-Key per booking makes a retry after a dropped
            # connection safe: the server replays the booking instead of making another.
            headers["Idempotency-Key"] = uuid.uuid4().hex
            t0 = time.perf_counter()
            r = None
            for _attempt in range(3):
                try:
                    r = await http.post("/api/bookings/", json=payload, headers=headers)
                    break
                except httpx.TransportError as exc:
                    result.retries[type(exc).__name__] += 1
            if r is None:
                result.statuses["error:transport"] += 1
                continue
            result.latencies.append(time.perf_counter() - t0)
            result.statuses[r.status_code] += 1
            if r.status_code == 201:
                result.booked[tt["id"]] += 1
            elif r.headers.get("content-type", "").startswith("application/problem+json"):
                result.codes[r.json().get("code", "?")] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    result.elapsed = time.perf_counter() - t0
    return result


async def check_invariants(http: httpx.AsyncClient, plan: Plan, result: Result) -> list[str]:
    """Read every event back through the API and compare with what was booked."""
    problems = []
    for event in plan.events:
        r = await http.get(f"/api/events/{event['id']}/")
        detail = r.json()
        sold = detail["tickets_sold"]
        if sold > detail["total_capacity"]:
            problems.append(
                f"event {event['id']}: {sold} sold > capacity {detail['total_capacity']}"
            )
        by_id = {t["id"]: t for t in detail["ticket_types"]}
        type_sum = 0
        for tt in event["ticket_types"]:
            got = by_id[tt["id"]]
            type_sum += got["quantity_sold"]
            if got["quantity_available"] < 0:
                problems.append(f"ticket type {tt['id']}: negative quantity_available")
            total = got["quantity_available"] + got.get("quantity_held", 0) + got["quantity_sold"]
            if total != tt["quantity"]:
                problems.append(
                    f"ticket type {tt['id']}: available + held + sold != {tt['quantity']}"
                )
            if got["quantity_sold"] != result.booked[tt["id"]]:
                problems.append(
                    f"ticket type {tt['id']}: {got['quantity_sold']} sold, "
                    f"{result.booked[tt['id']]} bookings confirmed to clients"
                )
        if type_sum != sold:
            problems.append(
                f"event {event['id']}: tickets_sold {sold} != sum over types {type_sum}"
            )
    return problems


def report(result: Result, problems: list[str], *, label: str) -> dict:
    lat = [x * 1000 for x in result.latencies]
    summary = {
        "label": label,
        "bookings_per_s": round(result.created / result.elapsed, 1) if result.elapsed else 0.0,
        "holds_per_s": round(result.holds / result.elapsed, 1) if result.elapsed else 0.0,
        "hold_p50_ms": round(percentile([x * 1000 for x in result.hold_latencies], 50), 1),
        "hold_p99_ms": round(percentile([x * 1000 for x in result.hold_latencies], 99), 1),
        "requests_per_s": round(len(lat) / result.elapsed, 1) if result.elapsed else 0.0,
        "p50_ms": round(percentile(lat, 50), 1),
        "p95_ms": round(percentile(lat, 95), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items(), key=str)},
        "codes": dict(result.codes),
        "retried_transport_errors": dict(result.retries),
        "invariants_ok": not problems,
        "problems": problems,
    }
    return summary


async def run(args: argparse.Namespace) -> int:
    limits = httpx.Limits(
        max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8
    )
    async with httpx.AsyncClient(base_url=args.base_url, limits=limits, timeout=60) as http:
        events = 1 if args.shape == "hot" else args.events
        users = max(args.users, args.clients) if args.flow == "hold" else args.users
        plan = await set_up(http, events=events, users=users, capacity=args.capacity)
        result = await hammer(
            http, plan, clients=args.clients, duration=args.duration, flow=args.flow
        )
        problems = await check_invariants(http, plan, result)
    summary = report(result, problems, label=f"{args.flow} {args.shape} c={args.clients}")
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"shape={args.shape} clients={args.clients} duration={result.elapsed:.1f}s")
        print(f"  bookings/s {summary['bookings_per_s']}  (requests/s {summary['requests_per_s']})")
        if args.flow == "hold":
            print(
                f"  holds/s {summary['holds_per_s']}  hold latency ms p50 "
                f"{summary['hold_p50_ms']}  p99 {summary['hold_p99_ms']}  (checkouts below)"
            )
        p50, p95, p99 = summary["p50_ms"], summary["p95_ms"], summary["p99_ms"]
        print(f"  latency ms p50 {p50}  p95 {p95}  p99 {p99}")
        print(f"  statuses {summary['statuses']}  codes {summary['codes']}")
        if result.retries:
            print(f"  retried with the same Idempotency-Key: {dict(result.retries)}")
        print(
            "  invariants OK"
            if not problems
            else "  INVARIANTS BROKEN:\n    " + "\n    ".join(problems)
        )
    server_errors = sum(v for k, v in result.statuses.items() if str(k).startswith(("5", "error")))
    return 1 if problems or server_errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--shape", choices=["hot", "spread"], default="hot")
    parser.add_argument(
        "--flow",
        choices=["book", "hold"],
        default="book",
        help="book: POST /api/bookings/; hold: POST /api/holds/ then its checkout",
    )
    parser.add_argument("--events", type=int, default=50, help="events for --shape spread")
    parser.add_argument("--users", type=int, default=20, help="attendee accounts to create")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="tickets per event")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
