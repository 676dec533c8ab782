"""The three CloudDC calls, and what their answers mean.

`CloudDC` is a thin client for one (endpoint, project): `export()`, `status()` and
`open_archive()`. Every call passes the endpoint's shared `RateLimiter`; the JSON calls are
retried here under the one `RetryPolicy`; downloads are retried by `collector.transfer.download`,
which knows about partial files. aiohttp's exceptions become `collector.errors` here, and
nowhere else.

What the answers mean is decided in `collector.clouddc.replies`.
"""

from __future__ import annotations

import ssl as ssl_
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio
from yarl import URL

from collector.auth import Credentials, Request
from collector.auth.protocol import host_header
from collector.clouddc.replies import ExportStatus, error_for, parse_json, safe_export_id
from collector.control.endpoint import EndpointHealth
from collector.control.throttle import RateLimiter, RetryPolicy, RetryQuota, retrying
from collector.errors import (
    APIError,
    AuthError,
    CollectorError,
    ProtocolError,
    RequestError,
    ServerError,
    ThrottledError,
)
from collector.net.transport import read_bounded, translate
from collector.text import clean_text

EXPORT = "ExportServerLogs"
STATUS = "ShowLogsExportStatus"
DOWNLOAD = "DownloadServerLogs"
LIST = "ListServers"

MAX_REDIRECTS = 5
MAX_JSON_BYTES = 1024 * 1024  # an export status is a few hundred bytes
MAX_ERROR_BYTES = 64 * 1024

OnRetry = Callable[[BaseException, int, float], None]

# How metrics name each call (`collector_requests_total{operation}`).
METRIC_NAMES = {EXPORT: "export", STATUS: "status", DOWNLOAD: "download", LIST: "list"}

