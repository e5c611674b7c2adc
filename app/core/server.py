"""The service's server: uvicorn with a listening socket of its own for each worker
process (SO_REUSEPORT), and the app frozen out of the garbage collector's sight once
imported (``ServerConfig.load``).

uvicorn's `--workers` binds one socket and every worker accepts from it. Whichever worker
wakes first accepts a whole burst: clients that connect together (a load generator's
keep-alive connections, a proxy's pool) land 19/45 or 4/60 on two workers, and the worker
holding most of them is bound by its one core while the other idles.

Here the supervisor binds an address with SO_REUSEPORT and hands it to each worker as a
`WorkerSocket`, which arrives in the worker as a new socket bound to the same address. The
kernel spreads new connections over the listening sockets of the address by a hash of
each connection's addresses and ports, whoever is awake. The socket the supervisor holds
never listens, so it takes no connections; it keeps the address reserved and lets a bad
address fail before any worker starts. A worker's socket lives and dies with it: when a
worker dies, the kernel sends new connections to the others until uvicorn starts a new
one.

Everything else is uvicorn's own: its command line (`python -m app.core.server
app.main:app --workers 2 ...` takes the same options as `uvicorn`), its supervisor
(restarts, SIGHUP, SIGTTIN/SIGTTOU) and its server in each worker.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from typing import Any

import click
import uvicorn
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
from uvicorn.main import main as uvicorn_main
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def bind_reuse_port(family: int, address: Any) -> WorkerSocket:
    """A TCP socket bound (not listening) to `address` with SO_REUSEADDR and SO_REUSEPORT."""
    sock = WorkerSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_or_exit(family: int, address: Any) -> WorkerSocket:
    """``bind_reuse_port``, or uvicorn's start-up failure (exit 3) when it cannot."""
    try:
        return bind_reuse_port(family, address)
    except OSError as exc:
        logger.error("Cannot bind %s: %s", address, exc)
        sys.exit(STARTUP_FAILURE)


class WorkerSocket(socket.socket):
    """A socket that, sent to a worker process, arrives there as that worker's own socket
    bound to the same address with SO_REUSEPORT (a plain socket arrives as a duplicate of
    the same one)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _bind_or_exit, (self.family, self.getsockname()[:2])


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration whose address is bound with SO_REUSEPORT for the workers,
    and whose app, once imported, is out of the garbage collector's sight."""

    def load(self) -> None:
        """Import the app (in each worker), then freeze what that made (``gc.freeze``).

        Importing the app leaves some 160,000 objects that live as long as the process,
        and every full collection walked them all: 110-120 ms with the worker stopped,
        11-14 times in 15 s of a hot on-sale (hot c=64), which made the p99 (153-158
        ms; 58 and 84 ms frozen). Frozen, a full collection walks only what requests
        left (about 10,000 objects: 5-11 ms)."""
        super().load()
        gc.collect()
        gc.freeze()

    def bind_socket(self) -> socket.socket:
        if self.uds is not None or self.fd is not None or self.workers < 2:
            return super().bind_socket()
        family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
        sock = _bind_or_exit(family, (self.host, self.port))
        scheme = "https" if self.is_ssl else "http"
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        logger.info(
            "Uvicorn running on %s://%s:%d, a listening socket per worker (Press CTRL+C to quit)",
            scheme,
            host,
            sock.getsockname()[1],
        )
        return sock


def run(config: ServerConfig) -> None:
    """Serve `config` as `uvicorn.run` does (reloading aside), each worker on its own socket."""
    if config.workers > 1 and config.uds is None and config.fd is None:
        if not isinstance(config.app, str):
            logger.warning("You must pass the application as an import string to enable 'workers'.")
            sys.exit(STARTUP_FAILURE)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _serve(
    app: str,
    app_dir: str,
    log_config: str | None,
    headers: list[str],
    reload: bool,
    reload_dirs: list[str],
    reload_includes: list[str],
    reload_excludes: list[str],
    **options: Any,
) -> None:
    if reload:
        raise click.UsageError("--reload: use `uvicorn` itself while developing")
    sys.path.insert(0, app_dir)
    config = ServerConfig(
        app,
        log_config=LOGGING_CONFIG if log_config is None else log_config,
        headers=[tuple(header.split(":", 1)) for header in headers],  # type: ignore[misc]
        **options,
    )
    run(config)


main = click.Command(
    "server",
    params=uvicorn_main.params,
    callback=_serve,
    context_settings=uvicorn_main.context_settings,
    help="uvicorn's command line, with a listening socket per worker (SO_REUSEPORT).",
)

if __name__ == "__main__":
    main()
