"""The bench's table: what the service reached against PostgreSQL's own limit, and the targets."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.pgbench import PgbenchResult
from bench.service import LoadResult

# Ratios at 64 clients, measured in the same run.
TARGET_HOT = 0.75
TARGET_SPREAD = 0.25
TARGET_LIST = 0.50
TARGET_P99_MS = 150.0


@dataclass
class Row:
    label: str
    kind: str  # "booking" or "get"
    clients: int
    load: LoadResult | None = None
    pgbench: PgbenchResult | None = None
    reference: LoadResult | None = None  # the trivial endpoint, for the events list
    problems: list[str] | None = None  # None: not checked

    @property
    def served(self) -> float:
        """Bookings/s for a booking row, 200 answers/s for a read."""
        if self.load is None:
            return 0.0
        return self.load.per_second("201" if self.kind == "booking" else "200")

    @property
    def ratio(self) -> float | None:
        if self.load is None:
            return None
        if self.pgbench is not None and self.pgbench.tps:
            return self.served / self.pgbench.tps
        if self.reference is not None and self.reference.per_second("200"):
            return self.served / self.reference.per_second("200")
        return None


@dataclass
class Context:
    started: datetime
    database: str
    postgres_version: str
    pgbench: str
    generator: str
    workers: int | None
    worker_choice: list[str] = field(default_factory=list)
    service_env: dict[str, str] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    duration: int = 0
    notes: list[str] = field(default_factory=list)


def _pool_defaults() -> str:
    from app.core.config import Settings

    fields = Settings.model_fields
    return (
        f"defaults, DB_POOL_SIZE={fields['db_pool_size'].default}, "
        f"DB_MAX_OVERFLOW={fields['db_max_overflow'].default} per worker"
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _statuses(load: LoadResult | None) -> str:
    if load is None:
        return "—"
    bad = {s: n for s, n in load.statuses.items() if not s.startswith("2")}
    bad.update(load.socket_errors)
    return ", ".join(f"{s}: {n}" for s, n in bad.items()) or "none"


def _invariants(row: Row) -> str:
    if row.problems is None:
        return "—"
    return "OK" if not row.problems else f"{len(row.problems)} BROKEN"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def table(rows: list[Row]) -> str:
    lines = [
        "| run | pgbench TPS | service req/s (bookings/s) | ratio | p50 ms | p99 ms "
        "| errors by status | generator CPU % | invariants |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        load = row.load
        service = "—"
        if load is not None:
            service = f"{load.per_second():,.0f}"
            if row.kind == "booking":
                service += f" ({row.served:,.0f})"
        ratio = row.ratio
        ratio_text = "—" if ratio is None else f"{100 * ratio:.0f} %"
        if row.reference is not None and ratio is not None:
            ratio_text += " of trivial"
        lines.append(
            f"| {row.label} | {_num(row.pgbench.tps if row.pgbench else None)} | {service} "
            f"| {ratio_text} | {_num(load.p50_ms if load else None, '{:.1f}')} "
            f"| {_num(load.p99_ms if load else None, '{:.1f}')} | {_statuses(load)} "
            f"| {_num(load.cpu_percent(load.generator_cpu_s) if load else None)} "
            f"| {_invariants(row)} |"
        )
    return "\n".join(lines)


def cpu_table(rows: list[Row]) -> str:
    lines = [
        "| run | pgbench p50 / p99 ms | service workers CPU % | service CPU ms per request "
        "| PostgreSQL backends CPU % | generator CPU % | machine busy % (of 200) "
        "| new PG sessions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        load = row.load
        pg = f"{row.pgbench.p50_ms:.1f} / {row.pgbench.p99_ms:.1f}" if row.pgbench else "—"
        if load is None:
            lines.append(f"| {row.label} | {pg} | — | — | — | — | — | — |")
            continue
        per_request = 1000 * load.service_cpu_s / load.requests if load.requests else 0.0
        lines.append(
            f"| {row.label} | {pg} | {load.cpu_percent(load.service_cpu_s):.0f} "
            f"| {per_request:.2f} "
            f"| {load.cpu_percent(load.postgres_cpu_s):.0f} "
            f"| {load.cpu_percent(load.generator_cpu_s):.0f} "
            f"| {load.cpu_percent(load.machine_busy_s):.0f} | {load.new_connections} |"
        )
    return "\n".join(lines)


def _find(rows: list[Row], label: str) -> Row | None:
    return next((r for r in rows if r.label == label and r.load is not None), None)


def targets(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target that this run measured."""
    checks: list[tuple[str, str, bool]] = []
    for label, goal in (("hot c=64", TARGET_HOT), ("spread c=64", TARGET_SPREAD)):
        row = _find(rows, label)
        if row is not None and row.ratio is not None:
            checks.append(
                (
                    f"{label}: bookings/s ≥ {100 * goal:.0f} % of pgbench",
                    f"{100 * row.ratio:.0f} %",
                    row.ratio >= goal,
                )
            )
    row = _find(rows, "events list c=64")
    if row is not None and row.ratio is not None:
        checks.append(
            (
                f"events list c=64 ≥ {100 * TARGET_LIST:.0f} % of trivial",
                f"{100 * row.ratio:.0f} %",
                row.ratio >= TARGET_LIST,
            )
        )
    booking_rows = [r for r in rows if r.kind == "booking" and r.load is not None]
    if booking_rows:
        worst = max(r.load.p99_ms for r in booking_rows)  # type: ignore[union-attr]
        checks.append(
            (f"booking p99 ≤ {TARGET_P99_MS:.0f} ms", f"{worst:.1f} ms", worst <= TARGET_P99_MS)
        )
    loads = [r for r in rows if r.load is not None]
    if loads:
        errors = sum(r.load.server_errors() for r in loads)  # type: ignore[union-attr]
        checks.append(("zero 5xx", str(errors), errors == 0))
    checked = [r for r in rows if r.problems is not None]
    if checked:
        broken = sum(len(r.problems or []) for r in checked)
        checks.append(("zero invariant violations", str(broken), broken == 0))
    return checks


