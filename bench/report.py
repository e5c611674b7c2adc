"""The bench's table: what the service reached against PostgreSQL's own limit, and the targets."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.pgbench import PgbenchResult
from bench.service import LoadResult

# At 64 clients, measured in the same run, for the shipped configuration.
TARGET_HOT_OF_SPREAD = 0.95  # hot bookings/s over spread bookings/s
TARGET_HOT_P99_MS = 100.0
TARGET_SPREAD = 0.50  # spread bookings/s over pgbench TPS
TARGET_LIST = 0.50  # events list over the trivial endpoint
TARGET_SHIPPED = 0.90  # shipped over stripped, on hot, spread and the events list


@dataclass
class Row:
    label: str
    kind: str  # "booking", "hold" (a hold, then its checkout), "hold alone" or "get"
    clients: int
    load: LoadResult | None = None
    pgbench: PgbenchResult | None = None
    reference: LoadResult | None = None  # the trivial endpoint, for the events list
    problems: list[str] | None = None  # None: not checked
    config: str = "stripped"  # the service configuration (bench.service.ServiceConfig)

    @property
    def served(self) -> float:
        """Bookings/s for a booking row (made by checkouts for a hold row), holds/s for a
        holds-alone row, 200 answers/s for a read."""
        if self.load is None:
            return 0.0
        status = {"booking": "201", "hold": "201 checkout", "hold alone": "201"}.get(
            self.kind, "200"
        )
        return self.load.per_second(status)

    @property
    def bookings(self) -> int:
        """Bookings confirmed to clients (by a 201 to a booking or to a checkout)."""
        status = {"booking": "201", "hold": "201 checkout"}.get(self.kind)
        if self.load is None or status is None:
            return 0
        return self.load.statuses.get(status, 0)

    @property
    def books(self) -> bool:
        return self.kind in ("booking", "hold")

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
    versions: str = ""
    redis: str = ""
    configs: list[str] = field(default_factory=list)  # each configuration, described


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
        "| run | config | pgbench TPS | service req/s (bookings/s) | ratio | p50 ms | p99 ms "
        "| errors by status | generator CPU % | invariants |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        load = row.load
        service = "—"
        if load is not None:
            service = f"{load.per_second():,.0f}"
            if row.books:
                service += f" ({row.served:,.0f})"
            elif row.kind == "hold alone":
                service += f" ({row.served:,.0f} holds)"
        ratio = row.ratio
        ratio_text = "—" if ratio is None else f"{100 * ratio:.0f} %"
        if row.reference is not None and ratio is not None:
            ratio_text += " of trivial"
        lines.append(
            f"| {row.label} | {row.config} "
            f"| {_num(row.pgbench.tps if row.pgbench else None)} | {service} "
            f"| {ratio_text} | {_num(load.p50_ms if load else None, '{:.1f}')} "
            f"| {_num(load.p99_ms if load else None, '{:.1f}')} | {_statuses(load)} "
            f"| {_num(load.cpu_percent(load.generator_cpu_s) if load else None)} "
            f"| {_invariants(row)} |"
        )
    return "\n".join(lines)


def cpu_table(rows: list[Row]) -> str:
    lines = [
        "| run | config | pgbench p50 / p99 ms | service workers CPU % "
        "| service CPU ms per request | PostgreSQL backends CPU % | generator CPU % "
        "| machine busy % (of 200) | new PG sessions |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        load = row.load
        pg = f"{row.pgbench.p50_ms:.1f} / {row.pgbench.p99_ms:.1f}" if row.pgbench else "—"
        if load is None:
            lines.append(f"| {row.label} | {row.config} | {pg} | — | — | — | — | — | — |")
            continue
        per_request = _cpu_per_request(load)
        lines.append(
            f"| {row.label} | {row.config} | {pg} "
            f"| {load.cpu_percent(load.service_cpu_s):.0f} "
            f"| {per_request:.2f} "
            f"| {load.cpu_percent(load.postgres_cpu_s):.0f} "
            f"| {load.cpu_percent(load.generator_cpu_s):.0f} "
            f"| {load.cpu_percent(load.machine_busy_s):.0f} | {load.new_connections} |"
        )
    return "\n".join(lines)


def holds_table(rows: list[Row]) -> str:
    """The hold rows: holds/s and checkouts/s beside the one-step bookings/s of the same
    shape, clients and configuration, and the CPU each request cost the service."""
    lines = [
        "| run | config | holds/s | checkouts/s | bookings/s (hold→checkout) "
        "| pgbench TPS (hold + checkout) | ratio | one-step bookings/s "
        "| service CPU ms per request (hold or checkout) | per one-step booking |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.kind != "hold" or row.load is None:
            continue
        load = row.load
        checkouts = load.per_second("201 checkout") + load.per_second("200 checkout")
        one_step = _find(rows, row.label.removeprefix("hold→checkout "), row.config)
        ratio = row.ratio
        lines.append(
            f"| {row.label} | {row.config} | {load.per_second('201 hold'):,.0f} "
            f"| {checkouts:,.0f} | {row.served:,.0f} "
            f"| {_num(row.pgbench.tps if row.pgbench else None)} "
            f"| {'—' if ratio is None else f'{100 * ratio:.0f} %'} "
            f"| {_num(one_step.served if one_step else None)} "
            f"| {_cpu_per_request(load):.2f} "
            f"| {_num(_cpu_per_request(one_step.load) if one_step else None, '{:.2f}')} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def hold_cost_table(rows: list[Row]) -> str:
    """Holds alone beside one-step bookings of the same shape, clients and configuration:
    what one request of each cost the service's workers and PostgreSQL."""
    lines = [
        "| run | config | holds/s | one-step bookings/s | p50 / p99 ms hold | booking "
        "| service CPU ms per hold | per booking | PostgreSQL CPU ms per hold | per booking |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def latency(row: Row | None) -> str:
        load = row.load if row else None
        return "—" if load is None else f"{load.p50_ms:.1f} / {load.p99_ms:.1f}"

    def postgres(row: Row | None) -> str:
        load = row.load if row else None
        if load is None or not load.requests:
            return "—"
        return f"{1000 * load.postgres_cpu_s / load.requests:.2f}"

    for row in rows:
        if row.kind != "hold alone" or row.load is None:
            continue
        booking = _find(rows, row.label.removeprefix("hold "), row.config)
        lines.append(
            f"| {row.label} | {row.config} | {row.served:,.0f} "
            f"| {_num(booking.served if booking else None)} "
            f"| {latency(row)} | {latency(booking)} "
            f"| {_cpu_per_request(row.load):.2f} "
            f"| {_num(_cpu_per_request(booking.load) if booking else None, '{:.2f}')} "
            f"| {postgres(row)} | {postgres(booking)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def _cpu_per_request(load: LoadResult | None) -> float:
    if load is None or not load.requests:
        return 0.0
    return 1000 * load.service_cpu_s / load.requests


def _find(rows: list[Row], label: str, config: str) -> Row | None:
    return next(
        (r for r in rows if r.label == label and r.config == config and r.load is not None), None
    )


def where_the_time_goes(row: Row) -> str:
    """One line: CPU per request (and share of a core) of each party, from /proc."""
    load = row.load
    if load is None:
        return f"{row.label}, {row.config}: not run"
    n = load.requests or 1
    unit = "booking" if row.kind == "booking" else "request"  # a hold or a checkout

    def part(name: str, seconds: float) -> str:
        return f"{name} {1000 * seconds / n:.2f} ms ({load.cpu_percent(seconds):.0f} %)"

    parts = [part("workers", load.service_cpu_s)]
    if len(load.worker_cpu_s) > 1:  # how evenly the connections landed on the workers
        split = " + ".join(f"{load.cpu_percent(each):.0f}" for each in load.worker_cpu_s)
        parts[0] = (
            f"workers {1000 * load.service_cpu_s / n:.2f} ms "
            f"({load.cpu_percent(load.service_cpu_s):.0f} % = {split} %)"
        )
    if load.job_worker_cpu_s:
        parts.append(part("job worker", load.job_worker_cpu_s))
    parts += [part("PostgreSQL", load.postgres_cpu_s), part("generator", load.generator_cpu_s)]
    other = load.machine_busy_s - (
        load.service_cpu_s + load.job_worker_cpu_s + load.postgres_cpu_s + load.generator_cpu_s
    )
    parts.append(part("rest of the machine", max(0.0, other)))
    return (
        f"{row.label}, {row.config}: CPU per {unit} (% of one core): "
        + ", ".join(parts)
        + f"; machine {load.cpu_percent(load.machine_busy_s):.0f} % busy of "
        f"{100 * (os.cpu_count() or 1)} %"
    )


def targets(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target that this run measured (shipped config)."""
    checks: list[tuple[str, str, bool]] = []
    main = "shipped" if any(r.config == "shipped" for r in rows) else "stripped"
    hot = _find(rows, "hot c=64", main)
    spread = _find(rows, "spread c=64", main)
    listing = _find(rows, "events list c=64", main)
    if hot is not None and spread is not None and spread.served:
        ratio = hot.served / spread.served
        checks.append(
            (
                f"hot c=64 ≥ {100 * TARGET_HOT_OF_SPREAD:.0f} % of spread bookings/s ({main})",
                f"{100 * ratio:.0f} %",
                ratio >= TARGET_HOT_OF_SPREAD,
            )
        )
    if hot is not None and hot.load is not None:
        checks.append(
            (
                f"hot c=64 p99 ≤ {TARGET_HOT_P99_MS:.0f} ms ({main})",
                f"{hot.load.p99_ms:.0f} ms",
                hot.load.p99_ms <= TARGET_HOT_P99_MS,
            )
        )
    if spread is not None and spread.ratio is not None:
        checks.append(
            (
                f"spread c=64 ≥ {100 * TARGET_SPREAD:.0f} % of pgbench ({main})",
                f"{100 * spread.ratio:.0f} %",
                spread.ratio >= TARGET_SPREAD,
            )
        )
    if listing is not None and listing.ratio is not None:
        checks.append(
            (
                f"events list c=64 ≥ {100 * TARGET_LIST:.0f} % of trivial ({main})",
                f"{100 * listing.ratio:.0f} %",
                listing.ratio >= TARGET_LIST,
            )
        )
    for label in ("hot c=64", "spread c=64", "events list c=64"):
        shipped, stripped = _find(rows, label, "shipped"), _find(rows, label, "stripped")
        if shipped is not None and stripped is not None and stripped.served:
            ratio = shipped.served / stripped.served
            checks.append(
                (
                    f"{label}: shipped ≥ {100 * TARGET_SHIPPED:.0f} % of stripped",
                    f"{100 * ratio:.0f} %",
                    ratio >= TARGET_SHIPPED,
                )
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
        "# Benchmark: the service as shipped, stripped, and PostgreSQL's own limit",
        "",
        f"- date: {ctx.started.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}",
        f"- PostgreSQL: {ctx.postgres_version} (throwaway database `{ctx.database}`)",
        f"- pgbench: {ctx.pgbench}, `-M prepared`, {ctx.duration} s per run, "
        "script `bench/sql/booking.sql` (`bench/sql/hold_checkout.sql` for hold→checkout)",
        f"- service workers: {workers}; pool: {env}; CATALOGUE_CACHE_SECONDS="
        f"{os.environ.get('CATALOGUE_CACHE_SECONDS', 'default')}",
        *[f"- {line}" for line in ctx.configs],
        f"- {ctx.redis}" if ctx.redis else "- Redis: —",
        f"- versions: {ctx.versions}",
        f"- generator: {ctx.generator}",
        f"- load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at start, "
        f"{lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f} at the end",
        "",
        table(rows),
        "",
        "Ratio: service bookings/s over pgbench TPS of the same transaction, same shape and "
        "clients, measured one after the other; for the events list, over the trivial "
        "endpoint `/health/live`. Latencies are the service's (generator side). CPU % is of "
        "one core over the run. A hold→checkout row books in two requests per client "
        "(POST /api/holds/, then POST /api/holds/{reference}/checkout/): its req/s counts "
        "both, its bookings/s the checkouts that made a booking, and pgbench runs the "
        "same statements (a hold and its checkout per transaction).",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for name, measured, met in targets(rows):
        parts.append(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    holds = holds_table(rows)
    if holds:
        parts += ["", "## Hold → checkout", "", holds]
    cost = hold_cost_table(rows)
    if cost:
        parts += ["", "## A hold beside a booking", "", cost]
    parts += [
        "",
        "## Where the time goes",
        "",
        *[f"- {where_the_time_goes(r)}" for r in rows],
        "",
        cpu_table(rows),
        "",
    ]
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
