"""What CloudDC's answers mean: every reply is hostile until parsed here.

What servers really send is wider than the reference says (see clouddc-api.md in the shared
notes): JSON labelled `application/octet-stream`, `status` as `Running`, `processing` or
`COMPLETED`, percentages as `"30%"`, `"30"` or `30`. The parsers below accept all of that and
never mistake an unknown status for success.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.errors import (
    APIError,
    AuthError,
    NotFoundError,
    ProtocolError,
    ServerError,
    ThrottledError,
)
from collector.throttle import parse_retry_after


class ExportState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"


# Spellings seen in the reference, its examples and real exports. Matched case-insensitively.
# Anything else is UNKNOWN, which is never success.
_RUNNING = {"running", "processing", "pending", "queued", "waiting", "exporting", "in_progress", "init"}
_COMPLETED = {"completed"}
_FAILED = {"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted", "timeout"}


def parse_state(value: object) -> ExportState:
    if not isinstance(value, str):
        return ExportState.UNKNOWN
    word = value.strip().lower().replace("-", "_").replace(" ", "_")
    if word in _COMPLETED:
        return ExportState.COMPLETED
    if word in _RUNNING:
        return ExportState.RUNNING
    if word in _FAILED:
        return ExportState.FAILED
    return ExportState.UNKNOWN


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def parse_percentage(value: object) -> int | None:
    """`"30%"`, `"30"`, `30` or `30.0` -> 30, clamped to 0..100; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and (match := _PERCENT.match(value)):
        number = float(match.group(1))
    else:
        return None
    if number != number:  # NaN
        return None
    return int(min(max(number, 0.0), 100.0))


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 as the API writes it (`...+00:00` or `...Z`); None if absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ExportStatus:
    export_id: str
    state: ExportState
    status: str  # as the API spelled it, for messages
    percentage: int | None
    created_at: datetime | None

    @classmethod
    def from_body(cls, body: Any, *, operation: str, export_id: str | None = None) -> ExportStatus:
        if not isinstance(body, dict):
            raise ProtocolError(f"{operation}: expected a JSON object, got {type(body).__name__}")
        found = body.get("export_id", export_id)
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        if not isinstance(found, str) or not found:
            raise ProtocolError(f"{operation}: answer has no export_id")
        raw_status = body.get("status")
        return cls(
            export_id=found,
            state=parse_state(raw_status),
            status=str(raw_status),
            percentage=parse_percentage(body.get("percentage")),
            created_at=parse_timestamp(body.get("created_at")),
        )


def error_for(status: int, operation: str, body: bytes, headers) -> APIError:
    """The `APIError` subclass for an error answer, with whatever the body tells."""
    code = message = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = parsed.get("error_code") or parsed.get("code")
        message = parsed.get("error_msg") or parsed.get("message")
    elif body:
        message = body[:200].decode("utf-8", "replace").strip() or None
    kwargs = dict(
        operation=operation,
        error_code=str(code) if code is not None else None,
        error_msg=str(message) if message is not None else None,
        request_id=headers.get("X-Request-Id"),
    )
    if status == 429:
        return ThrottledError(status, retry_after=parse_retry_after(headers.get("Retry-After")), **kwargs)
    if status in (401, 403):
        return AuthError(status, **kwargs)
    if status == 404:
        return NotFoundError(status, **kwargs)
    if status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After")) if status == 503 else None
        return ServerError(status, retry_after=retry_after, **kwargs)
    return APIError(status, **kwargs)




# -- interim versions, to be replaced by the hardened parsers --------------------------------

_UNSAFE = frozenset("/\\")


def clean_text(text: object, limit: int = 200) -> str:
    """Server-supplied text made safe for one line of a message: escaped, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text)
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def parse_json(body: bytes, *, operation: str, request_id: str | None = None) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        where = f", request id {clean_text(request_id, 80)}" if request_id else ""
        raise ProtocolError(f"{operation}: answer is not JSON{where}") from exc


def safe_export_id(value: object, *, operation: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if (
        not isinstance(value, str) or not 0 < len(value) <= 128 or ".." in value
        or value in (".",) or any(c in _UNSAFE or not c.isprintable() or c.isspace() for c in value)
    ):
        raise ProtocolError(f"{operation}: unsafe export_id {clean_text(repr(value), 60)}")
    return value
