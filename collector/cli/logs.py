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
import math
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

MESSAGE_LIMIT = 2000  # characters of a rendered message, after escaping
FIELD_LIMIT = 500  # characters of one string field
TRACEBACK_LIMIT = 8000  # characters of a traceback; its end is where the error is
ITEMS_LIMIT = 50  # entries of a list or mapping field

# Control characters (C0, DEL, C1), bidi controls, line and paragraph separators, and lone
# surrogates (which cannot even be encoded): everything that can move the cursor, colour the
# terminal, reorder what a reader sees, start a new line, or break the encoder.
_UNSAFE_CHARS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_PIECES = re.compile(f"[{_UNSAFE_CHARS}]|[^{_UNSAFE_CHARS}]+")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Every event name a call site may pass to `ev`, with who logs it, at what level, and its
# fields; tests/test_logs.py holds the code to it. Common fields, wherever they apply:
# project_id, server_id, export_id, endpoint, attempt, wait_s, error (the full message),
# error_kind (the error's `kind`), status, error_code, request_id, bytes, reason.
EVENTS: dict[str, str] = {
    "log": "any record made without `ev`; has `logger`",
    "run_started": "runner, collector.run, info: servers, projects, endpoints, collected_earlier, output, "
                   "resumed, concurrency, downloads, rate, version",
    "cleartext_endpoint": "runner, collector.run, warning, an http:// endpoint: endpoint",
    "proxy": "proxies, info, a proxy from the environment: scheme (of the requests it takes), proxy (its URL, "
             "login masked)",
    "netrc_default": "proxies, warning, a proxy is set and netrc has a default entry: path",
    "progress": "collector.observe.progress, info: see progress.Snapshot.fields",
    "summary": "runner through report.emit_summary, collector.summary, info: see report.summary_record",
    "run_stopping": "runner, collector.run, warning, first signal: reason (SIGTERM), wait_s (the grace)",
    "run_cancelled": "runner, collector.run, warning, second signal or grace over: reason",
    "run_crashed": "runner, collector.run, error, JSON logs only, a bug ended the run (exit 70): error, crash_file",
    "retry": "sweep on_retry, info: project_id, server_id, export_id, endpoint, operation, attempt, wait_s, "
             "error, error_kind, status, error_code, request_id",
    "export_renewed": "sweep, info, a 404 for a known export: project_id, server_id, export_id, error, status, "
                      "request_id",
    "server_collected": "sweep, info: project_id, server_id, export_id, bytes, attempt, duration_s",
    "server_skipped": "sweep, debug, collected by an earlier run: project_id, server_id, bytes",
    "archive_recollected": "sweep, warning, an earlier archive is missing or changed: project_id, server_id, reason",
    "server_failed": "sweep, warning: project_id, server_id, export_id, endpoint, attempt, error, error_kind, "
                     "status, error_code, request_id, reason",
    "internal_error": "sweep, error, with exc_info: project_id, server_id, error",
    "credentials_rejected": "sweep, error, the run stops: project_id, endpoint, status, error_code, request_id, error",
    "endpoint_unreachable": "endpoint, warning, never answered yet; probing: endpoint, error, reason (its kind)",
    "endpoint_outage": "endpoint, warning, answered before, stopped; probing: endpoint, error, reason (its kind)",
    "endpoint_recovered": "endpoint, warning, answers again: endpoint, wait_s (how long it did not)",
    "endpoint_given_up": "endpoint, error, its servers stay pending: endpoint, reason",
    "download_restarted": "download, info, a resume was refused: project_id, server_id, export_id, status, bytes",
    "file_name_ignored": "download, warning: project_id, server_id, reason (the name the server suggested)",
    "journal_failed": "journal, error: error, reason",
    "servers_discovered": "prepare, collector.run, info: project_id, endpoint, servers (listed by the API), "
                          "chosen (by discover:)",
    "discovery_failed": "prepare, collector.run, error: project_id, endpoint, error, error_kind",
    "tls_unverified": "runner, collector.run, warning, every run: endpoint",
    "credentials_found": "prepare, collector.run, info, no auth in the inventory: source (kind and where)",
    "metrics_failed": "metrics, warning, once per file or push: destination (path, or URL without credentials), "
                      "error, error_kind, status",
}

