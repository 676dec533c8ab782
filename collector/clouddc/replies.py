"""What CloudDC's answers mean: every reply is hostile until parsed here.

What servers really send is wider than the reference says (see clouddc-api.md in the shared
notes): JSON labelled `application/octet-stream`, `status` as `Running`, `processing` or
`COMPLETED`, percentages as `"30%"`, `"30"` or `30`. The parsers below accept all of that and
never mistake an unknown status for success.

They are also the boundary against answers that are merely odd, or built to hurt: every
function here returns a typed, bounded value or raises `ProtocolError`, nothing else, and none
does more than linear work in what it is given.

- `parse_json` is the one JSON decoder for API answers: size, nesting, numbers and strings
  are bounded before anything downstream sees them.
- `safe_export_id` admits an export id only if it stays one path segment in a URL.
- `clean_text` (`collector.text`) is how server text (error messages, status spellings, header values) gets
  into our messages: control and format characters escaped, length capped.
- `parse_percentage` and `parse_timestamp` give None for what they cannot read, and only
  values that later arithmetic cannot trip over.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.config.names import segment_problem
from collector.errors import (
    ProtocolError,
)
from collector.net.status import MAX_CODE_CHARS
from collector.text import clean_text, kind_of, quoted


class ExportState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"


# -- JSON ------------------------------------------------------------------------------------

MAX_JSON_BYTES = 1024 * 1024  # a status answer is ~100 bytes; an error page a few KiB
MAX_JSON_DEPTH = 32  # the answers are flat objects; json's C scanner recurses per level
MAX_NUMBER_CHARS = 40  # as written, sign and exponent included; ids and percentages are short

_TO_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Cheap pre-check for an escaped UTF-16 surrogate (`\ud800`): only then are strings walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """Raised by the decoder's hooks; becomes a `ProtocolError` in `parse_json`."""


