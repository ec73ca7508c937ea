"""Structured logs: one JSON object per line, with an event name on lifecycle lines.

`event(logger, "switch_started", "…", model=…, phase=…)` logs a human message and, with
`LLMUX_LOG_FORMAT=json` (the production profile's default), a line such as
`{"ts": …, "level": "INFO", "logger": …, "event": "switch_started", "model": "a", …}`
that a log pipeline can filter on without parsing prose.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

EVENT_FIELDS = "llmux_fields"


def event(
    logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log `message` as lifecycle event `name` with its fields (model, phase, durations)."""
    logger.log(level, message, extra={"event": name, EVENT_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name:
            document["event"] = name
            document.update(getattr(record, EVENT_FIELDS, {}) or {})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class Throttle:
    """Lets a repeated message through at most once every `every` seconds (an outage
    that fails every request should not write a line per request)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True
