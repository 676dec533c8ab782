"""Log lines on stderr: plain text for people, one JSON object per line for log shippers.

Call sites say what happened with a stable event name and its fields, through `ev`:

    log.warning("%s: failed: %s", server_id, error, extra=ev("server_failed", server_id=..., error=...))

The text format shows the time, level and message. The JSON format writes one object per
record, on one line: `ts` (RFC 3339, UTC, milliseconds), `level`, `event`, `message`, then
the fields; a record made without `ev` has the event "log" and its logger's name.

Much of what we log came from a server (error messages, ids, headers). A terminal obeys
escape sequences and bidi controls, and a log pipeline splits on newlines, so the
formatters, not the call sites, escape and bound every message and string field: no call
site can forget, and no record can become two lines or a megabyte.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from collector.text import LINE_LIMIT, MESSAGE_LIMIT, clean, clean_block, clean_value, one_line

# The keys every JSON line starts with; a field of the same name is renamed, never lost.
_RESERVED = frozenset({"ts", "level", "event", "message", "logger", "traceback", "stack"})


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a bad format string must not cost the record, or add lines
        return f"{record.msg!r} {record.args!r} (unformattable: {type(exc).__name__})"


def _message(record: logging.LogRecord) -> str:
    return clean(_text(record), MESSAGE_LIMIT)


def event_of(record: logging.LogRecord) -> str:
    event = getattr(record, "event", None)
    return clean(event, 64) if isinstance(event, str) and event else "log"


def fields_of(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class TextFormatter(logging.Formatter):
    """`12:03:04 WARNING p1/S1: failed: ...`: one line per record; a traceback follows on
    indented lines, so a continuation can never pass for a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} "
        line = head + one_line(_text(record), LINE_LIMIT - len(head))  # a person reads it: one bounded line
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "\n" + "\n".join("    " + part for part in clean_block(block).split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, ASCII only."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # noqa: BLE001 - logging's own error report would be lines of plain text
            return json.dumps(
                {
                    "ts": None,
                    "level": "error",
                    "event": "log",
                    "logger": "collector.cli.logs",
                    "message": f"could not format a log record: {type(exc).__name__}",
                }
            )

    def _format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "event": event_of(record),
            "message": _message(record),
        }
        if "event" not in record.__dict__:
            entry["logger"] = clean(record.name, 100)  # where a record without an event came from
        for name, value in fields_of(record).items():
            key = clean(str(name), 64)
            entry[f"field_{key}" if key in _RESERVED else key] = clean_value(value)
        if record.exc_info:
            entry["traceback"] = clean_block(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = clean_block(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is now, so a live display can interleave log lines."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(log_format: str, verbose: int) -> None:
    """Our records at the level `-v` asks for; other libraries' warnings (asyncio, aiohttp)
    through the same formatter, so stderr holds nothing else in JSON mode."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    ours = logging.getLogger("collector")
    ours.handlers[:] = [handler]
    ours.propagate = False
    ours.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _StderrHandler)] + [handler]
    # Whatever -v says, the run's beginning, progress, stops and end are shown.
    for name in ("collector.run", "collector.progress", "collector.summary"):
        logging.getLogger(name).setLevel(logging.INFO)
