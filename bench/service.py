"""The service under load: uvicorn on the bench database, driven by wrk (or a Python client).

Run as a module it is the Python load generator used when wrk is missing:
``python -m bench.service PLAN.json`` prints one JSON line with its own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WRK_DIR = BENCH_DIR / "wrk"
SECRET_KEY = "bench-secret-key-0123456789-abcdefghijklmnop"


@dataclass
class LoadResult:
    """One load run as the generator saw it, with the CPU each party spent."""

    requests: int
    seconds: float
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float
    socket_errors: dict[str, int] = field(default_factory=dict)
    generator_cpu_s: float = 0.0
    service_cpu_s: float = 0.0
    # Each worker's own share, busiest first: wrk's keep-alive connections land on the
    # workers unevenly (the shared socket goes to whichever accepts first; 19/45 of 64
    # seen on a running service), and a worker that got most of them is bound by its
    # one core.
    worker_cpu_s: list[float] = field(default_factory=list)
    job_worker_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    new_connections: int = 0

    def per_second(self, status: str | None = None) -> float:
        count = self.requests if status is None else self.statuses.get(status, 0)
        return count / self.seconds if self.seconds else 0.0

    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("5"))

    def cpu_percent(self, seconds: float) -> float:
        return 100 * seconds / self.seconds if self.seconds else 0.0


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the bench dies, even killed, so none is left behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAISED_LIMIT = "1000000/minute"
RATE_LIMIT_SETTINGS = (
    "RATE_LIMIT_LOGIN",
    "RATE_LIMIT_LOGIN_IP",
    "RATE_LIMIT_REGISTER",
    "RATE_LIMIT_PASSWORD_RESET",
    "RATE_LIMIT_PASSWORD_RESET_IP",
    "RATE_LIMIT_BOOKINGS",
    "RATE_LIMIT_CHANGE_PASSWORD",
)
# The settings a configuration decides; inherited values of these are dropped.
_DECIDED = (
    "LOG_LEVEL",
    "LOG_FORMAT",
    "REDIS_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "RATE_LIMIT_ENABLED",
    *RATE_LIMIT_SETTINGS,
)


@dataclass
class Dockerfile:
    """What the image runs: the server module and the uvicorn flags of its CMD and the
    environment it sets."""

    server: str  # the module `python -m` runs: app.core.server (or uvicorn itself)
    uvicorn_flags: list[str]
    env: dict[str, str]

    @property
    def workers(self) -> int:
        return int(self.env.get("WEB_CONCURRENCY", "1"))


def read_dockerfile(path: Path = ROOT / "Dockerfile") -> Dockerfile:
    """The server of CMD (`python -m app.core.server` or `uvicorn`), the uvicorn flags after
    its `app.main:app` (--host, --port and --workers left out: the bench decides those)
    and the ENV of the last stage."""
    text = path.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    cmd = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            env = {}
        elif line.startswith("ENV "):
            env.update(m.groups() for m in re.finditer(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
        elif line.startswith("CMD "):
            cmd = line
    # CMD ["sh", "-c", "... exec python -m app.core.server app.main:app --host ... --loop ..."]
    shell = json.loads(cmd.removeprefix("CMD "))[-1] if cmd else ""
    words = shlex.split(shell)
    try:
        start = next(i for i, w in enumerate(words) if w == "app.main:app")
    except StopIteration:
        raise RuntimeError("the Dockerfile's CMD does not serve `app.main:app`") from None
    server = words[start - 1]  # the module after `-m`, or uvicorn's own command
    if words[start - 2 : start] not in (["-m", server], ["exec", "uvicorn"]):
        raise RuntimeError("the Dockerfile's CMD runs neither `python -m <server>` nor uvicorn")
    words = words[start + 1 :]
    flags: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--host", "--port", "--workers"):
            skip = True
        else:
            flags.append(word)
    return Dockerfile(server=server, uvicorn_flags=flags, env=env)


@dataclass
class ServiceConfig:
    """How the service is run: `shipped` (what the image runs, beside Redis and the job
    worker) or `stripped` (no access log, warnings only, no Redis, rate limits off)."""

    name: str
    server: str  # the module `python -m` runs
    uvicorn_flags: list[str]
    env: dict[str, str]
    job_worker: bool = False
    metrics_dir: bool = False

    def describe(self, workers: int) -> str:
        flags = " ".join(["--workers", str(workers), *self.uvicorn_flags])
        settings = ", ".join(f"{k}={v}" for k, v in self.env.items() if k != "SECRET_KEY")
        extras = []
        if self.metrics_dir:
            extras.append("PROMETHEUS_MULTIPROC_DIR=<fresh temporary directory>")
        if self.job_worker:
            extras.append("job worker `python -m app worker` running beside it")
        return f"**{self.name}**: `python -m {self.server} app.main:app {flags}`; {settings}" + (
            "; " + "; ".join(extras) if extras else ""
        )


def shipped_config(redis_url: str | None, dockerfile: Dockerfile | None = None) -> ServiceConfig:
    """The Dockerfile's command and environment, Redis and the job worker, rate limiting on
    with limits raised so that the load is not refused (their cost stays in the figure)."""
    dockerfile = dockerfile or read_dockerfile()
    env = {
        k: v
        for k, v in dockerfile.env.items()
        if k not in ("PATH", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY")
        and not k.startswith("PYTHON")
    }
    env["RATE_LIMIT_ENABLED"] = "true"
    env.update(dict.fromkeys(RATE_LIMIT_SETTINGS, RAISED_LIMIT))
    if redis_url:
        env["REDIS_URL"] = redis_url
    return ServiceConfig(
        "shipped",
        dockerfile.server,
        list(dockerfile.uvicorn_flags),
        env,
        job_worker=bool(redis_url),
        metrics_dir=True,
    )


def stripped_config(dockerfile: Dockerfile | None = None) -> ServiceConfig:
    """The fastest way to run it: what `make bench` measured in its first round, on the
    Dockerfile's server (a socket per worker)."""
    dockerfile = dockerfile or read_dockerfile()
    return ServiceConfig(
        "stripped",
        dockerfile.server,
        ["--no-access-log", "--log-level", "warning"],
        {"RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING", "REDIS_URL": ""},
    )


