"""An HTTP error status as collector's error: the one mapping, for every HTTP call we make.

The CloudDC API (`collector.clouddc.gateway`) and the credential sources (IAM, pod identity,
the metadata service: `collector.auth.http`) both come here. They differ in one place, on
purpose, and say which they are with `credential_source`:

- **403 from the API**: the credentials are good, but may not do this (a policy, another
  project's server): `Forbidden`, which fails that server; the others go on (README,
  *Credentials*).
- **403 from a credential source** (IAM refusing a locked user, a metadata service refusing
  the agency): we have no credentials at all, as with a 401: `AuthError`, exit 3.

Everything else is the same for both: 401 `AuthError`, 404 `NotFoundError`, 429
`ThrottledError` and 5xx `ServerError` (with the `Retry-After` they gave; for a 503 only when
it says when to come back), a redirect "refused" (we never follow one), the rest `APIError`.

The body only adds detail, and is hostile: its code and message are read from
``{"error_code", "error_msg"}`` (CloudDC, the API gateway), ``{"code", "message"}`` or
``{"error": {...}}`` (IAM), ``{"error": "..."}`` (the metadata service), else the text
itself; `secrets` the request carried are masked before anything is cut or cleaned
(`collector.text.clean_text`), so a source that echoes them back does not get them into our
messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from collector.control.throttle import parse_retry_after
from collector.errors import APIError, AuthError, Forbidden, NotFoundError, ServerError, ThrottledError
from collector.text import clean_text

MAX_CODE_CHARS = 64  # error_code and request id: short tokens, shown in every summary line
MAX_MESSAGE_CHARS = 200
_MASK = "***"


def status_error(
    status: int,
    operation: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    credential_source: bool = False,
    secrets: Iterable[str] = (),
) -> APIError:
    """The `APIError` for an answer with this non-2xx `status`. Never raises."""
    masked = [secret for secret in secrets if secret]
    code, message = _error_fields(body)
    error_code = _shown(code, MAX_CODE_CHARS, masked)
    error_msg = "refused redirect" if 300 <= status < 400 else _shown(message, MAX_MESSAGE_CHARS, masked)
    request_id = _shown(headers.get("X-Request-Id") or headers.get("X-IAM-Trace-Id"), MAX_CODE_CHARS, [])
    retry_after = headers.get("Retry-After")
    if status == 429:
        return ThrottledError(
            status,
            operation=operation,
            error_code=error_code,
            error_msg=error_msg,
            request_id=request_id,
            retry_after=parse_retry_after(retry_after),
        )
    if status >= 500:
        return ServerError(
            status,
            operation=operation,
            error_code=error_code,
            error_msg=error_msg,
            request_id=request_id,
            retry_after=parse_retry_after(retry_after) if status == 503 else None,
        )
    kind = APIError
    if status == 401 or (status == 403 and credential_source):
        kind = AuthError
    elif status == 403:
        kind = Forbidden
    elif status == 404:
        kind = NotFoundError
    return kind(status, operation=operation, error_code=error_code, error_msg=error_msg, request_id=request_id)


def _error_fields(body: bytes) -> tuple[object, object]:
    """(code, message) as the body gives them, unchecked; the text itself if it is not JSON."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        parsed = parsed["error"]
    if not isinstance(parsed, dict):
        return None, text or None
    code = parsed.get("error_code") or parsed.get("code")
    message = parsed.get("error_msg") or parsed.get("message") or parsed.get("error")
    return code, message if isinstance(message, str) else text


def _shown(value: object, limit: int, secrets: list[str]) -> str | None:
    """`value` as one clean line of at most `limit` characters, `secrets` masked first."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return clean_text(text, limit) or None
