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
from dataclasses import dataclass, field
from pathlib import Path

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


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")
        time.sleep(0.05)


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
    try:
        wait_for_port(port, process, "pgbouncer", timeout)
    except RuntimeError as exc:
        service.stop()
        raise RuntimeError(f"{exc}\n{service.tail()}") from None
    return service


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