class Service:
    """app.main:app served with N workers as a configuration says (and the job worker)."""

    def __init__(
        self,
        database_url: str,
        workers: int,
        extra_env: dict[str, str] | None = None,
        config: ServiceConfig | None = None,
    ):
        self.database_url = database_url
        self.workers = workers
        self.config = config or stripped_config()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.job_worker: subprocess.Popen[bytes] | None = None
        self._metrics_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DECIDED}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "SECRET_KEY": SECRET_KEY,
                "SMTP_HOST": "",
                "ACCESS_TOKEN_EXPIRE_MINUTES": "120",
            }
        )
        env.update(self.config.env)
        if self.config.metrics_dir:
            self._metrics_dir = tempfile.TemporaryDirectory(prefix="bench-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir.name
        env.update(self.extra_env)
        return env

    def __enter__(self) -> Service:
        command = [
            sys.executable,
            "-m",
            self.config.server,
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.config.uvicorn_flags,
        ]
        env = self.env()
        # The access log and every other line go to a file, as to a container's log.
        self._log = tempfile.TemporaryFile(prefix="bench-service-log-")
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        if self.config.job_worker:
            self.job_worker = subprocess.Popen(
                [sys.executable, "-m", "app", "worker"],
                cwd=ROOT,
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}")
            if self.job_worker is not None and self.job_worker.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the job worker exited with {self.job_worker.returncode}")
            try:
                ready = httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200
                # Every worker has to be up, not just the first that answers.
                if ready and len(self.worker_processes()) >= self.workers:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError("uvicorn did not become ready in 60 s")

    def log_tail(self, size: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode(errors="replace")

    def __exit__(self, *exc: object) -> None:
        for proc in (self.proc, self.job_worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._metrics_dir is not None:
            self._metrics_dir.cleanup()
        if self._log is not None:
            self._log.close()
            self._log = None

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve requests (the workers; the process itself with one worker)."""
        assert self.proc is not None
        parent = psutil.Process(self.proc.pid)
        if self.workers == 1:
            return [parent]
        # uvicorn's supervisor spawns workers through multiprocessing; skip its helpers.
        return [
            p
            for p in parent.children(recursive=False)
            if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
        ]

    def job_worker_processes(self) -> list[psutil.Process]:
        if self.job_worker is None or self.job_worker.poll() is not None:
            return []
        return [psutil.Process(self.job_worker.pid)]


# ---------------------------------------------------------------- tokens


async def _login_all(base_url: str, usernames: list[str], password: str) -> list[str]:
    semaphore = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def login(username: str) -> str:
            async with semaphore:
                r = await http.post(
                    "/api/auth/login/", json={"username": username, "password": password}
                )
            if r.status_code != 200:
                raise RuntimeError(f"login of {username} failed: {r.status_code} {r.text}")
            return r.json()["access"]

        return list(await asyncio.gather(*(login(u) for u in usernames)))


def issue_tokens(base_url: str, usernames: list[str], password: str) -> list[str]:
    """Access tokens through POST /api/auth/login/, as clients get them."""
    return asyncio.run(_login_all(base_url, usernames, password))


async def _release_all(base_url: str, tokens: list[str]) -> int:
    semaphore = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def release(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with semaphore:
                r = await http.get(
                    "/api/users/me/holds/",
                    params={"status": "active", "page_size": 100},
                    headers=headers,
                )
                r.raise_for_status()
                refs = [h["hold_reference"] for h in r.json()["results"]]
                for ref in refs:
                    gone = await http.delete(f"/api/holds/{ref}/", headers=headers)
                    if gone.status_code not in (204, 409):  # 409: it ended meanwhile
                        raise RuntimeError(f"releasing hold {ref}: {gone.status_code}")
            return len(refs)

        return sum(await asyncio.gather(*(release(t) for t in tokens)))


def release_active_holds(base_url: str, tokens: list[str]) -> int:
    """DELETE the attendees' active holds through the API (those a hold -> checkout run
    left between its two requests), so that the next run starts with none. How many."""
    return asyncio.run(_release_all(base_url, tokens))


# ---------------------------------------------------------------- CPU accounting


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        seconds[p.pid] = t.user + t.system
    return seconds


def _postgres_backends(database: str) -> list[psutil.Process]:
    """Backends connected to the bench database (their process title names it)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or ())
        if p.info["name"] == "postgres" and f" {database} " in cmdline:
            found.append(p)
    return found


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class CpuMeter:
    """CPU seconds spent by the service's workers, the bench database's backends, the machine.

    Processes are sampled at the start and the end of a run; a backend that came and went
    in between is not counted (the new-connection count tells whether that happened).
    """

    def __init__(self, service: Service, database: str, connections: Any) -> None:
        self.service = service
        self.database = database
        self.connections = connections  # callable: sessions opened so far on the database

    def __enter__(self) -> CpuMeter:
        self.workers = self.service.worker_processes()
        self.jobs = self.service.job_worker_processes()
        self.before_jobs = _cpu_seconds(self.jobs)
        self.backends = _postgres_backends(self.database)
        self.before_workers = _cpu_seconds(self.workers)
        self.before_backends = _cpu_seconds(self.backends)
        self.before_machine = _machine_busy()
        self.before_sessions = self.connections()
        return self

    def __exit__(self, *exc: object) -> None:
        after_workers = _cpu_seconds(self.workers)
        after_jobs = _cpu_seconds(self.jobs)
        self.job_worker_cpu = sum(
            after_jobs[pid] - self.before_jobs[pid] for pid in after_jobs if pid in self.before_jobs
        )
        backends = _postgres_backends(self.database)
        after_backends = _cpu_seconds(backends)
        self.worker_cpu = sorted(
            (
                after_workers[pid] - self.before_workers.get(pid, after_workers[pid])
                for pid in after_workers
            ),
            reverse=True,
        )
        self.service_cpu = sum(self.worker_cpu)
        self.postgres_cpu = sum(
            after_backends[pid] - self.before_backends[pid]
            for pid in after_backends
            if pid in self.before_backends
        )
        self.machine_busy = _machine_busy() - self.before_machine
        self.new_connections = self.connections() - self.before_sessions

    def fill(self, result: LoadResult) -> LoadResult:
        result.service_cpu_s = self.service_cpu
        result.worker_cpu_s = self.worker_cpu
        result.job_worker_cpu_s = self.job_worker_cpu
        result.postgres_cpu_s = self.postgres_cpu
        result.machine_busy_s = self.machine_busy
        result.new_connections = self.new_connections
        return result


# ---------------------------------------------------------------- generators


def find_wrk() -> str | None:
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).split("Copyright")[0].strip()