def render(rows: list[Row], ctx: Context) -> str:
    workers = "—" if ctx.workers is None else str(ctx.workers)
    env = ", ".join(f"{k}={v}" for k, v in ctx.service_env.items()) or _pool_defaults()
    la, lb = ctx.load_before, ctx.load_after
    parts = [
        "# Benchmark: the service against PostgreSQL's own limit",
        "",
        f"- date: {ctx.started.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}",
        f"- PostgreSQL: {ctx.postgres_version} (throwaway database `{ctx.database}`)",
        f"- pgbench: {ctx.pgbench}, `-M prepared`, {ctx.duration} s per run, "
        "script `bench/sql/booking.sql`",
        f"- service: `uvicorn app.main:app --workers {workers} --no-access-log` (uvloop, "
        f"httptools), RATE_LIMIT_ENABLED=false, LOG_LEVEL=WARNING; pool: {env}",
        f"- generator: {ctx.generator}",
        f"- load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at start, "
        f"{lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f} at the end",
        "",
        table(rows),
        "",
        "Ratio: service bookings/s over pgbench TPS of the same transaction, same shape and "
        "clients, measured one after the other; for the events list, over the trivial "
        "endpoint `/health/live`. Latencies are the service's (generator side). CPU % is of "
        "one core over the run.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for name, measured, met in targets(rows):
        parts.append(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    parts += ["", "## Where the CPU went", "", cpu_table(rows), ""]
    if ctx.worker_choice:
        parts += ["## Worker count", "", *[f"- {line}" for line in ctx.worker_choice], ""]
    broken = [(r.label, p) for r in rows for p in (r.problems or [])]
    if broken:
        parts += ["## Broken invariants", "", *[f"- {label}: {p}" for label, p in broken], ""]
    if ctx.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in ctx.notes], ""]
    return "\n".join(parts)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
