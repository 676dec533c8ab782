"""The three CloudDC calls, and what their answers mean.

`CloudDC` is a thin client for one (endpoint, project): `export()`, `status()` and
`open_archive()`. Every call passes the endpoint's shared `RateLimiter`; the JSON calls are
retried here under the one `RetryPolicy`; downloads are retried by `collector.download`,
which knows about partial files. aiohttp's exceptions become `collector.errors` here, and
nowhere else.

What the answers mean is decided in `collector.replies`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from collector.credentials import Credentials
from collector.errors import APIError, AuthError, ProtocolError, RequestError, ThrottledError
from collector.replies import ExportStatus, error_for
from collector.throttle import RateLimiter, RetryPolicy, retrying

EXPORT = "ExportServerLogs"
STATUS = "ShowLogsExportStatus"
DOWNLOAD = "DownloadServerLogs"

MAX_REDIRECTS = 5

OnRetry = Callable[[BaseException, int, float], None]

# Who goes first when requests queue for the endpoint's rate: a download holds one of few
# transfer slots and finishes a server; an export starts work on the server's side; a poll
# only asks whether that work is done.
_PRIORITY = {DOWNLOAD: 0, EXPORT: 1, STATUS: 2}


@dataclass
class CallStats:
    """What the client sent and what it got back; read by progress and report."""

    requests: int = 0
    throttled: int = 0
    retries: int = 0
    bytes_downloaded: int = 0


@dataclass
class ArchiveResponse:
    """An open archive download: headers we act on and the body stream."""

    status: int
    content_length: int | None
    content_range: str | None
    accept_ranges: bool
    content_disposition: str | None
    request_id: str | None
    content: aiohttp.StreamReader
    etag: str | None = None  # validators, for If-Range on a resume
    last_modified: str | None = None


class CloudDC:
    """Client for one CloudDC project on one endpoint. Cheap; share the session and limiter."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        project_id: str,
        credentials: Credentials,
        *,
        limiter: RateLimiter,
        export_limiter: RateLimiter | None = None,
        policy: RetryPolicy,
        stats: CallStats | None = None,
    ) -> None:
        self.session = session
        self.project_id = project_id
        self.credentials = credentials
        self.limiter = limiter
        self.export_limiter = export_limiter
        self.policy = policy
        self.stats = stats if stats is not None else CallStats()
        self._base = URL(endpoint.rstrip("/")) / "v1" / project_id / "physicalservers"

    def _export_url(self, server_id: str, *rest: str) -> URL:
        url = self._base / server_id / "logs" / "exports"
        for part in rest:
            url = url / part
        return url

    async def export(self, server_id: str, *, on_retry: OnRetry | None = None) -> ExportStatus:
        """Start an export and return its first status. Retried under the policy."""
        url = self._export_url(server_id)
        return await self._retrying(lambda: self._json_call(EXPORT, "POST", url), on_retry)

    async def status(self, server_id: str, export_id: str, *, on_retry: OnRetry | None = None) -> ExportStatus:
        url = self._export_url(server_id, export_id)
        return await self._retrying(lambda: self._json_call(STATUS, "GET", url, export_id=export_id), on_retry)

    async def _retrying(self, call, on_retry: OnRetry | None):
        def count(exc: BaseException, attempt: int, wait: float) -> None:
            self.stats.retries += 1
            if on_retry is not None:
                on_retry(exc, attempt, wait)

        result, _ = await retrying(call, self.policy, on_retry=count)
        return result

    async def _send(self, operation: str, method: str, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """One request to the API: through the limiters, with credentials. Caller releases it."""
        # POSTs start exports, which the API may cap apart from its request rate: they pass
        # their own limiter first, so a refused export slows exports, not polls and downloads.
        governor = self.export_limiter if method == "POST" and self.export_limiter else self.limiter
        if governor is not self.limiter:
            await governor.acquire()
        sent_at = await self.limiter.acquire(_PRIORITY[operation])
        headers = {**await self.credentials.headers(method, str(url)), **headers}
        try:
            response = await self._request(operation, method, url, headers)
        except ThrottledError as error:
            self.stats.throttled += 1
            governor.throttled(error.retry_after, sent_at=sent_at)
            raise
        governor.succeeded()
        if governor is not self.limiter:
            self.limiter.succeeded()
        return response

    async def _request(self, operation: str, method: str, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """One request, aiohttp's errors translated, an error status raised as `APIError`."""
        self.stats.requests += 1
        try:
            response = await self.session.request(method, url, headers=headers, allow_redirects=False)
        except asyncio.TimeoutError as exc:
            raise RequestError(f"{operation}: timed out waiting for {url.host}") from exc
        except aiohttp.ClientError as exc:
            raise RequestError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        if response.status >= 400:
            try:
                body = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                body = b""  # the status says enough
            finally:
                response.release()
            raise error_for(response.status, operation, body, response.headers)
        return response

    async def _json_call(self, operation: str, method: str, url: URL, export_id: str | None = None) -> ExportStatus:
        response = await self._send(operation, method, url, headers={"Accept": "application/json"})
        try:
            if 300 <= response.status < 400:
                raise ProtocolError(
                    f"{operation}: refused redirect (HTTP {response.status}) to "
                    f"{response.headers.get('Location', '?')}"
                )
            try:
                body = await response.read()
            except asyncio.TimeoutError as exc:
                raise RequestError(f"{operation}: timed out reading the answer") from exc
            except aiohttp.ClientError as exc:
                raise RequestError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.release()
        # The 202 of ExportServerLogs is documented as octet-stream; trust the bytes, not the label.
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            request_id = response.headers.get("X-Request-Id")
            raise ProtocolError(
                f"{operation}: answer is not JSON (HTTP {response.status}"
                + (f", request id {request_id})" if request_id else ")")
            ) from exc
        return ExportStatus.from_body(parsed, operation=operation, export_id=export_id)

    @asynccontextmanager
    async def open_archive(
        self, server_id: str, export_id: str, *, offset: int = 0, if_range: str | None = None
    ) -> AsyncIterator[ArchiveResponse]:
        """Open the archive download, following redirects by hand.

        With `offset`, ask for the rest from there (`Range`); with `if_range` too (an ETag or
        a Last-Modified date), only if the archive is still that one, else for all of it.

        aiohttp would forward our `X-Auth-Token` to wherever a redirect points, so we follow
        redirects ourselves: credentials go only to the API's own origin, never to another
        one (a presigned object-storage URL needs none), and https is never downgraded.
        """
        url = self._export_url(server_id, export_id, "content")
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if if_range:
                headers["If-Range"] = if_range
        origin = url.origin()
        response = await self._send(DOWNLOAD, "GET", url, headers=headers)
        for _ in range(MAX_REDIRECTS):
            if not 300 <= response.status < 400:
                break
            location = response.headers.get("Location")
            response.release()
            if not location:
                raise ProtocolError(f"{DOWNLOAD}: HTTP {response.status} redirect without a Location")
            target = url.join(URL(location))
            if url.scheme == "https" and target.scheme != "https":
                raise ProtocolError(f"{DOWNLOAD}: refused redirect from https to {target.scheme}: {target.host}")
            if target.scheme not in ("http", "https"):
                raise ProtocolError(f"{DOWNLOAD}: refused redirect to a {target.scheme!r} URL")
            url = target
            if url.origin() == origin:
                response = await self._send(DOWNLOAD, "GET", url, headers=headers)
            else:
                response = await self._plain_get(url, headers)
        else:
            response.release()
            raise ProtocolError(f"{DOWNLOAD}: more than {MAX_REDIRECTS} redirects")
        try:
            yield ArchiveResponse(
                status=response.status,
                content_length=response.content_length,
                content_range=response.headers.get("Content-Range"),
                accept_ranges="bytes" in response.headers.get("Accept-Ranges", "").lower(),
                content_disposition=response.headers.get("Content-Disposition"),
                request_id=response.headers.get("X-Request-Id"),
                content=response.content,
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
            )
        finally:
            response.release()

    async def _plain_get(self, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """A GET to another origin (object storage): no credentials, no rate limit of the API's."""
        operation = f"{DOWNLOAD} (redirected to {url.host})"
        try:
            return await self._request(operation, "GET", url, headers)
        except AuthError as error:
            # We sent that origin no credentials: its 401/403 (an expired presigned URL, say)
            # fails this download, it does not mean the API rejected our token.
            raise APIError(
                error.status, operation=operation, error_code=error.error_code,
                error_msg=error.error_msg, request_id=error.request_id,
            ) from error
