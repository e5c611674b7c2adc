"""Logging: plain text or JSON lines (LOG_FORMAT), each line carrying the request id.

The access log (one line per request, logger ``uvicorn.access``, as uvicorn writes it)
is written by the observability middleware through ``log_access``: the same line and
fields, without a ``LogRecord`` and a formatter per request, which cost more CPU than
serving a cached events list. ``uvicorn --no-access-log`` or ``--log-level warning``
turns it off as before.

Lines go to standard error. When that is not a terminal (a container's log, a file, a
pipe), they are written through a buffer, as nginx's ``access_log ... buffer= flush=``
does: a warning or an error is written at once, with whatever came before it; other
lines within ``FLUSH_SECONDS``, and at exit. One ``write`` per batch instead of one
per line is most of what an access log line costs under load.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import urllib.parse
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from app.core.config import Settings

# The id of the request being served, set by the observability middleware.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"

# uvicorn's own loggers are routed through the same handler, so its lines share the
# format and the request id (its access lines are written by ``log_access`` instead).
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")

# Buffered lines reach the log within this many seconds.
FLUSH_SECONDS = 0.5
BUFFER_BYTES = 64 * 1024


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _json_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# The parts of an access line that depend on the request line and the status alone,
# by (method, path, query string, HTTP version, status): the same few requests (a list
# page, a health check) come over and over, and quoting the path and encoding these
# fields were half of what a line cost. Emptied when it reaches _REQUEST_PARTS_MAX.
_RequestKey = tuple[str, str, bytes, str, int]
_request_parts: dict[_RequestKey, tuple[str, str, str]] = {}
_REQUEST_PARTS_MAX = 4096


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return "%s:%d" % tuple(client) if client else ""  # noqa: UP031 - uvicorn's format


def _request_line(key: _RequestKey) -> tuple[str, str, str]:
    """For uvicorn's access line ``{client} - "{method} {path} HTTP/{version}" {status}``:
    the text after the client, and the same as the JSON line has it (the message's end,
    escaped, and the fields after ``client``)."""
    parts = _request_parts.get(key)
    if parts is None:
        method, raw_path, query, version, status = key
        path = urllib.parse.quote(raw_path)
        if query:
            path = f"{path}?{query.decode('ascii')}"
        after_client = f' - "{method} {path} HTTP/{version}" {status}'
        fields = {"method": method, "path": path, "http_version": version, "status": status}
        parts = (after_client, _json_text(after_client), orjson.dumps(fields).decode()[1:])
        if len(_request_parts) >= _REQUEST_PARTS_MAX:
            _request_parts.clear()
        _request_parts[key] = parts
    return parts


def _json_text(value: str) -> str:
    """``value`` as inside a JSON string (escaped, without the quotes)."""
    return orjson.dumps(value).decode()[1:-1]


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _json_time(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds (the JSON lines' ``time``); the
    date and time of day are formatted once a second."""
    second = int(created)
    if _second[0] != second:
        _second[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{int((created - second) * 1000):03d}+00:00"


_local_second: list[Any] = [None, ""]


def _text_time(created: float) -> str:
    """``logging.Formatter``'s default asctime: local time with milliseconds (the date
    and time of day formatted once a second)."""
    second = int(created)
    if _local_second[0] != second:
        _local_second[:] = [second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))]
    return f"{_local_second[1]},{int((created - second) * 1000):03d}"


class _AppHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler installed here (configuring twice replaces it).

    On a stream that is not a terminal, lines below WARNING are flushed by a timer
    thread every ``FLUSH_SECONDS`` instead of after each line.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None

    def buffer_lines(self) -> None:
        """Write through an own block buffer on the stream's file, flushed by a timer."""
        try:
            fd = os.dup(self.stream.fileno())
        except (AttributeError, OSError, ValueError):
            return  # not a file (a test's StringIO): unbuffered as before
        self.setStream(
            io.TextIOWrapper(
                io.BufferedWriter(io.FileIO(fd, "w"), BUFFER_BYTES),
                encoding="utf-8",
                errors="backslashreplace",
                write_through=False,
            )
        )
        self._timer = threading.Thread(target=self._flush_now_and_then, daemon=True)
        self._timer.start()

    def write_through(self) -> None:
        """Flush, then write each line at once (the timer stops)."""
        self._stopped.set()
        with self.lock:
            self._timer = None
            self.flush()

    def _flush_now_and_then(self) -> None:
        while not self._stopped.wait(FLUSH_SECONDS):
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._timer is None or record.levelno >= logging.WARNING:
            super().emit(record)  # written at once, with the lines buffered before it
            return
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:  # logging must never break the caller
            self.handleError(record)

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def access_line(self, scope: dict[str, Any], status: int, request_id: str) -> None:
        """The access line of a request, in this handler's format (see ``log_access``)."""
        created = time.time()
        client = _client(scope)
        key = (scope["method"], scope["path"], scope["query_string"], scope["http_version"], status)
        after_client, after_client_json, fields_json = _request_line(key)
        if isinstance(self.formatter, JsonFormatter):
            # The object orjson would write for {time, level, logger, message, request_id,
            # client, method, path, http_version, status}, in that order.
            client_json = _json_text(client)
            line = (
                f'{{"time":"{_json_time(created)}","level":"INFO","logger":"{_ACCESS_LOGGER}",'
                f'"message":"{client_json}{after_client_json}",'
                f'"request_id":"{_json_text(request_id)}","client":"{client_json}",{fields_json}'
            )
        else:
            line = (
                f"{_text_time(created)} INFO    {_ACCESS_LOGGER} [{request_id}] "
                f"{client}{after_client}"
            )
        with self.lock:
            try:
                self.stream.write(line + self.terminator)
                if self._timer is None:
                    self.stream.flush()
            except Exception:  # logging must never break the request
                self.handleError(logging.makeLogRecord({"msg": line}))


_ACCESS_LOGGER = "uvicorn.access"
_access_logger = logging.getLogger(_ACCESS_LOGGER)
# The installed handler, and whether `uvicorn --no-access-log` turned access lines off
# (decided at the first configuration, before uvicorn's own access logging is muted).
_handler: _AppHandler | None = None
_access_off: bool | None = None


def log_access(scope: dict[str, Any], status: int, request_id: str) -> None:
    """Write the access line of a finished request, unless access lines are off."""
    handler = _handler
    if handler is None or _access_off or not _access_logger.isEnabledFor(logging.INFO):
        return
    handler.access_line(scope, status, request_id)


def stop_buffering() -> None:
    """Write what is buffered and every later line at once: the process is ending."""
    if _handler is not None:
        _handler.write_through()


def configure_logging(settings: Settings) -> None:
    global _handler, _access_off
    handler = _AppHandler(sys.stderr)
    if not sys.stderr.isatty():
        handler.buffer_lines()
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AppHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    _handler = handler
    root.setLevel(settings.log_level)
    # The formats above use neither the caller's file and line nor thread or process
    # names: not looking them up saves a third of the cost of each line (the logging
    # HOWTO's "Optimization").
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    access = logging.getLogger(_ACCESS_LOGGER)
    if _access_off is None:
        # `uvicorn --no-access-log` leaves its access logger without handlers and not
        # propagating.
        _access_off = not access.propagate and not access.handlers
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Access lines come from ``log_access``: uvicorn's protocol writes none when its
    # access logger has no handler to reach (it asks ``hasHandlers()`` per connection).
    access.handlers.clear()
    access.propagate = False
