"""The few HTTP calls credential sources need (IAM, CCE pod identity, ECS metadata), bounded.

Each call runs under its own deadline (whatever session it is given: the run's shared session
has no total timeout, downloads need that), reads at most `max_body` bytes, never follows a
redirect (a credential must not be sent, or fetched, elsewhere) and translates aiohttp's
exceptions into `collector.errors` with `collector.net.transport`, as the API client does. Messages name the source and its host, never a
header or a body we sent.

A `SessionFactory` returns an async context manager of a `ClientSession`, entered for each
call: the default makes a small session per call (credential fetches happen once per hours,
and nothing then outlives the call); a runner that wants to share its session passes
``lambda: contextlib.nullcontext(session)``.

Proxies: each call goes through the one HTTPS_PROXY/HTTP_PROXY name for its URL unless
NO_PROXY lists the host, and never for a link-local address (the metadata service, the pod
identity agent): `collector.net.proxies.proxy_for`, passed as ``proxy=``. Sessions given here
must leave ``trust_env`` off (the default, and `default_session`'s): with it on, aiohttp would
choose a proxy itself for a call we send direct, link-local ones included, and add ~/.netrc
logins to our requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import yarl
from multidict import CIMultiDictProxy

from collector.errors import (
    APIError,
    AuthError,
    ProtocolError,
    ServerError,
    ThrottledError,
)
from collector.net.proxies import proxy_for
from collector.net.transport import auth_requests, read_bounded, translate

SessionFactory = Callable[[], AbstractAsyncContextManager[aiohttp.ClientSession]]

DEFAULT_TIMEOUT = 10.0
# IAM tokens travel in a header and are several KiB; aiohttp's default limit is 8190 bytes.
MAX_FIELD_SIZE = 64 * 1024


def default_session() -> aiohttp.ClientSession:
    """A session for one credential call: its own small pool, large enough header limit."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=DEFAULT_TIMEOUT, sock_read=DEFAULT_TIMEOUT),
        connector=aiohttp.TCPConnector(limit=2),
        max_field_size=MAX_FIELD_SIZE,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def exchange(
    session_factory: SessionFactory,
    method: str,
    url: yarl.URL,
    *,
    operation: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_body: int = 64 * 1024,
) -> Answer:
    """One request and its whole (bounded) answer, whatever the status."""
    host = url.host
    try:
        with anyio.fail_after(timeout):
            async with (
                session_factory() as session,
                session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=body,
                    allow_redirects=False,
                    proxy=proxy_for(url),
                ) as response,
            ):
                if (observe := auth_requests.get()) is not None:
                    observe("auth", response.status)
                data = await read_bounded(response, max_body, operation)
                return Answer(response.status, response.headers, data)
    except aiohttp.ClientResponseError:
        # Its request_info carries the headers we sent (a pod identity token): not kept.
        raise ProtocolError(f"{operation}: {host} sent an answer that is not valid HTTP") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = translate(exc, operation, url)
        if (observe := auth_requests.get()) is not None:
            observe("auth", error)
        raise error from exc


def status_error(operation: str, answer: Answer, *, sent: Iterable[str] = ()) -> APIError:
    """The error for a non-2xx answer of a credential source: 401/403 are `AuthError` (exit 3).

    `sent` are the secrets the request carried: a source that echoes them back in its error
    message does not get them into ours.
    """
    code, message = _error_fields(answer.body, [secret for secret in sent if secret])
    kwargs: dict[str, Any] = dict(
        operation=operation,
        error_code=code,
        error_msg=message,
        request_id=_clean(answer.headers.get("X-Request-Id") or answer.headers.get("X-IAM-Trace-Id"), 80),
    )
    if answer.status in (401, 403):
        return AuthError(answer.status, **kwargs)
    if answer.status == 429:
        return ThrottledError(answer.status, **kwargs)
    if answer.status >= 500:
        return ServerError(answer.status, **kwargs)
    if 300 <= answer.status < 400:
        kwargs["error_msg"] = "refused redirect"
    return APIError(answer.status, **kwargs)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def _error_fields(body: bytes, secrets: list[str]) -> tuple[str | None, str | None]:
    """IAM answers ``{"error": {"code", "message"}}`` or ``{"error_code", "error_msg"}``; other
    sources plain text or JSON of their own, which is then the message."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        parsed = parsed["error"]
    code = message = None
    if isinstance(parsed, dict):
        code = parsed.get("error_code", parsed.get("code"))
        message = parsed.get("error_msg", parsed.get("message"))
    if not isinstance(message, str):
        message = text[:4096]
    return _clean(code, 40, secrets), _clean(message, 200, secrets)


def _clean(value: object, limit: int, secrets: Iterable[str] = ()) -> str | None:
    """One printable line of at most `limit` characters, secrets masked before it is cut."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text[:limit] or None


def json_object(answer: Answer, operation: str) -> dict[str, Any]:
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        raise ProtocolError(f"{operation}: the answer is not JSON") from None
    if not isinstance(parsed, dict):
        raise ProtocolError(f"{operation}: the answer is not a JSON object")
    return parsed
