"""Structured logs: one JSON object per line, written by a background thread.

Request handlers only enqueue a record (no formatting, no I/O on the event loop); a
QueueListener thread formats and writes. JSON encoding escapes every control character, so
nothing a client sends can forge or break a log line.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

FIELDS: Final = ("request_id", "transaction_id", "stream_entry_id", "consumer", "entries")
_encoder: Final = msgspec.json.Encoder()
_listener: logging.handlers.QueueListener | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


class _Enqueue(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatting happens in the listener thread, not here


def configure(level: str) -> None:
    """Route every logger, Granian's included, through one JSON writer thread."""
    global _listener
    if _listener is not None:
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter())
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    atexit.register(_listener.stop)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Enqueue(records))
    root.setLevel(level)
    for name in ("_granian", "granian.access"):
        granian = logging.getLogger(name)
        granian.handlers.clear()
        granian.propagate = True


class Sparse:
    """A warning at most once per ``interval_s``, counting the ones left out: in an outage
    every request fails the same way, and one line a second says what a thousand would."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next_at = 0.0
        self._left_out = 0

    def warning(self, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._left_out += 1
            return
        self._next_at = now + self._interval_s
        if self._left_out:
            message, args = message + " (and %d more like it)", (*args, self._left_out)
            self._left_out = 0
        self._logger.warning(message, *args, exc_info=exc_info)


def flush() -> None:
    """Write out what is queued and stop the writer; Granian's forked workers end with
    os._exit, so atexit alone would drop a stopping worker's last lines."""
    global _listener
    if _listener is not None:
        atexit.unregister(_listener.stop)  # stopping twice raises
        _listener.stop()
        _listener = None


def granian_dictconfig(level: str) -> dict[str, Any]:
    """Granian's own loggers (startup, access log) as JSON lines too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }
