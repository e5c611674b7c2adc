"""Request ids, logs and Prometheus metrics."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from app.core.logging import JsonFormatter, RequestIdFilter, configure_logging
from tests.factories import ROOT


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def requests_total(text: str, route: str, method: str = "GET", status: str = "200") -> float:
    key = ("http_requests_total", (("method", method), ("route", route), ("status", status)))
    return samples(text).get(key, 0.0)


async def test_request_id_is_generated_and_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live")
    generated = r.headers["x-request-id"]
    assert len(generated) == 32
    assert (await client.get("/health/live")).headers["x-request-id"] != generated
    r = await client.get("/health/live/", headers={"X-Request-ID": "abc.DEF-123_x"})
    assert r.headers["x-request-id"] == "abc.DEF-123_x"


async def test_insane_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    for bad in ("a" * 129, "has space", "semi;colon", ""):
        r = await client.get("/health/live", headers={"X-Request-ID": bad})
        assert r.headers["x-request-id"] != bad
        assert len(r.headers["x-request-id"]) == 32


async def test_error_responses_carry_the_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/nowhere/", headers={"X-Request-ID": "trace-404"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "trace-404"


async def test_500_has_the_request_id_in_header_and_body(settings: Settings) -> None:
    from app.main import create_app

    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        r = await c.get("/boom", headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "trace-500"
    assert "trace-500" in r.json()["detail"]
    assert "kaboom" not in r.text


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    await client.get("/api/events/424242/")
    await client.get("/api/events/434343")
    await client.get("/api/no/such/route/1")
    await client.get("/api/no/such/route/2")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert "/api/events/424242" not in after
    route = "/api/events/{event_id}"
    assert (
        requests_total(after, route, status="404") - requests_total(before, route, status="404")
        == 2
    )
    assert (
        requests_total(after, "<unmatched>", status="404")
        - requests_total(before, "<unmatched>", status="404")
        == 2
    )
    assert f'http_request_duration_seconds_count{{method="GET",route="{route}"}}' in after


async def test_metrics_report_pool_and_domain_counters(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    text = (await client.get("/metrics")).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "http_requests",
        "http_request_duration_seconds",
        "bookings_created",
        "bookings_cancelled",
        "db_pool_connections_in_use",
        "db_pool_size",
    } <= names
    assert samples(text)[("db_pool_size", ())] == settings.db_pool_size


async def test_conflicts_are_counted_by_code(client: httpx.AsyncClient) -> None:
    from app.core.metrics import record_conflict

    key = ("booking_conflicts_total", (("code", "sold_out"),))
    before = samples((await client.get("/metrics")).text).get(key, 0.0)
    record_conflict("sold_out", 409)
    record_conflict("validation_error", 422)
    after = samples((await client.get("/metrics")).text)
    assert after[key] == before + 1
    assert ("booking_conflicts_total", (("code", "validation_error"),)) not in after


def _record(message: str, name: str = "app.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


def test_json_log_lines_carry_the_request_id() -> None:
    from app.core.logging import request_id_var

    token = request_id_var.set("rid-42")
    try:
        record = _record("hello %s")
        record.args = ("world",)
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello world"
    assert line["request_id"] == "rid-42"
    assert line["level"] == "INFO" and line["logger"] == "app.test"


async def test_logs_inside_a_request_have_its_id(settings: Settings) -> None:
    from app.main import create_app

    app = create_app(settings.model_copy(update={"log_format": "json"}))
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if type(h).__name__ == "_AppHandler")
    handler.setStream(stream)

    @app.get("/log", include_in_schema=False)
    async def log() -> dict[str, str]:
        logging.getLogger("app.test").warning("inside the request")
        return {}

    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        ):
            await c.get("/log", headers={"X-Request-ID": "rid-in-log"})
    finally:
        configure_logging(settings)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    inside = [line for line in lines if line["message"] == "inside the request"]
    assert inside and inside[0]["request_id"] == "rid-in-log"


def test_metrics_are_shared_between_worker_processes(tmp_path, database_url: str) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a scrape sums the counters of every process."""
    script = "from app.core import metrics\nmetrics.record_request('GET', '/api/x', 200, 0.01)\n"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True)
    scrape = (
        "import asyncio\n"
        "from app.core import metrics\n"
        "from prometheus_client import CollectorRegistry\n"
        "endpoint = metrics.metrics_endpoint(CollectorRegistry())\n"
        "print(asyncio.run(endpoint(None)).body.decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape], cwd=ROOT, env=env, check=True, capture_output=True
    ).stdout.decode()
    assert requests_total(out, "/api/x") == 2