# The keys every JSON line starts with; a field of the same name is renamed, never lost.
_RESERVED = frozenset({"ts", "level", "event", "message", "logger", "traceback", "stack"})


def ev(event: str, **fields: Any) -> dict[str, Any]:
    """The `extra=` of a log call: a stable snake_case event name and its fields."""
    return {"event": event, "fields": fields}


def _escape_char(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, limit: int = FIELD_LIMIT) -> str:
    """`text` safe to show: unsafe characters escaped (`\\x1b`, `\\n`, `\\u202e`), at most
    `limit` characters of it, and a note of how much was cut."""
    if len(text) <= limit and not _UNSAFE.search(text):
        return text  # the common case, kept cheap
    head = text[: limit + 1]  # never look at more than we may keep
    out: list[str] = []
    used = taken = 0
    for piece in _PIECES.findall(head):
        plain = not _UNSAFE.match(piece)
        rendered = piece if plain else _escape_char(piece)
        if used + len(rendered) > limit:
            if plain:  # a run of plain text: keep what fits
                out.append(piece[: limit - used])
                taken += limit - used
            break  # an escape that does not fit is left out whole, never cut in half
        out.append(rendered)
        used += len(rendered)
        taken += len(piece)
    else:
        return "".join(out)  # all of it fitted (so `head` was all of `text`)
    return "".join(out) + f"... [{len(text) - taken} more characters]"


def _clean_block(text: str, limit: int = TRACEBACK_LIMIT) -> str:
    """A multi-line text (a traceback): each line cleaned, newlines kept, at most `limit`
    characters, cut at the start: a traceback's end is where the error is."""
    lines = [clean(line, MESSAGE_LIMIT) for line in text[-4 * limit :].split("\n")]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > limit:
            kept.append("[the start is cut]")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def clean_value(value: Any, limit: int = FIELD_LIMIT, depth: int = 0) -> Any:
    """A field's value as JSON can hold it, every string in it cleaned and bounded."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # Python will not even print a 5,000-digit one
        return value if value.bit_length() <= 64 else f"<a {value.bit_length()}-bit integer>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    if isinstance(value, str):
        return clean(value, limit)
    if depth < 3 and isinstance(value, Mapping):
        items = list(value.items())
        cleaned = {clean(str(k), 64): clean_value(v, limit, depth + 1) for k, v in items[:ITEMS_LIMIT]}
        if len(items) > ITEMS_LIMIT:
            cleaned["more_items"] = len(items) - ITEMS_LIMIT
        return cleaned
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        cleaned_list = [clean_value(v, limit, depth + 1) for v in items[:ITEMS_LIMIT]]
        if len(items) > ITEMS_LIMIT:
            cleaned_list.append(f"... [{len(items) - ITEMS_LIMIT} more items]")
        return cleaned_list
    return clean(str(value), limit)  # an exception, a Path, an enum: as people read it


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception as exc:  # a bad format string must not cost the record, or add lines
        text = f"{record.msg!r} {record.args!r} (unformattable: {type(exc).__name__})"
    return clean(text, MESSAGE_LIMIT)


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
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {_message(record)}"
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "\n" + "\n".join("    " + part for part in _clean_block(block).split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, ASCII only."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # logging's own error report would be lines of plain text
            return json.dumps({"ts": None, "level": "error", "event": "log", "logger": "collector.cli.logs",
                               "message": f"could not format a log record: {type(exc).__name__}"})

    def _format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc)
        entry: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "event": event_of(record),
            "message": _message(record),
        }
        if "event" not in record.__dict__:
            entry["logger"] = clean(record.name, 100)  # where a record without an event came from
        for key, value in fields_of(record).items():
            key = clean(str(key), 64)
            entry[f"field_{key}" if key in _RESERVED else key] = clean_value(value)
        if record.exc_info:
            entry["traceback"] = _clean_block(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = _clean_block(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now, so a live display can interleave log lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
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
    for name in ("collector.run", "collector.observe.progress", "collector.summary"):
        logging.getLogger(name).setLevel(logging.INFO)
