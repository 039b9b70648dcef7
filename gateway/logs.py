"""Structured logs: one JSON object per line, each carrying the current request id.

The request id comes from a contextvar the request middleware sets (gateway/context.py), so
any logger anywhere in a request's call tree tags its records without passing ids around.
Fields passed through ``extra=`` become top-level keys, which is how swaps and other audit
events put who/what/when into the log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from gateway.context import client_request_id_var, request_id_var

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (the gateway's id, None outside a request) and, when the
    client sent an accepted x-request-id, ``record.client_request_id`` from the contextvars."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "client_request_id"):
            client_id = client_request_id_var.get()
            if client_id is not None:
                record.client_request_id = client_id
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ["client_request_id",] ...extra, "exc"}``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in body:
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return super().format(record)


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure_logging(settings: Any, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger (and uvicorn's) through one handler: JSON when ``settings.log_json``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_talkgate", False):
            root.removeHandler(old)
    handler._talkgate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(str(settings.log_level).upper())
    logging.captureWarnings(True)  # Python warnings become records too (logger "py.warnings")
    # uvicorn installs its own handlers; let its records reach ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