def _run_wrk(
    wrk: str,
    base_url: str,
    *,
    script: str,
    args: list[str],
    clients: int,
    duration: float,
    threads: int | None = None,
) -> LoadResult:
    command = [
        wrk,
        "-t",
        str(threads or min(2, clients)),
        "-c",
        str(clients),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / script),
        base_url,
        "--",
        *args,
    ]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        # wait4 gives the generator's whole CPU time, however short its life.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        statuses=dict(sorted(data["statuses"].items())),
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        socket_errors={k: v for k, v in data["errors"].items() if v},
        generator_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def _run_python(
    base_url: str, *, plan: dict[str, Any], clients: int, duration: float
) -> LoadResult:
    plan = {**plan, "base_url": base_url, "clients": clients, "duration": duration}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(plan, fh)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.service", fh.name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise RuntimeError(f"python load generator failed:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return LoadResult(
        requests=data["requests"],
        seconds=data["seconds"],
        statuses=data["statuses"],
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
        socket_errors=data["socket_errors"],
        generator_cpu_s=data["cpu_s"],
    )


def _wrk_event_args(tokens_file: Path, events: list[tuple[int, int]]) -> list[str]:
    """TOKENS_FILE EV_LO EV_HI TT_OFFSET: the events are consecutive ids, and each one's
    ticket type id is its id plus one offset."""
    ev_lo, ev_hi = events[0][0], events[-1][0]
    offset = events[0][1] - events[0][0]
    assert all(tt - ev == offset for ev, tt in events)
    assert ev_hi - ev_lo + 1 == len(events)
    return [str(tokens_file), str(ev_lo), str(ev_hi), str(offset)]


