"""make cluster: the scaled-out service on one machine, without Docker.

    HAProxy :8080 ─┬─► app instance 1 (uvicorn workers + job worker) ─┐
                   └─► app instance 2 (uvicorn workers + job worker) ─┤
        writes, locks, reads with a token ──► PgBouncer ──► PostgreSQL primary
        anonymous catalogue reads ─────────────────────────► PostgreSQL replica
        rate limits, email queue ──────────────────────────► Redis

Every part is a local process on a free port (HAProxy on --port) under --workdir,
recreated at every start; Ctrl-C or SIGTERM stops them all. Needs the Debian
packages pgbouncer, haproxy and redis-server; PostgreSQL comes from the pgserver
wheel (or the system's binaries).

    python -m deploy.cluster [--port 8080] [--instances 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.services import (
    Service,
    _as_postgres_on,
    _pg_run,
    find_binary,
    free_port,
    service_user,
    start_haproxy,
    start_pgbouncer,
    start_primary,
    start_redis,
    start_replica,
    wait_until_ready,
)

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "booking"


def missing_tools() -> list[str]:
    """What this machine lacks to run the cluster, with how to get it."""
    missing = [
        f"{name} (apt-get install {package})"
        for name, package in (
            ("pgbouncer", "pgbouncer"),
            ("haproxy", "haproxy"),
            ("redis-server", "redis-server"),
        )
        if find_binary(name) is None
    ]
    from deploy.services import pg_binaries

    if pg_binaries() is None:
        missing.append("PostgreSQL binaries (the pgserver wheel: make install)")
    return missing


def _database_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"


async def _streaming_replicas(port: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        )
    finally:
        await conn.close()


class Cluster:
    def __init__(self, workdir: Path, *, port: int, instances: int, workers: int, pool: int):
        self.workdir = workdir
        self.port = port
        self.instances = instances
        self.workers = workers
        self.pool = pool
        self.services: list[Service] = []
        self.info: dict[str, object] = {}

    def _started(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def _spawn_app(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", *argv],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped with its workers
            )
        return self._started(Service(name, process, 0, "", log))

    def start(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        if service_user() is not None:  # PostgreSQL will run as another account
            for parent in self.workdir.parents:
                if not parent.stat().st_mode & 0o001:
                    raise RuntimeError(
                        f"{parent} is closed to other accounts: PostgreSQL (run as "
                        f"{service_user()}) could not reach {self.workdir}; pick another --workdir"
                    )
        say = print
        say(f"starting the cluster under {self.workdir} ...", flush=True)
        primary = self._started(start_primary(self.workdir))
        _pg_run(
            "createdb", *_as_postgres_on(primary.port), DATABASE, log=self.workdir / "primary.log"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
        # Migrations go to the primary itself, not through the pooler.
        migrate = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**env, "DATABASE_URL": _database_url(primary.port)},
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}{migrate.stderr}")
        replica = self._started(start_replica(self.workdir, primary))
        deadline = time.monotonic() + 30
        while asyncio.run(_streaming_replicas(primary.port)) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica does not stream from the primary")
            time.sleep(0.2)
        bouncer = self._started(
            start_pgbouncer(
                self.workdir / "pgbouncer",
                server_host="127.0.0.1",
                server_port=primary.port,
                pool_size=self.pool,
            )
        )
        redis = self._started(start_redis(self.workdir / "redis"))
        env.update(
            {
                "DATABASE_URL": _database_url(bouncer.port),
                "DB_POOLER": "pgbouncer",
                "DATABASE_READ_URL": _database_url(replica.port),
                "REDIS_URL": redis.url,
                "SECRET_KEY": env.get("SECRET_KEY") or secrets.token_urlsafe(48),
                "LOG_LEVEL": env.get("LOG_LEVEL", "WARNING"),
            }
        )
        apps: list[Service] = []
        for n in range(1, self.instances + 1):
            port = free_port()
            instance_env = {
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"metrics-app{n}"),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            }
            Path(instance_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
            app = self._spawn_app(
                f"app{n}",
                [
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(self.workers),
                ],
                instance_env,
            )
            app.port, app.url = port, f"http://127.0.0.1:{port}"
            apps.append(app)
            self._spawn_app(f"app{n}-jobs", ["worker"], instance_env)
        for app in apps:
            wait_until_ready(app.url, app.process, app.name, timeout=60)
        haproxy = self._started(
            start_haproxy(self.workdir / "haproxy", [a.port for a in apps], port=self.port)
        )
        wait_until_ready(haproxy.url, haproxy.process, "haproxy", timeout=15)
        self.info = {
            "api": haproxy.url,
            "haproxy_stats": haproxy.extra["stats"],
            "instances": [
                {"url": a.url, "pid": a.process.pid, "workers": self.workers} for a in apps
            ],
            "pgbouncer": _database_url(bouncer.port).replace("+asyncpg", ""),
            "primary": _database_url(primary.port).replace("+asyncpg", ""),
            "primary_pid": primary.process.pid,
            "replica": _database_url(replica.port).replace("+asyncpg", ""),
            "replica_pid": replica.process.pid,
            "redis": redis.url,
            "workdir": str(self.workdir),
        }

    def describe(self) -> str:
        i = self.info
        lines = [
            "the cluster is up (Ctrl-C stops it):",
            f"  API through HAProxy   {i['api']}   (Swagger UI: {i['api']}/api/docs/swagger)",
            f"  HAProxy stats         {i['haproxy_stats']}",
        ]
        for n, inst in enumerate(i["instances"], 1):  # type: ignore[arg-type]
            lines.append(
                f"  app instance {n}        {inst['url']}   "
                f"({inst['workers']} workers + a job worker)"
            )
        lines += [
            f"  PgBouncer             {i['pgbouncer']}   (transaction mode, pool {self.pool})",
            f"  PostgreSQL primary    {i['primary']}",
            f"  PostgreSQL replica    {i['replica']}   (streaming, hot standby)",
            f"  Redis                 {i['redis']}",
            f"  logs                  {i['workdir']}/*.log",
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        """Everything, in reverse order: HAProxy and the apps first, PostgreSQL last."""
        for service in reversed(self.services):
            if service.name.startswith("app"):
                if service.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(service.process.pid, signal.SIGTERM)
                try:
                    service.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(service.process.pid, signal.SIGKILL)
            elif service.name.startswith("postgres"):
                service.stop(timeout=30, sig=signal.SIGINT)  # fast shutdown
            else:
                service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port (default 8080)")
    parser.add_argument("--instances", type=int, default=2, help="app instances (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per instance")
    parser.add_argument("--pool", type=int, default=20, help="PgBouncer's server connections")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".data" / "cluster")
    parser.add_argument("--json", action="store_true", help="also print the URLs as JSON")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print("make cluster needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    cluster = Cluster(
        args.workdir.resolve(),
        port=args.port,
        instances=args.instances,
        workers=args.workers,
        pool=args.pool,
    )
    try:
        cluster.start()
        print(cluster.describe(), flush=True)
        if args.json:
            print("CLUSTER " + json.dumps(cluster.info), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the cluster ...", flush=True)
        return 0
    except Exception as exc:
        print(f"the cluster could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        print("the cluster is stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
