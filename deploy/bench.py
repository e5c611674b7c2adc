"""The cost of each hop of the scaled-out deployment, measured in one run.

    python -m deploy.bench [--duration 15] [--clients 64] [--workers 1]

Starts the cluster (deploy/cluster.py) plus one more app instance straight on the
primary, then drives POST /api/bookings/ with bench.loadtest (hot: one event;
spread: 50 events) against, in turn:

  direct       one instance → PostgreSQL primary (DB_POOLER=none, prepared statements)
  pgbouncer    one instance → PgBouncer → primary (the cluster's first instance)
  haproxy      HAProxy → both cluster instances → PgBouncer → primary

and prints a Markdown table (bookings/s, p50, p99, statuses). Every run checks the
invariants through the API (bench.loadtest exits non-zero otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.cluster import ROOT, Cluster, _database_url
from deploy.services import free_port, wait_until_ready

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(groups: set[int]) -> float:
    """CPU time (user + system) of the processes ``groups`` name, of the live processes in
    their process groups and of their children (PostgreSQL's backends start their own
    sessions: they are counted as the postmaster's children, live or reaped)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid, pgid = int(entry), int(fields[1]), int(fields[2])
        if pid in groups:
            total += sum(int(v) for v in fields[11:15])  # own time and reaped children's
        elif pgid in groups or ppid in groups:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def loadtest(url: str, shape: str, clients: int, duration: float) -> dict:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.loadtest", "--base-url", url, "--shape", shape),
            *("--clients", str(clients), "--duration", str(duration), "--users", "5", "--json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadtest failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    result = json.loads(lines[-1])
    result["exit"] = done.returncode
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per instance")
    args = parser.parse_args()
    os.environ["RATE_LIMIT_ENABLED"] = "false"
    cluster = Cluster(
        Path(tempfile.mkdtemp(prefix="eb-bench-")),
        port=free_port(),
        instances=2,
        workers=args.workers,
        pool=20,
    )
    direct = None
    try:
        cluster.start()
        primary = str(cluster.info["primary"]).rsplit(":", 1)[1].split("/")[0]
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")},
            "DATABASE_URL": _database_url(int(primary)),
            "SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "LOG_LEVEL": "WARNING",
        }
        direct = subprocess.Popen(
            [
                *(sys.executable, "-m", "app", "serve"),
                *("--port", str(port), "--workers", str(args.workers)),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        direct_url = f"http://127.0.0.1:{port}"
        wait_until_ready(direct_url, direct, "the direct instance", 60)
        by_name = {s.name: s.process.pid for s in cluster.services}
        targets = {
            "direct": (direct_url, {direct.pid}),
            "pgbouncer": (cluster.info["instances"][0]["url"], {by_name["app1"]}),  # type: ignore[index]
            "haproxy": (str(cluster.info["api"]), {by_name["app1"], by_name["app2"]}),
        }
        database = {by_name["postgres-primary"]}
        hops = {by_name["pgbouncer"], by_name["haproxy"]}
        rows = []
        for shape in ("hot", "spread"):
            for name, (url, apps) in targets.items():
                before = [cpu_seconds(g) for g in (apps, database, hops)]
                r = loadtest(url, shape, args.clients, args.duration)
                after = [cpu_seconds(g) for g in (apps, database, hops)]
                created = max(1, round(r["bookings_per_s"] * args.duration))
                r["cpu_ms"] = [
                    round((a - b) * 1000 / created, 2) for a, b in zip(after, before, strict=False)
                ]
                rows.append((shape, name, r))
                print(f"{shape} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
        print(
            f"\n{args.clients} clients, {args.duration:.0f} s per run, "
            f"{args.workers} worker(s) per instance\n"
        )
        print(
            "| shape | path | bookings/s | p50 | p99 | CPU ms/booking: app, PostgreSQL, "
            "PgBouncer+HAProxy | statuses | invariants |"
        )
        print("|---|---|---:|---:|---:|---|---|---|")
        for shape, name, r in rows:
            statuses = ", ".join(f"{n} x {s}" for s, n in sorted(r["statuses"].items()))
            cpu = " / ".join(f"{v:.2f}" for v in r["cpu_ms"])
            print(
                f"| {shape} | {name} | {r['bookings_per_s']:.1f} | {r['p50_ms']:.0f} ms "
                f"| {r['p99_ms']:.0f} ms | {cpu} | {statuses} "
                f"| {'OK' if r['exit'] == 0 else 'FAILED'} |"
            )
        return 0 if all(r["exit"] == 0 for _, _, r in rows) else 1
    finally:
        if direct is not None and direct.poll() is None:
            os.killpg(direct.pid, signal.SIGTERM)
            direct.wait(timeout=15)
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