def parse_json(body: bytes, *, operation: str, request_id: str | None = None) -> object:
    """Decode an API answer's JSON, refusing anything unbounded, with `ProtocolError` only.

    Refused: more than `MAX_JSON_BYTES`, invalid UTF-8, nesting deeper than
    `MAX_JSON_DEPTH`, a number longer than `MAX_NUMBER_CHARS` or not finite (`1e400`,
    `NaN`, `Infinity`), and a lone UTF-16 surrogate escaped in any string (it would fail
    later, when the id is written to the journal or a log). `request_id`, the answer's
    X-Request-Id, goes into the message for the API's support to trace.
    """

    def refused(problem: str) -> ProtocolError:
        where = f" (request id {clean_text(request_id, MAX_CODE_CHARS)})" if request_id else ""
        return ProtocolError(f"{operation}: answer {problem}{where}")

    body = bytes(body)
    if len(body) > MAX_JSON_BYTES:
        raise refused(f"is larger than {MAX_JSON_BYTES} bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise refused(f"is not UTF-8 (byte {exc.start})") from None
    if not _depth_within(body, MAX_JSON_DEPTH):
        raise refused(f"is not JSON, or nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise refused(f"has {exc}") from None
    except json.JSONDecodeError as exc:
        raise refused(f"is not JSON ({exc.msg} at character {exc.pos})") from None
    except (ValueError, RecursionError) as exc:  # not expected after the checks above
        raise refused(f"is not usable JSON ({type(exc).__name__})") from None
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(value):
        raise refused("has a string with a lone UTF-16 surrogate")
    return value


def _depth_within(body: bytes, limit: int) -> bool:
    """Whether the brackets of `body`, outside strings, nest at most `limit` deep.

    Without recursion, and in C-speed passes over bytes (UTF-8 continuation bytes are never
    ASCII, so bytes are enough): drop escaped backslashes, then escaped quotes, then every
    string (the odd pieces between quotes), then everything but brackets, with both kinds
    made one. Each `replace` pass then removes exactly the innermost level of pairs; what is
    left after `limit` passes nested deeper, or was unbalanced, which is not JSON anyway.
    Where the text stops being JSON, json stops reading, and the text before agrees with
    this view of it, so json never nests deeper than this allows. Costs: see
    benchmarks/parse_json.py; an answer with few brackets skips it after two counts.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return True
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(plain.split(b'"')[::2]).translate(_TO_SQUARE, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return True
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return not brackets


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"a number out of range ({text})")
    return value


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name}, which is not a JSON number")


# One decoder for every answer: `json.loads` with hooks would build a new one per call, which
# cost more than decoding a status answer (benchmarks/parse_json.py).
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)


def _has_surrogate(value: object) -> bool:
    """Whether any string in `value`, key or value, holds a UTF-16 surrogate. No recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# -- the fields of a status answer ---------------------------------------------------------

# Spellings seen in the reference, its examples and real exports. Matched case-insensitively.
# Anything else is UNKNOWN, which is never success.
_RUNNING = {"running", "processing", "pending", "queued", "waiting", "exporting", "in_progress", "init"}
_COMPLETED = {"completed"}
_FAILED = {"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted", "timeout"}
_MAX_STATE_CHARS = 64


def parse_state(value: object) -> ExportState:
    if not isinstance(value, str) or len(value) > _MAX_STATE_CHARS:
        return ExportState.UNKNOWN
    word = value.strip().lower().replace("-", "_").replace(" ", "_")
    if word in _COMPLETED:
        return ExportState.COMPLETED
    if word in _RUNNING:
        return ExportState.RUNNING
    if word in _FAILED:
        return ExportState.FAILED
    return ExportState.UNKNOWN


_MAX_PERCENT_CHARS = 32  # "  99.999999 %  " and then some


def parse_percentage(value: object) -> int | None:
    """`"30%"`, `"30"`, `30` or `30.0` -> 30, clamped to 0..100; anything else -> None.

    Strings are read with plain string operations, no regex: a long value costs one look at
    its length. Numbers of any size clamp; NaN and non-ASCII digits give None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return min(max(value, 0), 100)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(min(max(value, 0.0), 100.0))
    if not isinstance(value, str) or len(value) > _MAX_PERCENT_CHARS:
        return None
    text = value.strip()
    if text.endswith("%"):
        text = text[:-1].rstrip()
    whole, dot, fraction = text.partition(".")
    if not _ascii_digits(whole) or (dot and not _ascii_digits(fraction)):
        return None
    return min(int(whole), 100)  # the fraction never changes the whole percent, which we keep


def _ascii_digits(text: str) -> bool:
    # str.isdigit alone admits "²" and "٣", which int() refuses or reads differently.
    return text.isascii() and text.isdigit()


EARLIEST_YEAR = 2000
LATEST_YEAR = 2100
_MAX_TIMESTAMP_CHARS = 64


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 as the API writes it (`...+00:00` or `...Z`), in UTC; None if unusable.

    Only years `EARLIEST_YEAR`..`LATEST_YEAR` are believed: anything else is a placeholder
    (`0001-01-01`) or garbage, and near the ends of datetime's range arithmetic on it
    overflows. A timestamp without an offset is taken as UTC, as every one the API documents
    is: reading it as the collector host's local time would make the poll schedule depend on
    where the collector runs.
    """
    if not isinstance(value, str) or len(value) > _MAX_TIMESTAMP_CHARS:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except (ValueError, OverflowError):
        return None
    if not EARLIEST_YEAR <= when.year <= LATEST_YEAR:  # also keeps astimezone() from overflowing
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when if EARLIEST_YEAR <= when.year <= LATEST_YEAR else None


# -- export ids --------------------------------------------------------------------------------

MAX_EXPORT_ID_CHARS = 128
_MAX_INT_ID_BITS = 420  # 2**420 has 127 digits: str() of anything larger is refused unread


def safe_export_id(value: object, *, operation: str | None = None) -> str:
    """`value` as an export id that stays one path segment, or `ProtocolError` saying why not.

    The id goes into `.../exports/{export_id}/content` with our token. yarl resolves `..`
    and `.` segments and splits on `/`, so `"../../x"` would send the token to another path.
    Refused: anything but a string or integer; empty or longer than `MAX_EXPORT_ID_CHARS`;
    slashes and backslashes; `.` alone or `..` anywhere; whitespace; control characters
    (C0, DEL, C1), format characters (bidi overrides, zero-width), surrogates, private-use
    and unassigned code points.
    """
    prefix = f"{operation}: " if operation else ""
    problem = _export_id_problem(value)
    if problem:
        raise ProtocolError(f"{prefix}unsafe export_id {quoted(value)}: {problem}")
    return value if isinstance(value, str) else str(value)


def _export_id_problem(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_INT_ID_BITS:
            return f"it is longer than {MAX_EXPORT_ID_CHARS} characters"
        value = str(value)
    if not isinstance(value, str):
        return f"it is {kind_of(value)}, not a string"
    return segment_problem(value, max_chars=MAX_EXPORT_ID_CHARS, strict=True)


# -- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportStatus:
    export_id: str  # checked by `safe_export_id`
    state: ExportState
    status: str  # as the API spelled it, cleaned for messages
    percentage: int | None
    created_at: datetime | None  # UTC, years 2000..2100

    @classmethod
    def from_body(cls, body: Any, *, operation: str, export_id: str | None = None) -> ExportStatus:
        """The status in a decoded answer; `export_id` stands in where the answer has none."""
        if not isinstance(body, dict):
            raise ProtocolError(f"{operation}: expected a JSON object, got {kind_of(body)}")
        found = body.get("export_id", export_id)
        if found is None:
            raise ProtocolError(f"{operation}: answer has no export_id")
        raw_status = body.get("status")
        return cls(
            export_id=safe_export_id(found, operation=operation),
            state=parse_state(raw_status),
            status=clean_text(raw_status, _MAX_STATE_CHARS),
            percentage=parse_percentage(body.get("percentage")),
            created_at=parse_timestamp(body.get("created_at")),
        )
