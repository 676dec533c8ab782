"""The three CloudDC calls (and ListServers), and what their answers mean.

`CloudDC` is a thin client for one (endpoint, project): `export()`, `status()`,
`open_archive()` and `list_servers_page()`. It builds each call's URL and reads its answer;
every request goes through the endpoint's `collector.clouddc.gateway.Gateway` (health gate,
rate limiter, credentials, one replay on a 401, aiohttp's errors translated, the call
observed), which the run shares between discovery, `check` and the sweep. The JSON calls are
retried here under the one `RetryPolicy`; downloads are retried by
`collector.transfer.download`, which knows about partial files.

What the answers mean is decided in `collector.clouddc.replies`.
"""

from __future__ import annotations

import ssl as ssl_
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from collector.auth import Credentials, Request
from collector.clouddc.gateway import (
    DOWNLOAD,
    EXPORT,
    LIST,
    STATUS,
    CallStats,
    Gateway,
    Gateways,
    Observer,
    OnRetry,
)
from collector.clouddc.replies import ExportStatus, parse_json, safe_export_id
from collector.config.inventory import Project
from collector.config.settings import Settings
from collector.control.endpoint import EndpointHealth
from collector.control.throttle import RateLimiter, RetryPolicy, RetryQuota, Sleep
from collector.errors import APIError, AuthError, ProtocolError, RequestError, ServerError
from collector.text import clean_text

# How a caller waits out a retry's backoff: `away(backoff, seconds)`, giving back meanwhile
# what others need (the sweep's slot of --concurrency).
Away = Callable[[Sleep, float], Awaitable[None]]

__all__ = ["MAX_REDIRECTS", "ArchiveResponse", "CloudDC", "redirect_target"]

MAX_REDIRECTS = 5


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
    url: URL | None = None  # where the body comes from, for the messages of a transfer that breaks


class CloudDC:
    """Client for one CloudDC project, sending through its endpoint's gateway. Cheap.

    A run's clients come from `CloudDC.for_project`, one gateway per endpoint for the whole
    run; `CloudDC.alone` gives a client a gateway of its own (a test, a one-off script).
    """

    def __init__(
        self, gateway: Gateway, project_id: str, credentials: Credentials, *, ssl: ssl_.SSLContext | bool = True
    ) -> None:
        self.gateway = gateway
        self.project_id = project_id
        self.credentials = credentials
        self.ssl = ssl  # the project's CA bundle, or False for `tls: {verify: false}`
        self._base = URL(gateway.endpoint.rstrip("/")) / "v1" / project_id / "physicalservers"

    @classmethod
    def for_project(cls, gateways: Gateways, project: Project) -> CloudDC:
        """`project`'s client, through the run's gateway for its endpoint."""
        if project.credentials is None:
            raise ValueError(f"{project.project_id}: credentials are settled before a client is made")
        return cls(gateways[project.endpoint], project.project_id, project.credentials, ssl=project.ssl)

    @classmethod
    def alone(
        cls,
        session: aiohttp.ClientSession,
        endpoint: str,
        project_id: str,
        credentials: Credentials,
        *,
        limiter: RateLimiter,
        policy: RetryPolicy,
        export_limiter: RateLimiter | None = None,
        stats: CallStats | None = None,
        health: EndpointHealth | None = None,
        quota: RetryQuota | None = None,
        call_timeout: float = Settings.read_timeout,
        ssl: ssl_.SSLContext | bool = True,
        observe: Observer | None = None,
    ) -> CloudDC:
        """A client with a gateway of its own, built from these parts."""
        gateway = Gateway(
            session,
            endpoint,
            limiter=limiter,
            policy=policy,
            export_limiter=export_limiter,
            health=health,
            quota=quota,
            stats=stats,
            call_timeout=call_timeout,
            observe=observe,
        )
        return cls(gateway, project_id, credentials, ssl=ssl)

    @property
    def endpoint(self) -> str:
        return self.gateway.endpoint

    @property
    def limiter(self) -> RateLimiter:
        return self.gateway.limiter

    @property
    def health(self) -> EndpointHealth:
        return self.gateway.health

    @property
    def stats(self) -> CallStats:
        return self.gateway.stats

    @property
    def policy(self) -> RetryPolicy:
        return self.gateway.policy

    def _export_url(self, server_id: str, export_id: str | None = None, *, content: bool = False) -> URL:
        parts = [server_id, "logs", "exports"]
        if export_id is not None:
            # Checked where it entered; again here, for an id an older journal kept unchecked.
            parts.append(safe_export_id(export_id, operation="export id"))
        if content:
            parts.append("content")
        return self._base.joinpath(*parts)  # one join: each `/` would build a URL

    async def export(
        self,
        server_id: str,
        *,
        on_retry: OnRetry | None = None,
        on_sent: Callable[[], None] | None = None,
        away: Away | None = None,
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

        return await self.gateway.retrying(post, on_retry, away=away)

    async def list_servers_page(self, marker: str | None = None, *, limit: int = 1000) -> bytes:
        """One page of ListServers, as the raw JSON body `collector.clouddc.discovery` parses.

        Retried, rate limited and authenticated like every other call.
        """
        query = {"limit": str(limit), **({"marker": marker} if marker else {})}
        url = self._base.with_query(query)

        async def page() -> bytes:
            _, body = await self._call(LIST, "GET", url)
            return body

        return await self.gateway.retrying(page)

    async def status(
        self, server_id: str, export_id: str, *, on_retry: OnRetry | None = None, away: Away | None = None
    ) -> ExportStatus:
        url = self._export_url(server_id, export_id)
        return await self.gateway.retrying(
            lambda: self._json_call(STATUS, "GET", url, export_id=export_id), on_retry, away=away
        )

    async def _send(
        self, operation: str, method: str, url: URL, headers: dict[str, str], *, read: bool
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        return await self.gateway.send(
            operation, method, url, headers, self.credentials, project_id=self.project_id, ssl=self.ssl, read=read
        )

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
        response, _ = await self._send(DOWNLOAD, "GET", url, headers, read=False)
        response = await self._follow_redirects(response, url, headers)
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
                url=response.url,
            )
        finally:
            response.release()

    async def _follow_redirects(
        self, response: aiohttp.ClientResponse, url: URL, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The download's final response, after at most `MAX_REDIRECTS` redirects from `response`.

        aiohttp would forward our `X-Auth-Token` to wherever a redirect points, so we follow
        redirects ourselves: a hop within the API's own origin goes through the gateway with
        credentials; a hop elsewhere (a presigned object-storage URL) is a plain GET with
        none, outside the API's rate; https is never downgraded.
        """
        origin = url.origin()
        for _ in range(MAX_REDIRECTS):
            if not 300 <= response.status < 400:
                return response
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
        if not 300 <= response.status < 400:
            return response
        response.release()
        raise ProtocolError(f"{DOWNLOAD}: more than {MAX_REDIRECTS} redirects")

    async def _plain_get(self, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """A GET to another origin (object storage): no credentials, no rate limit of the API's."""
        operation = f"{DOWNLOAD} (redirected to {url.host})"
        try:
            response, _ = await self.gateway.request(
                operation, Request("GET", url, dict(headers)), ssl=self.ssl, read=False
            )
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
