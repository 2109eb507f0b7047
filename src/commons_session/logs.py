"""Structured logs: one JSON object per line, each carrying the id of the request it belongs to.
JSON is the default because the service's output goes to a log collector in production; a
person running it by hand may prefer ``COMMONS_SESSION_LOG_FORMAT=text``.

The request id lives in a context variable set by ``http.middleware.RequestMiddleware``, so
every line logged while a request is handled (the access line, refusals, store failures, audit
write failures) names it without being passed around. Fields given as
``extra={"fields": {...}}`` become top-level keys of the line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "flush_access_lines",
    "granian_log_config",
    "request_id",
    "write_access_line",
]

#: The id of the request being handled, or None outside a request.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal (``COMMONS_SESSION_LOG_FORMAT=text``): one readable line,
    with the same fields as the JSON line, as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields.get("event") == "access":
            line = (
                f"{fields['method']} {fields['path']}{'?' + fields['query'] if fields['query'] else ''}"
                f" {fields['status']} {fields['duration_ms']} ms"
            )
        else:
            line = record.getMessage()
            if isinstance(fields, dict):
                line += "".join(f" {k}={v}" for k, v in fields.items())
        rid = request_id.get()
        text = f"{at} {record.levelname:<7} {record.name.removeprefix('commons_session.')}: {line}"
        text += f" [{rid}]" if rid else ""
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def granian_log_config(fmt: str) -> dict[str, object]:
    """granian's own lines (start, workers, shutdown) in the same format and stream as ours,
    so the server's output is all JSON (or all text), never a mix."""
    formatter = {"()": f"{__name__}.{_FORMATTERS[fmt].__name__}"}
    handler = {"formatter": "ours", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "formatters": {"ours": formatter},
        "handlers": {"console": handler, "access": handler},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


#: Where the access line goes without the logging machinery (JSON format only), or None.
_access_fd: int | None = None
#: Access lines of this turn of the event loop, written together at its end.
_pending: list[bytes] = []


def flush_access_lines() -> None:
    """Write the pending access lines in one ``os.write`` (also at shutdown)."""
    if _pending and _access_fd is not None:
        data = b"".join(_pending)
        _pending.clear()
        while data:
            data = data[os.write(_access_fd, data) :]


def write_access_line(fields: dict[str, object]) -> bool:
    """Queue the access line, one JSON object with the keys the ``JsonFormatter`` writes, for
    one write at the end of this turn of the event loop. Measured side by side (``/healthz``,
    wrk -c64, one worker, the default log level): through ``logging`` (a LogRecord, the
    formatter, the handler's lock, a flush and a write per line) 8,600-9,100 req/s; a write per
    line 10,500, because every syscall hands the GIL to granian's threads; one write per loop
    turn 11,600-12,100; with the access log off 14,100-14,500. A worker killed mid-turn loses
    that turn's lines, never an acknowledged write. False when the format is text, or the
    stream has no descriptor: then use ``logging``."""
    if _access_fd is None:
        return False
    line = {
        "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": "commons_session.access",
        "message": "access",
        "request_id": request_id.get(),
        **fields,
    }
    _pending.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    if len(_pending) == 1:
        try:
            asyncio.get_running_loop().call_soon(flush_access_lines)
        except RuntimeError:  # no loop: write it now
            flush_access_lines()
    return True


def configure_logging(level: str, fmt: str = "json") -> None:
    global _access_fd
    handler = logging.StreamHandler()
    handler.setFormatter(_FORMATTERS[fmt]())
    root = logging.getLogger("commons_session")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    try:
        _access_fd = handler.stream.fileno() if fmt == "json" else None
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (a test's buffer)
        _access_fd = None