# Who goes first when requests queue for the endpoint's rate: a download holds one of few
# transfer slots and finishes a server; an export starts work on the server's side; a poll
# only asks whether that work is done. Discovery runs before the sweep, so its place hardly matters.
_PRIORITY = {DOWNLOAD: 0, EXPORT: 1, LIST: 1, STATUS: 2}


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
        health: EndpointHealth | None = None,
        quota: RetryQuota | None = None,
        call_timeout: float = 60.0,
        ssl: ssl_.SSLContext | bool = True,
        observe: Callable[[str, int | BaseException], None] | None = None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.project_id = project_id
        self.credentials = credentials
        self.limiter = limiter
        self.export_limiter = export_limiter
        self.policy = policy
        self.stats = stats if stats is not None else CallStats()
        self.health = health if health is not None else EndpointHealth(endpoint)
        self.quota = quota
        self.call_timeout = call_timeout
        self.ssl = ssl  # the project's CA bundle, or False for `tls: {verify: false}`
        self.observe = observe  # told each request's outcome (metrics): operation, status or error
        self._base = URL(endpoint.rstrip("/")) / "v1" / project_id / "physicalservers"

    def _export_url(self, server_id: str, export_id: str | None = None, *, content: bool = False) -> URL:
        url = self._base / server_id / "logs" / "exports"
        if export_id is not None:
            # Checked where it entered; again here, for an id an older journal kept unchecked.
            url = url / safe_export_id(export_id, operation="export id")
        return url / "content" if content else url

    async def export(
        self, server_id: str, *, on_retry: OnRetry | None = None, on_sent: Callable[[], None] | None = None
    ) -> ExportStatus:
        """Start an export and return its first status. Retried under the policy.

        There is no way to ask whether a POST that timed out or was cut off started an
        export, so it is retried like the rest; `on_sent` is called for every POST that may
        have reached the server (all but those that could not connect), so the report can
        say how many exports were asked for.
        """
        url = self._export_url(server_id)

        async def post() -> ExportStatus:
            try:
                status = await self._json_call(EXPORT, "POST", url)
            except (RequestError, ServerError, ProtocolError) as exc:
                if getattr(exc, "sent", True) and on_sent is not None:
                    on_sent()  # it may have reached the server, and started an export there
                raise
            if on_sent is not None:
                on_sent()
            return status

        return await self._retrying(post, on_retry)

    async def list_servers_page(self, marker: str | None = None, *, limit: int = 1000) -> bytes:
        """One page of ListServers, as the raw JSON body `collector.clouddc.discovery` parses.

        Retried, rate limited and authenticated like every other call.
        """
        query = {"limit": str(limit), **({"marker": marker} if marker else {})}
        url = self._base.with_query(query)

        async def page() -> bytes:
            _, body = await self._call(LIST, "GET", url)
            return body

        return await self._retrying(page, None)

    async def status(self, server_id: str, export_id: str, *, on_retry: OnRetry | None = None) -> ExportStatus:
        url = self._export_url(server_id, export_id)
        return await self._retrying(lambda: self._json_call(STATUS, "GET", url, export_id=export_id), on_retry)

    async def _retrying(self, call, on_retry: OnRetry | None):
        def count(exc: BaseException, attempt: int, wait: float) -> None:
            self.stats.retries += 1
            if on_retry is not None:
                on_retry(exc, attempt, wait)

        result, _ = await retrying(call, self.policy, on_retry=count, quota=self.quota, sleep=self.health.backoff)
        return result

    async def _send(
        self, operation: str, method: str, url: URL, headers: dict[str, str], *, read: bool
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """One request to the API: past the endpoint's gate and the limiters, with credentials.

        Credentials are applied last, to the finished request (every header, `Host`
        included), which is what signing needs. On a 401 the credentials are refreshed once
        for every task that used them, and the request sent again, once; a 401 after that,
        or from credentials that cannot be refreshed, is final.

        With `read`, the body is read (bounded, under a total deadline) and the response
        released; without, the caller streams the body and releases the response.
        """
        # POSTs start exports, which the API may cap apart from its request rate: they pass
        # their own limiter first, so a refused export slows exports, not polls and downloads.
        governor = self.export_limiter if method == "POST" and self.export_limiter else self.limiter
        resent = False
        while True:
            async with self.health.admit() as probe:
                sent_at = await self._take_turn(governor, operation, probe)
                if sent_at is None:
                    continue  # the endpoint stopped answering while we queued: back to the gate
                request = Request(method, url, {"Host": host_header(url), **headers}, project_id=self.project_id)
                generation = await self.credentials.apply(request)
                try:
                    result = await self._request(operation, request, read=read)
                except ThrottledError as error:
                    self.health.answered(probe)
                    self.stats.throttled += 1
                    governor.throttled(error.retry_after, sent_at=sent_at)
                    raise
                except AuthError as error:
                    self.health.answered(probe)
                    if error.status == 401 and not resent and await self.credentials.rejected(generation):
                        resent = True
                        continue
                    raise
                except CollectorError as error:
                    self.health.failed(error, probe)
                    if self.health.overloaded(error):
                        self.stats.throttled += 1
                        governor.throttled(getattr(error, "retry_after", None), sent_at=sent_at)
                    raise
                self.health.answered(probe)
                governor.succeeded()
                if governor is not self.limiter:
                    self.limiter.succeeded()
                return result

    async def _take_turn(self, governor: RateLimiter, operation: str, probe: bool) -> float | None:
        """Wait for this request's slot of the rate; None if the endpoint paused meanwhile."""
        with self.health.queued(probe) as queue:
            if governor is not self.limiter:
                await governor.acquire()
            sent_at = await self.limiter.acquire(_PRIORITY[operation])
        if queue.cancelled_caught or (self.health.paused and not probe):
            return None
        return sent_at

    async def _request(
        self, operation: str, request: Request, *, read: bool
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """One request, aiohttp's errors translated, an error status raised as `APIError`.

        A JSON call (`read`) has a total deadline, `call_timeout`: an answer trickled one
        byte a second never trips the per-read timeout, and must not hold a server forever.
        """
        self.stats.requests += 1
        url = request.url
        observed = METRIC_NAMES.get(operation.split(" ", 1)[0], "other")
        try:
            with anyio.fail_after(self.call_timeout if read else None):
                response = await self.session.request(
                    request.method,
                    url,
                    headers=request.headers,
                    data=request.body or None,
                    allow_redirects=False,
                    ssl=self.ssl,
                )
                if self.observe is not None:
                    self.observe(observed, response.status)
                try:
                    if response.status >= 400:
                        # The status decides; the body only adds detail: cut, not refused, and
                        # a body that breaks off still leaves the status to act on.
                        try:
                            body = await read_bounded(response, MAX_ERROR_BYTES, operation, cut=True)
                        except (TimeoutError, aiohttp.ClientError):
                            body = b""
                        raise error_for(response.status, operation, body, response.headers)
                    body = None
                    if read and not 300 <= response.status < 400:
                        body = await read_bounded(response, MAX_JSON_BYTES, operation)
                except BaseException:
                    response.release()
                    raise
                if read:
                    response.release()
                return response, body
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = translate(exc, operation, url)
            if self.observe is not None:
                self.observe(observed, error)
            raise error from exc

    async def _call(self, operation: str, method: str, url: URL) -> tuple[aiohttp.ClientResponse, bytes]:
        """A JSON call's answer and its body; a redirect is refused (it could lead our
        credentials anywhere)."""
        response, body = await self._send(operation, method, url, {"Accept": "application/json"}, read=True)
        if body is None:
            raise ProtocolError(
                f"{operation}: refused redirect (HTTP {response.status}) to "
                f"{clean_text(response.headers.get('Location', '?'))}"
            )
        return response, body

    async def _json_call(self, operation: str, method: str, url: URL, export_id: str | None = None) -> ExportStatus:
        response, body = await self._call(operation, method, url)
        # The 202 of ExportServerLogs is documented as octet-stream; trust the bytes, not the label.
        parsed = parse_json(body, operation=operation, request_id=response.headers.get("X-Request-Id"))
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
        url = self._export_url(server_id, export_id, content=True)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if if_range:
                headers["If-Range"] = if_range
        origin = url.origin()
        response, _ = await self._send(DOWNLOAD, "GET", url, headers, read=False)
        for _ in range(MAX_REDIRECTS):
            if not 300 <= response.status < 400:
                break
            location = response.headers.get("Location")
            response.release()
            if not location:
                raise ProtocolError(f"{DOWNLOAD}: HTTP {response.status} redirect without a Location")
            target = redirect_target(url, location)
            if url.scheme == "https" and target.scheme != "https":
                raise ProtocolError(f"{DOWNLOAD}: refused redirect from https to {target.scheme}: {target.host}")
            url = target
            if url.origin() == origin:
                response, _ = await self._send(DOWNLOAD, "GET", url, headers, read=False)
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
            response, _ = await self._request(operation, Request("GET", url, dict(headers)), read=False)
            return response
        except AuthError as error:
            # We sent that origin no credentials: its 401/403 (an expired presigned URL, say)
            # fails this download, it does not mean the API rejected our token.
            raise APIError(
                error.status,
                operation=operation,
                error_code=error.error_code,
                error_msg=error.error_msg,
                request_id=error.request_id,
            ) from error


def redirect_target(url: URL, location: str) -> URL:
    """Where a redirect's `Location` points, resolved against `url`; only http(s) with a host."""
    try:
        target = url.join(URL(location))
        host = target.host
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{DOWNLOAD}: redirect to an invalid URL {clean_text(location)}") from exc
    if target.scheme not in ("http", "https") or not host:
        raise ProtocolError(f"{DOWNLOAD}: refused redirect to {clean_text(location)}: not an http(s) URL")
    return target