class Generator:
    """wrk with the bench's Lua scripts, or the Python client of bench.loadtest without wrk."""

    def __init__(self, prefer: str = "auto") -> None:
        self.wrk = find_wrk() if prefer in ("auto", "wrk") else None
        if prefer == "wrk" and self.wrk is None:
            raise SystemExit("wrk is not installed (apt-get install -y wrk)")
        self.name = wrk_version(self.wrk) if self.wrk else "python (httpx, bench.loadtest)"

    # What each kind of load sends: its wrk script and the Python generator's mode.
    SCRIPTS = {
        # POST /api/bookings/ by a random attendee of the pool.
        "booking": ("booking.lua", "bookings"),
        # Each client an attendee of its own (client i: token i) that books in two
        # requests, over and over: POST /api/holds/, then its checkout. Counted as
        # "201 hold", "201 checkout".
        "hold": ("hold_checkout.lua", "hold_checkout"),
        # POST /api/holds/ alone, each by an attendee not used before: give more tokens
        # than the run can make holds (one active hold per attendee and event).
        "hold alone": ("hold.lua", "holds"),
    }

    def attendees(
        self,
        kind: str,
        base_url: str,
        *,
        tokens_file: Path,
        tokens: list[str],
        events: list[tuple[int, int]],
        clients: int,
        duration: float,
    ) -> LoadResult:
        """Attendees' requests of one kind (``SCRIPTS``), each for one ticket of a random
        event of ``events`` ((event id, ticket type id))."""
        script, mode = self.SCRIPTS[kind]
        if self.wrk:
            # hold_checkout.lua: one connection per thread, so that a thread's Lua state
            # is its connection's; hold.lua: the threads share out the tokens.
            threads = clients if kind == "hold" else min(2, clients)
            extra = [str(threads)] if kind == "hold alone" else []
            return _run_wrk(
                self.wrk,
                base_url,
                script=script,
                args=[*_wrk_event_args(tokens_file, events), *extra],
                clients=clients,
                duration=duration,
                threads=threads,
            )
        plan = {"mode": mode, "events": events, "tokens": tokens}
        return _run_python(base_url, plan=plan, clients=clients, duration=duration)

    def get(self, base_url: str, *, path: str, clients: int, duration: float) -> LoadResult:
        if self.wrk:
            return _run_wrk(
                self.wrk,
                base_url,
                script="get.lua",
                args=[path],
                clients=clients,
                duration=duration,
            )
        plan = {"mode": "get", "path": path}
        return _run_python(base_url, plan=plan, clients=clients, duration=duration)


