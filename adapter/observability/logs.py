"""Log lines: text for a terminal, or one JSON object a line for a log collector.

The JSON lines come from python-json-logger, the stdlib ``logging`` formatter the ecosystem uses:
every module keeps logging through ``logging.getLogger(...)`` as it does, so the format is one
setting here and nothing else changes (structlog would have asked every call site to change for
no gain). Each line has ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and ``event`` (the
message); the access line (``access.py``) adds its fields at the top level.

In text form the same fields follow the message as ``key=value``; a value that is not plain
(spaces, quotes, control characters, a caller's newline) is written as a JSON string, so no value
can forge a line or a field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from adapter.config import LogSettings

__all__ = ["FIELDS", "configure_logging", "json_line"]

FIELDS = (
    "rpc",
    "merchant",
    "caller",
    "code",
    "reason",
    "attempts",
    "http_status",
    "duration_ms",
    "correlation_id",
    "trace_id",
    "status_message",
    "worker",
)
"""The access line's fields, in the order a text line shows them; ``worker`` is on every line a
worker process of ``serve --workers N`` writes."""
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class TextFormatter(logging.Formatter):
    """``asctime level logger message``, then any access fields as ``key=value``."""

    def __init__(self, fields: Iterable[str] = FIELDS) -> None:
        super().__init__(_TEXT_FORMAT)
        self._fields = tuple(fields)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [
            f"{name}={_text_value(value)}"
            for name in self._fields
            if (value := record.__dict__.get(name)) is not None
        ]
        return f"{line} {' '.join(pairs)}" if pairs else line


def _text_value(value: object) -> str:
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def json_formatter() -> logging.Formatter:
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``event``, then the extra fields."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger", "message": "event"},
        timestamp="ts",
        json_ensure_ascii=False,
    )


def json_line(
    message: str,
    fields: Mapping[str, object] | None = None,
    *,
    level: int = logging.INFO,
    logger: str = "adapter.cli",
) -> str:
    """One line as ``json_formatter`` writes it, for what the command prints rather than logs
    (the start banner, a start-up error), so that in JSON form every line the process writes
    is an object of one shape.

    >>> json.loads(json_line("ready", {"address": "127.0.0.1:0"}))["address"]
    '127.0.0.1:0'
    """
    record = logging.LogRecord(logger, level, "", 0, message, None, None)
    record.__dict__.update(fields or {})
    return json_formatter().format(record)


class _Worker(logging.Filter):
    """Marks every record with the worker's number, so that lines say which process wrote them."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


def configure_logging(
    settings: LogSettings, stream: TextIO | None = None, *, worker: int | None = None
) -> None:
    """Every log line of the process, at ``settings.level``, in ``settings.format``, on stderr;
    each with a ``worker`` field when ``worker`` (1 to N) is given."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if settings.format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
