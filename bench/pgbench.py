"""PostgreSQL's own limit: the booking transaction replayed by pgbench, no service between."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

BENCH_DIR = Path(__file__).resolve().parent
BOOKING_SCRIPT = BENCH_DIR / "sql" / "booking.sql"
HOLD_SCRIPT = BENCH_DIR / "sql" / "hold_checkout.sql"


class PgbenchFailed(RuntimeError):
    """pgbench could not run the script (no connection, an error in the script)."""


@dataclass
class PgbenchResult:
    clients: int
    tps: float
    transactions: int
    failed: int
    p50_ms: float
    p99_ms: float
    aborted_clients: int = 0
    errors: list[str] = field(default_factory=list)


def find_pgbench() -> str | None:
    """pgbench from PATH, else the one shipped in the pgserver wheel."""
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        import pgserver
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
    return str(bundled) if bundled.exists() else None


def libpq_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection options and environment for a libpq client from a SQLAlchemy URL."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    args = ["-h", str(host), "-U", parsed.username or "postgres"]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    env = {}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return args, env


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_pgbench(
    url: str,
    *,
    clients: int,
    duration: int,
    variables: dict[str, int],
    lock_timeout_ms: int,
    pgbench: str,
    script: Path = BOOKING_SCRIPT,
) -> PgbenchResult:
    """Run the booking script for `duration` seconds; latencies from pgbench's per-transaction log.

    The backends get the service's lock_timeout, as the service's pool sets it.
    """
    conn_args, conn_env = libpq_args(url)
    database = make_url(url).database or "postgres"
    env = {
        **os.environ,
        **conn_env,
        "PGOPTIONS": f"-c lock_timeout={lock_timeout_ms}",
        "PGAPPNAME": "bench-pgbench",
    }
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as logs:
        prefix = str(Path(logs) / "tx")
        command = [
            pgbench,
            *conn_args,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(2, clients)),
            "-T",
            str(duration),
            "-f",
            str(script),
            "-l",
            "--log-prefix",
            prefix,
        ]
        for name, value in variables.items():
            command += ["-D", f"{name}={value}"]
        command.append(database)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        latencies: list[float] = []
        for log in Path(logs).glob("tx*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000)
    output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 2) or "tps = " not in output:
        detail = " / ".join(line for line in output.splitlines() if "error" in line.lower())
        raise PgbenchFailed(f"exit {proc.returncode}: {detail or output.strip()}")
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    aborted = len(re.findall(r"client \d+ aborted", output))
    errors = [line for line in output.splitlines() if "ERROR" in line or "aborted" in line]
    latencies.sort()
    return PgbenchResult(
        clients=clients,
        tps=tps,
        transactions=int(processed.group(1)) if processed else 0,
        failed=int(failed.group(1)) if failed else 0,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        aborted_clients=aborted,
        errors=errors[:5],
    )


def pgbench_version(pgbench: str) -> str:
    out = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()
