"""Local server processes of a scaled-out deployment, started without Docker.

PostgreSQL (a primary and a streaming replica, from the ``pgserver`` wheel's binaries
or the system's), PgBouncer, HAProxy and Redis: each started in the foreground on a
free port under a work directory, stopped by ``Service.stop``. Used by ``make cluster``
(``deploy/cluster.py``) and by the tests that run the service through them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# PostgreSQL refuses to run as root; so does PgBouncer without -u. Processes that
# must not run as root run as this account when the caller is root.
SERVICE_USER_CANDIDATES = ("postgres", "nobody")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    """A binary on PATH, or in the system directories Debian keeps daemons in."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def service_user() -> str | None:
    """The unprivileged account to run daemons as when this process is root, else None."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USER_CANDIDATES:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) exists")


def give_to_service_user(path: Path) -> None:
    """Let the service account own ``path`` (and everything under it) when we are root."""
    user = service_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    what: str,
    timeout: float,
    *,
    failing: str,
    interval: float,
) -> None:
    """Poll ``ready`` until it holds; fail if ``process`` exits first, or with ``what``
    ``failing`` (``did not listen on port 5432``) once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} {failing} within {timeout:.0f} s")
        time.sleep(interval)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    failing = f"did not listen on port {port}"
    wait_until(lambda: _listening(port), process, what, timeout, failing=failing, interval=0.05)


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_ready(url: str, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Poll the service's /health/ready until it answers 200."""
    wait_until(
        lambda: _answers_ready(url), process, what, timeout, failing="was not ready", interval=0.2
    )


@dataclass
class Service:
    """One started process: ``url`` is where it answers; ``log`` its output."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    url: str
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is not None:
            return
        try:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def started(self, wait: Callable[[], None], sig: int = signal.SIGTERM) -> Service:
        """This service once ``wait`` returns; if it fails, stopped (with ``sig``) and the
        error carries the end of its log."""
        try:
            wait()
        except RuntimeError as exc:
            self.stop(sig=sig)
            raise RuntimeError(f"{exc}\n{self.tail()}") from None
        return self


def _spawn(argv: list[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    try:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )
    finally:
        handle.close()


# --- PgBouncer -----------------------------------------------------------------------


def start_pgbouncer(
    workdir: Path,
    *,
    server_host: str,
    server_port: int,
    users: tuple[str, ...] = ("postgres",),
    port: int | None = None,
    pool_size: int = 20,
    max_client_conn: int = 1000,
    timeout: float = 15,
) -> Service:
    """PgBouncer in transaction mode in front of ``server_host:server_port``.

    Every database name is passed through to the server (``*``); clients of ``users``
    are let in without a password (``trust``; bind to 127.0.0.1 only) and reach the
    server as themselves. ``pool_size`` server connections per database and user.
    """
    binary = find_binary("pgbouncer")
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    (workdir / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
max_db_connections = {pool_size}
server_reset_query =
ignore_startup_parameters = extra_float_digits
admin_users = {users[0]}
stats_users = {users[0]}
log_connections = 0
log_disconnections = 0
"""
    )
    give_to_service_user(workdir)
    argv = [binary]
    user = service_user()
    if user is not None:
        argv += ["-u", user]
    argv.append(str(workdir / "pgbouncer.ini"))
    log = workdir / "pgbouncer.log"
    process = _spawn(argv, log)
    service = Service("pgbouncer", process, port, f"127.0.0.1:{port}", log)
    return service.started(lambda: wait_for_port(port, process, "pgbouncer", timeout))


def pg_binaries() -> Path | None:
    """The directory of initdb, pg_ctl, postgres and pg_basebackup: pgserver's or the system's."""
    try:
        import pgserver

        directory = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (directory / "pg_basebackup").exists():
            return directory
    except ImportError:
        pass
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_basebackup").exists():
            return Path(candidate)
    return None


# --- PostgreSQL: a primary and a streaming replica -----------------------------------


