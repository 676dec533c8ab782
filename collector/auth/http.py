"""The few HTTP calls credential sources need (IAM, CCE pod identity, ECS metadata), bounded.

Each call runs under its own deadline (whatever session it is given: the run's shared session
has no total timeout, downloads need that), reads at most `max_body` bytes, never follows a
redirect (a credential must not be sent, or fetched, elsewhere) and translates aiohttp's
exceptions into `collector.errors` with `collector.net.transport`, and an error status with
`collector.net.status`, as the API client does. Messages name the source and its host, never
a header or a body we sent.

A `SessionFactory` returns an async context manager of a `ClientSession`, entered for each
call: the default (`default_session`) makes a small session per call with
`collector.net.session.open_session` (credential fetches happen once per hours,
and nothing then outlives the call); a runner that wants to share its session passes
``lambda: contextlib.nullcontext(session)``.

Proxies: each call goes through the one HTTPS_PROXY/HTTP_PROXY name for its URL unless
NO_PROXY lists the host, and never for a link-local address (the metadata service, the pod
identity agent): `collector.net.proxies.proxy_for`, passed as ``proxy=``. Sessions given here
must leave ``trust_env`` off (``open_session(..., proxies=False)``, as `default_session` does):
with it on, aiohttp would choose a proxy itself for a call we send direct, link-local ones included, and add ~/.netrc
logins to our requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import yarl
from multidict import CIMultiDictProxy

from collector.errors import APIError, ProtocolError
from collector.net import status as net_status
from collector.net.proxies import proxy_for
from collector.net.session import open_session
from collector.net.transport import auth_requests, read_bounded, translate

SessionFactory = Callable[[], AbstractAsyncContextManager[aiohttp.ClientSession]]

DEFAULT_TIMEOUT = 10.0


def default_session() -> aiohttp.ClientSession:
    """A session for one credential call: its own small pool; the proxy is chosen per call."""
    return open_session(connect_timeout=DEFAULT_TIMEOUT, read_timeout=DEFAULT_TIMEOUT, connections=2, proxies=False)


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
    deadline: float = DEFAULT_TIMEOUT,
    max_body: int = 64 * 1024,
) -> Answer:
    """One request and its whole (bounded) answer, whatever the status."""
    host = url.host
    try:
        with anyio.fail_after(deadline):
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
    """The error for a non-2xx answer of a credential source: a 403 here is `AuthError` (exit 3),
    as a 401 is (`collector.net.status`: we have no credentials at all).

    `sent` are the secrets the request carried: a source that echoes them back in its error
    message does not get them into ours.
    """
    return net_status.status_error(
        answer.status, operation, answer.body, answer.headers, credential_source=True, secrets=sent
    )


def json_object(answer: Answer, operation: str) -> dict[str, Any]:
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        raise ProtocolError(f"{operation}: the answer is not JSON") from None
    if not isinstance(parsed, dict):
        raise ProtocolError(f"{operation}: the answer is not a JSON object")
    return parsed
