"""Log lines on stderr: plain text for people, one JSON object per line for log shippers.

Call sites say what happened with a stable event name and its fields, through `ev`:

    log.warning("%s: failed: %s", server_id, error, extra=ev("server_failed", server_id=..., error=...))

The text format shows the message; the JSON format shows `ts`, `level`, `event`, `message`
and the fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any


def ev(event: str, **fields: Any) -> dict[str, Any]:
    """The `extra=` of a log call: a stable snake_case event name and its fields."""
    return {"event": event, "fields": fields}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now, so a live display can interleave log lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, verbose: int) -> None:
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("collector")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    logging.getLogger("collector.progress").setLevel(logging.INFO)
    logging.getLogger("collector.summary").setLevel(logging.INFO)