# ---------------------------------------------------------------- Python generator process


def _hold_flow_key(key: int | str) -> str:
    """bench.loadtest's count of the hold flow (checkout statuses as numbers, "hold 409")
    under hold_checkout.lua's keys ("201 checkout", "409 hold")."""
    if isinstance(key, int):
        return f"{key} checkout"
    if key.startswith("hold "):
        return f"{key.removeprefix('hold ')} hold"
    return key


async def _python_load(plan: dict[str, Any]) -> dict[str, Any]:
    from bench.loadtest import Plan, Result, hammer, percentile

    clients = plan["clients"]
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=plan["base_url"], limits=limits, timeout=60) as http:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        if plan["mode"] in ("bookings", "hold_checkout"):
            load = Plan(
                events=[
                    {"id": ev, "ticket_types": [{"id": tt, "quantity": 0}]}
                    for ev, tt in plan["events"]
                ],
                tokens=plan["tokens"],
            )
            flow = "hold" if plan["mode"] == "hold_checkout" else "book"
            result = await hammer(http, load, clients=clients, duration=plan["duration"], flow=flow)
            if flow == "hold":  # counted as wrk's hold_checkout.lua counts
                result.statuses = Counter(
                    {_hold_flow_key(k): n for k, n in result.statuses.items()}
                )
                result.statuses["201 hold"] = result.holds
                result.latencies += result.hold_latencies
        else:
            result = Result()
            deadline = time.perf_counter() + plan["duration"]
            holders = iter(plan.get("tokens", ()))
            events = plan.get("events", ())

            def send() -> Any:
                if plan["mode"] == "get":
                    return http.get(plan["path"])
                event, ticket_type = random.choice(events)  # mode "holds"
                return http.post(
                    "/api/holds/",
                    json={
                        "event_id": event,
                        "items": [{"ticket_type_id": ticket_type, "quantity": 1}],
                    },
                    headers={"Authorization": f"Bearer {next(holders)}"},
                )

            async def client() -> None:
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        r = await send()
                    except httpx.HTTPError as exc:
                        result.statuses[f"error:{type(exc).__name__}"] += 1
                        continue
                    result.latencies.append(time.perf_counter() - t0)
                    result.statuses[r.status_code] += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            result.elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = [x * 1000 for x in result.latencies]
    statuses = Counter({str(k): v for k, v in result.statuses.items() if str(k)[:1].isdigit()})
    socket_errors = {str(k): v for k, v in result.statuses.items() if not str(k)[:1].isdigit()}
    return {
        "requests": len(lat),
        "seconds": result.elapsed,
        "statuses": dict(sorted(statuses.items())),
        "socket_errors": socket_errors,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_python_load(json.loads(Path(sys.argv[1]).read_text())))))