def _pg_run(tool: str, *args: str, log: Path) -> None:
    """Run a PostgreSQL tool (``initdb``, ...) to completion as the service account."""
    user = service_user()
    with log.open("ab") as handle:
        done = subprocess.run(
            [_pg_bin(tool), *args], stdout=handle, stderr=subprocess.STDOUT, user=user, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{tool} failed ({done.returncode}):\n{tail}")


def _as_postgres_on(port: int) -> tuple[str, ...]:
    """A client tool's arguments to reach the local server on ``port`` as postgres."""
    return ("-h", "127.0.0.1", "-p", str(port), "-U", "postgres")


def _pg_bin(name: str) -> str:
    directory = pg_binaries()
    if directory is None:
        raise FileNotFoundError("no PostgreSQL binaries (the pgserver wheel, or postgresql)")
    return str(directory / name)


def _start_postgres(name: str, datadir: Path, port: int, log: Path, timeout: float) -> Service:
    argv = [
        _pg_bin("postgres"),
        *("-D", str(datadir), "-p", str(port), "-h", "127.0.0.1"),
        *("-c", "unix_socket_directories=", "-c", "listen_addresses=127.0.0.1"),
    ]
    process = _spawn(argv, log, user=service_user(), start_new_session=True)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    service = Service(name, process, port, url, log, {"datadir": str(datadir)})
    return service.started(lambda: _wait_for_postgres(port, process, name, timeout), signal.SIGINT)


def _wait_for_postgres(
    port: int, process: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    argv = [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    wait_until(
        lambda: subprocess.run(argv, check=False).returncode == 0,
        process,
        what,
        timeout,
        failing=f"was not ready on port {port}",
        interval=0.1,
    )


def start_primary(workdir: Path, *, port: int | None = None, timeout: float = 60) -> Service:
    """A fresh PostgreSQL primary (initdb, trust on 127.0.0.1, WAL for a replica).

    Tuned for a throwaway local cluster: fsync off (a crash loses the cluster, which is
    recreated at every start anyway).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    give_to_service_user(workdir)
    datadir = workdir / "primary"
    log = workdir / "primary.log"
    _pg_run(
        "initdb",
        *("-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
        *("--no-instructions", "--locale=C"),
        log=log,
    )
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# make cluster\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
            "max_connections = 200\nfsync = off\nfull_page_writes = off\n"
            "shared_buffers = 128MB\n"
        )
    give_to_service_user(workdir)
    return _start_postgres("postgres-primary", datadir, port or free_port(), log, timeout)


def start_replica(
    workdir: Path, primary: Service, *, port: int | None = None, timeout: float = 60
) -> Service:
    """A streaming replica of ``primary``: pg_basebackup -R, then a hot standby."""
    datadir = workdir / "replica"
    log = workdir / "replica.log"
    _pg_run(
        "pg_basebackup",
        *_as_postgres_on(primary.port),
        *("-D", str(datadir), "-R", "-X", "stream", "-c", "fast"),
        log=log,
    )
    return _start_postgres("postgres-replica", datadir, port or free_port(), log, timeout)


# --- Redis ---------------------------------------------------------------------------


def start_redis(workdir: Path, *, port: int | None = None, timeout: float = 15) -> Service:
    binary = find_binary("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    log = workdir / "redis.log"
    process = _spawn(argv, log)
    service = Service("redis", process, port, f"redis://127.0.0.1:{port}/0", log)
    return service.started(lambda: wait_for_port(port, process, "redis-server", timeout))


# --- HAProxy -------------------------------------------------------------------------


def start_haproxy(
    workdir: Path,
    backends: list[int],
    *,
    port: int | None = None,
    stats_port: int | None = None,
    timeout: float = 15,
) -> Service:
    """HAProxy on ``port``, round robin over the app instances on ``backends`` (ports).

    Instances are checked on /health/ready every second and taken out after two
    failures; a request whose connection to an instance fails is sent to another
    (``retry-on conn-failure`` + ``redispatch``: safe for any method, the request never
    reached the first). A request in flight on an instance that dies is answered 502:
    a client retries it with its Idempotency-Key.
    """
    binary = find_binary("haproxy")
    if binary is None:
        raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    stats_port = stats_port or free_port()
    servers = "\n".join(
        f"    server app{i + 1} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
        for i, p in enumerate(backends)
    )
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend api
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend apps

backend apps
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /
    stats refresh 2s
"""
    )
    log = workdir / "haproxy.log"
    process = _spawn([binary, "-f", str(config), "-db"], log)
    service = Service("haproxy", process, port, f"http://127.0.0.1:{port}", log)
    service.extra["stats"] = f"http://127.0.0.1:{stats_port}/"
    return service.started(lambda: wait_for_port(port, process, "haproxy", timeout))
