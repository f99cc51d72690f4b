"""Logging for ``prism serve``: text for people, or one JSON object per line for machines.

A JSON line carries ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``, the ``request_id`` of the API request being served when there is
one, and for the access log (``prism.api.access``) ``method``, ``path``,
``status`` and ``duration_ms``. Secrets registered with :func:`redact` (the
API token, the etcd password) are replaced by ``[redacted]`` in every line,
whatever logged them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, Literal

from prism import context

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "redact"]

_FIELDS = ("method", "path", "status", "duration_ms")
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact(secret: str | None) -> None:
    """Never let ``secret`` appear in a log line of this process again."""
    if secret:
        with _secrets_lock:
            _secrets.add(secret)


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _request_id(record: logging.LogRecord) -> str | None:
    value = getattr(record, "request_id", None)
    return value if isinstance(value, str) else context.current_request_id()


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            line["request_id"] = request_id
        for name in _FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = _request_id(record)
        record.rid = f" [{request_id}]" if request_id else ""
        return _scrub(super().format(record))


def configure_logging(fmt: Literal["text", "json"], level: str = "info") -> None:
    """Send every logger's records at ``level`` and above to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the root handler, not uvicorn's formatters
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
