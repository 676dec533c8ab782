"""aiohttp's exceptions as collector's, and bounded reads: the one place both happen.

Every HTTP call of the project (the CloudDC API through `collector.clouddc.gateway`, the
archive's body in `collector.transfer.download`, the credential sources in
`collector.auth.http`) goes through `translate`, so an operator sees the same words for
the same failure wherever it happened, and every error says which kind it is: refused, DNS,
TLS (with the hint to give a CA bundle), timeout, reset.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

import aiohttp
from yarl import URL

from collector.errors import (
    CollectorError,
    ConnectionReset,
    ConnectRefused,
    NameNotResolved,
    ProtocolError,
    RequestError,
    RequestTimeout,
    TLSFailed,
)
from collector.text import clean_text

# Who hears of each request a credential source makes (`collector_requests_total{operation=
# "auth"}`): providers are built with the inventory, long before a run has metrics, so the
# runner sets this for the run's tasks instead of threading it through every provider.
auth_requests: ContextVar[Callable[[str, int | BaseException], None] | None] = ContextVar("auth_requests", default=None)


async def read_bounded(response: aiohttp.ClientResponse, limit: int, operation: str, *, cut: bool = False) -> bytes:
    """The body, at most `limit` bytes: past that a `ProtocolError`, or (`cut`) the first `limit`."""
    declared = response.content_length
    if declared is not None and declared > limit and not cut:
        raise ProtocolError(f"{operation}: answer of {declared} bytes is larger than {limit}")
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if cut:
                return b"".join(chunks)[:limit]
            raise ProtocolError(f"{operation}: answer is larger than {limit} bytes")
    return b"".join(chunks)


def translate(exc: BaseException, operation: str, url: URL | None, *, received: int | None = None) -> CollectorError:
    """aiohttp's exceptions (and timeouts) as collector's: the one place this happens.

    `received` says the failure came while reading a body, after that many bytes (a download
    cut off, or silent past the read timeout): the message says so. A body cut short
    (`aiohttp.ClientPayloadError`) is a `ConnectionReset` whichever call it ends.
    """
    return _translated(exc, operation, url, received)


def _translated(exc: BaseException, operation: str, url: URL | None, received: int | None) -> CollectorError:
    host = url.host if url is not None else None
    where = f"{host}:{url.port}" if url is not None and url.port else str(host)
    error: CollectorError
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = TLSFailed(
            f"{operation}: certificate verify failed for {host}: give a CA bundle "
            f"(tls: {{ca_bundle: PATH}} in the inventory)",
            host=host,
        )
    elif isinstance(exc, aiohttp.ClientSSLError):
        error = TLSFailed(f"{operation}: TLS handshake with {where} failed: {clean_text(str(exc))}", host=host)
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        error = NameNotResolved(f"{operation}: cannot resolve the host name {host}", host=host)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = RequestTimeout(f"{operation}: no connection to {where} within the connect timeout", host=host)
        error.sent = False
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = ConnectRefused(f"{operation}: cannot connect to {where}: {exc.strerror or exc.os_error}", host=host)
    elif isinstance(exc, TimeoutError) and received is not None:
        error = RequestTimeout(
            f"{operation}: stalled: no data from {where} within the read timeout, after {received} bytes", host=host
        )
    elif isinstance(exc, TimeoutError):
        error = RequestTimeout(f"{operation}: no answer from {where} in time", host=host)
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
        after = f" after {received} bytes" if received is not None else ""
        error = ConnectionReset(f"{operation}: connection to {where} broke{after}: {clean_text(str(exc))}", host=host)
    elif isinstance(exc, (aiohttp.InvalidURL, ValueError)):
        error = ProtocolError(f"{operation}: invalid URL: {clean_text(str(exc))}")
    else:
        error = RequestError(f"{operation}: {type(exc).__name__}: {clean_text(str(exc))}", host=host)
    return error
