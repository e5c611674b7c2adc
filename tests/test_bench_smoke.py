"""The benchmark's machinery at a tiny size: pgbench, the service under load, the invariants."""

from __future__ import annotations

import asyncio
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
        tps = float(row.split("|")[2].replace(",", ""))
        assert tps > 0
        assert row.rstrip().endswith("| OK |")


@pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed")
def test_service_books_under_wrk_and_the_bench_counts_it(bench_server: str, tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    args = ["--skip-pgbench", "--workers", "1", "--duration", "1", "--clients", "2"]
    args += ["--attendees", "2", "--rows", "hot c=2", "--output", str(output)]

    assert bench.run(bench.parse_args(args)) == 0

    row = next(line for line in output.read_text().splitlines() if line.startswith("| hot c=2 |"))
    bookings = float(row.split("|")[3].split("(")[1].rstrip(") ").replace(",", ""))
    assert bookings > 0
    assert row.rstrip().endswith("| OK |")


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
