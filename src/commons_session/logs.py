"""Structured logs: one JSON object per line, each carrying the id of the request it belongs to.
JSON is the default because the service's output goes to a log collector in production; a
person running it by hand may prefer ``COMMONS_SESSION_LOG_FORMAT=text``.

The request id lives in a context variable set by ``http.middleware.AccessLogMiddleware``, so
every line logged while a request is handled (the access line, refusals, store failures, audit
write failures) names it without being passed around. Fields given as
``extra={"fields": {...}}`` become top-level keys of the line.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "granian_log_config", "request_id"]

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


def configure_logging(level: str, fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_FORMATTERS[fmt]())
    root = logging.getLogger("commons_session")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
