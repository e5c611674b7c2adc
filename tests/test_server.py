"""The image's server (`python -m app.core.server`): uvicorn with a listening socket per
worker, bound with SO_REUSEPORT, so that connections opened together spread over the
workers instead of landing on whichever accepts first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import psutil
import pytest

from app.core.server import WorkerSocket, bind_reuse_port
from tests.factories import (
    ROOT,
    free_port,
    server_env,
    server_process,
    uvicorn_argv,
    wait_until_ready,
)


def _listeners(pid: int, port: int) -> list[int]:
    """The file descriptors of ``pid`` listening on ``port``."""
    return [
        c.fd
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


def _workers(supervisor: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(supervisor).children()
        if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    ]


def _serving(supervisor: int, port: int) -> dict[int, int]:
    """Each worker's pid and the number of its listening sockets on ``port``."""
    return {p.pid: len(_listeners(p.pid, port)) for p in _workers(supervisor)}


def _wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """The service under `python -m app.core.server --workers 2` (what the image runs)."""
    port = free_port()
    argv = uvicorn_argv(port)
    assert argv[1:3] == ["-m", "app.core.server"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=server_env(database_url))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, 60)
        _wait_for(lambda: list(_serving(proc.pid, port).values()) == [1, 1])
        yield proc, base, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_each_worker_listens_on_a_socket_of_its_own(
    served: tuple[subprocess.Popen[bytes], str, int],
) -> None:
    proc, _, port = served
    # The supervisor keeps the address bound but does not listen: it takes no connections.
    assert _listeners(proc.pid, port) == []
    workers = _serving(proc.pid, port)
    assert len(workers) == 2 and all(n == 1 for n in workers.values())

    # 64 keep-alive connections opened at once, as a load generator opens them.
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    try:
        for conn in connections:
            conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        for conn in connections:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        per_worker: Counter[int] = Counter()
        for pid in workers:
            per_worker[pid] = sum(
                1
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
            )
    finally:
        for conn in connections:
            conn.close()
    assert sum(per_worker.values()) == 64
    # The kernel hashes each connection to a socket: 32 ± 4 each, fewer than 12 on one
    # worker about once in 10^5 runs; a shared socket gave 11/53 and 4/60.
    assert min(per_worker.values()) >= 12, per_worker


def test_a_killed_workers_connections_go_to_the_others_until_it_is_replaced(
    served: tuple[subprocess.Popen[bytes], str, int],
) -> None:
    proc, base, port = served
    victim, survivor = _workers(proc.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    # Its socket died with it: every new connection reaches the survivor.
    for _ in range(40):
        with httpx.Client(base_url=base, timeout=5) as client:
            assert client.get("/health/live").status_code == 200
    # uvicorn starts a new worker, which binds a socket of its own again.
    _wait_for(lambda: victim.pid not in _serving(proc.pid, port))
    _wait_for(lambda: list(_serving(proc.pid, port).values()) == [1, 1])
    assert survivor.pid in _serving(proc.pid, port) and len(_serving(proc.pid, port)) == 2
    with httpx.Client(base_url=base, timeout=5) as client:
        assert all(client.get("/health/live").status_code == 200 for _ in range(20))


def test_an_address_in_use_stops_the_server_before_any_worker_starts(database_url: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            uvicorn_argv(port),
            cwd=ROOT,
            env=server_env(database_url),
            capture_output=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 3  # uvicorn's STARTUP_FAILURE
    assert b"Address already in use" in result.stderr
    assert b"Started parent process" not in result.stderr


def test_a_worker_socket_arrives_elsewhere_as_a_new_socket_on_the_same_address() -> None:
    import pickle

    sock = bind_reuse_port(socket.AF_INET, ("127.0.0.1", 0))
    try:
        address = sock.getsockname()
        arrived = pickle.loads(pickle.dumps(sock))
        try:
            assert isinstance(arrived, WorkerSocket)
            assert arrived.getsockname() == address
            assert arrived.fileno() != sock.fileno()
            assert arrived.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            # Both bound; neither listens until a worker's server does.
            assert arrived.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        finally:
            arrived.close()
    finally:
        sock.close()


def test_one_worker_serves_in_the_process_itself(database_url: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "app.core.server", "app.main:app", "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning"]
    with server_process(argv, server_env(database_url), port) as base:
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200


def test_the_imported_app_is_frozen_out_of_the_collectors_sight(database_url: str) -> None:
    """What importing the app made is frozen (``gc.freeze``), so that full collections,
    110-120 ms each with it, walk only what requests leave."""
    code = (
        "import gc; from app.core.server import ServerConfig; "
        "config = ServerConfig('app.main:app'); before = gc.get_freeze_count(); "
        "config.load(); print(before, gc.get_freeze_count(), len(gc.get_objects()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=server_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, frozen, tracked = map(int, result.stdout.split())
    assert before == 0
    assert frozen > 50_000 and tracked < frozen / 5, (frozen, tracked)
