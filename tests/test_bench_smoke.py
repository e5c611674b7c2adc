"""The benchmark's machinery at a tiny size: pgbench, the service under load, the invariants."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bench import run as bench
from bench.pgbench import find_pgbench
from bench.service import find_wrk
from tests import pg


@pytest.fixture
def bench_server(monkeypatch: pytest.MonkeyPatch) -> str:
    """The bench makes its throwaway database on the test suite's server."""
    server = asyncio.run(pg.server_url())
    monkeypatch.setattr(bench, "server_url", lambda: (server, "test server"))
    return server


@pytest.mark.skipif(find_pgbench() is None, reason="pgbench is not installed")
def test_pgbench_runs_the_booking_transaction_and_keeps_the_invariants(
    bench_server: str, tmp_path: Path
) -> None:
    output = tmp_path / "latest.md"
    args = ["--skip-service", "--duration", "2", "--clients", "2", "--output", str(output)]

    assert bench.run(bench.parse_args(args)) == 0

    text = output.read_text()
    for label in ("hot c=2", "spread c=2"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        tps = float(row.split("|")[3].replace(",", ""))
        assert tps > 0
        assert row.rstrip().endswith("| OK |")


def _row(text: str, label: str, config: str) -> list[str]:
    prefix = f"| {label} | {config} |"
    return next(line for line in text.splitlines() if line.startswith(prefix)).split("|")


def _bookings(cells: list[str]) -> float:
    return float(cells[4].split("(")[1].rstrip(") ").replace(",", ""))


@pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed")
def test_service_books_under_wrk_and_the_bench_counts_it(bench_server: str, tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    args = ["--skip-pgbench", "--workers", "2", "--duration", "1", "--clients", "4"]
    args += ["--attendees", "2", "--rows", "hot c=4", "--configs", "stripped"]
    args += ["--output", str(output)]

    assert bench.run(bench.parse_args(args)) == 0

    text = output.read_text()
    row = _row(text, "hot c=4", "stripped")
    assert _bookings(row) > 0
    assert row[-2].strip() == "OK"
    # Each worker's share of the workers' CPU, busiest first, adds up to their total.
    line = next(line for line in text.splitlines() if line.startswith("- hot c=4, stripped: "))
    split = re.search(r"workers [\d.]+ ms \((\d+) % = (\d+) \+ (\d+) %\)", line)
    assert split is not None, line
    total, busiest, other = map(int, split.groups())
    assert busiest >= other and abs(busiest + other - total) <= 1


@pytest.mark.skipif(find_pgbench() is None, reason="pgbench is not installed")
@pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed")
def test_hold_then_checkout_rows_against_pgbench_running_the_same_statements(
    bench_server: str, tmp_path: Path
) -> None:
    output = tmp_path / "latest.md"
    args = ["--workers", "1", "--duration", "2", "--clients", "2", "--attendees", "2"]
    args += ["--rows", "hold->checkout hot c=2;hold->checkout spread c=2"]
    args += ["--configs", "stripped", "--output", str(output)]

    assert bench.run(bench.parse_args(args)) == 0

    text = output.read_text()
    for shape in ("hot", "spread"):
        label = f"hold→checkout {shape} c=2"
        row = _row(text, label, "stripped")
        assert float(row[3].replace(",", "")) > 0  # pgbench: a hold and its checkout
        assert _bookings(row) > 0
        assert "none" in row[8]  # every hold and checkout answered 2xx
        assert row[-2].strip() == "OK"
        holds = _row(text.split("## Hold → checkout")[1], label, "stripped")
        held, checked_out, booked = (float(holds[i].replace(",", "")) for i in (3, 4, 5))
        assert held > 0 and checked_out > 0 and booked > 0
    assert not any(line.startswith("| hot c=2 |") for line in text.splitlines())


@pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed")
def test_shipped_configuration_runs_the_dockerfiles_command_beside_redis_and_the_job_worker(
    bench_server: str, redis_server, tmp_path: Path
) -> None:
    from bench.service import read_dockerfile

    output = tmp_path / "latest.md"
    args = ["--skip-pgbench", "--workers", "1", "--duration", "1", "--clients", "2"]
    args += ["--attendees", "2", "--rows", "hot c=2;events list c=2;trivial c=2"]
    args += ["--configs", "shipped", "--redis-url", f"{redis_server.url}/14"]
    args += ["--output", str(output)]

    assert bench.run(bench.parse_args(args)) == 0

    text = output.read_text()
    flags = read_dockerfile().uvicorn_flags
    assert "--no-server-header" in flags and "--loop" in flags
    shipped = next(line for line in text.splitlines() if line.startswith("- **shipped**"))
    assert f"--workers 1 {' '.join(flags)}`" in shipped
    assert "--no-access-log" not in shipped
    assert "LOG_FORMAT=json" in shipped and "RATE_LIMIT_ENABLED=true" in shipped
    assert f"REDIS_URL={redis_server.url}/14" in shipped
    assert "PROMETHEUS_MULTIPROC_DIR" in shipped and "job worker" in shipped
    assert "- versions: uvicorn " in text
    row = _row(text, "hot c=2", "shipped")
    assert _bookings(row) > 0
    assert row[-2].strip() == "OK"
    assert "none" in row[8]  # no error status, 429 included
    listed = _row(text, "events list c=2", "shipped")
    assert float(listed[4].replace(",", "")) > 0
    time_lines = [line for line in text.splitlines() if line.startswith("- hot c=2, shipped: ")]
    assert len(time_lines) == 1
    for party in ("workers", "job worker", "PostgreSQL", "generator"):
        assert f"{party} " in time_lines[0]


def test_invariant_check_reports_a_counter_out_of_step(bench_server: str) -> None:
    name, url = bench.create_database(bench_server)
    try:
        seeded = bench.seed(url, attendees=1, spread_events=2)
        assert bench.check_invariants(url) == []
        _, ticket_type = seeded.hot[0]
        corrupt = f"UPDATE ticket_types SET quantity_sold = 1 WHERE id = {ticket_type}"
        asyncio.run(bench._query(url, corrupt))

        problems = bench.check_invariants(url)

        assert any(p.startswith(f"ticket type {ticket_type}: quantity_sold 1") for p in problems)
        assert any("!= 1 sold over its ticket types" in p for p in problems)
    finally:
        bench.drop_database(bench_server, name)


def test_profile_prints_cpu_and_shares_per_endpoint(bench_server: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": bench_server}
    done = subprocess.run(
        [sys.executable, "-m", "bench.profile", "--requests", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("POST /api/bookings/", "GET /api/events/", "GET /health/live"):
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"{label}: "))
        assert float(line.split(": ")[1].split(" ms")[0]) > 0
    assert "fastapi" in done.stdout and "%" in done.stdout


def test_pgbench_script_is_the_services_booking_statements() -> None:
    """bench/sql/booking.sql is generated from the statements the service runs: a change
    to them without `python -m bench.pgbench_script` fails here."""
    from bench.pgbench_script import HOLD_SCRIPT, SCRIPT, render, render_hold

    assert SCRIPT.read_text() == render()
    assert HOLD_SCRIPT.read_text() == render_hold()
