"""The access log: one line per request, in the log format, buffered, and off when asked."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.core.config import Settings
from app.core.logging import configure_logging
from tests.factories import ROOT, TEST_SECRET_KEY, wait_until_ready
from tests.redis_server import free_port


async def _lines_of_one_request(settings: Settings, log_format: str) -> tuple[str, list[str]]:
    from app.main import create_app

    app = create_app(settings.model_copy(update={"log_format": log_format}))
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if type(h).__name__ == "_AppHandler")
    handler.setStream(stream)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4567))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        ):
            r = await c.get("/health/live?probe=1", headers={"X-Request-ID": "rid-access"})
    finally:
        configure_logging(settings)
    return r.headers["x-request-id"], stream.getvalue().splitlines()


async def test_json_access_line_has_uvicorns_fields_and_the_request_id(settings: Settings) -> None:
    request_id, lines = await _lines_of_one_request(settings, "json")
    access = [json.loads(x) for x in lines if '"uvicorn.access"' in x]
    assert len(access) == 1
    [line] = access
    assert line["request_id"] == request_id == "rid-access"
    assert line["level"] == "INFO" and line["logger"] == "uvicorn.access"
    assert line["client"] == "10.1.2.3:4567" and line["method"] == "GET"
    assert line["path"] == "/health/live?probe=1" and line["status"] == 200
    assert line["message"] == '10.1.2.3:4567 - "GET /health/live?probe=1 HTTP/1.1" 200'
    assert line["time"].endswith("+00:00") and len(line["time"]) == len(
        "2026-12-01T03:20:42.511+00:00"
    )


async def test_text_access_line_has_the_text_format(settings: Settings) -> None:
    _, lines = await _lines_of_one_request(settings, "text")
    [line] = [x for x in lines if " uvicorn.access " in x]
    request = '10.1.2.3:4567 - "GET /health/live?probe=1 HTTP/1.1" 200'
    assert line.endswith(f" INFO    uvicorn.access [rid-access] {request}")


@contextmanager
def _server(
    database_url: str, log: Path, *flags: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "LOG_FORMAT": "json",
        "OUTBOX_IN_PROCESS": "false",
    }
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), *flags]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, timeout=30)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _access_ids(log: Path) -> list[str]:
    return [
        json.loads(x)["request_id"]
        for x in log.read_text().splitlines()
        if x.startswith("{") and '"uvicorn.access"' in x
    ]


def test_buffered_access_lines_reach_the_log_while_the_server_runs(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with _server(database_url, log) as (base, proc):
        httpx.get(f"{base}/health/live", headers={"X-Request-ID": "rid-live-1"})
        deadline = time.monotonic() + 10
        while "rid-live-1" not in _access_ids(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "rid-live-1" in _access_ids(log)  # flushed by the timer, server still up
        assert proc.poll() is None
        httpx.get(f"{base}/health/live", headers={"X-Request-ID": "rid-live-2"})
    assert _access_ids(log).count("rid-live-2") == 1  # and the rest at exit


def test_no_access_log_flag_turns_access_lines_off(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with _server(database_url, log, "--no-access-log") as (base, _):
        for _ in range(3):
            assert httpx.get(f"{base}/health/live").status_code == 200
    assert _access_ids(log) == []
    assert "Application startup complete" in log.read_text()  # the other lines stay


def _access_line(log_format: str, client: tuple[str, int], request_id: str) -> str:
    from app.core.logging import JsonFormatter, _AppHandler

    stream = io.StringIO()
    handler = _AppHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter())
    scope = {
        "method": "GET",
        "path": "/api/événements/",
        "query_string": b'search="jazz"\\&page=2',
        "http_version": "1.1",
        "client": client,
    }
    handler.access_line(scope, 200, request_id)
    return stream.getvalue()


def test_json_access_line_is_what_orjson_writes_for_its_fields_every_time() -> None:
    import orjson

    for client, request_id in ((("10.0.0.1", 1), "rid-1"), (("::1", 2), 'odd"id\\')):
        line = _access_line("json", client, request_id)  # the second from the cached parts
        fields = json.loads(line)
        address = f"{client[0]}:{client[1]}"
        path = '/api/%C3%A9v%C3%A9nements/?search="jazz"\\&page=2'
        expected = {
            "time": fields["time"],
            "level": "INFO",
            "logger": "uvicorn.access",
            "message": f'{address} - "GET {path} HTTP/1.1" 200',
            "request_id": request_id,
            "client": address,
            "method": "GET",
            "path": path,
            "http_version": "1.1",
            "status": 200,
        }
        assert line == orjson.dumps(expected).decode() + "\n"


def test_text_access_line_names_each_requests_own_client() -> None:
    path = '/api/%C3%A9v%C3%A9nements/?search="jazz"\\&page=2'
    for client in (("10.0.0.1", 1), ("10.0.0.2", 2)):
        line = _access_line("text", client, "rid")
        assert line.endswith(
            f' INFO    uvicorn.access [rid] {client[0]}:{client[1]} - "GET {path} HTTP/1.1" 200\n'
        )
