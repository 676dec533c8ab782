"""One API endpoint's gateway: every request the run sends to that endpoint passes here.

A run makes one `Gateway` per endpoint (`Gateways`), before discovery, and discovery
(`collector.run.prepare`), `collector check` and the sweep all send through it. So they share
what belongs to the endpoint, not to one caller:

- its rate limiter, and the one export POSTs pass first (an API may cap running exports apart
  from its request rate);
- its `EndpointHealth`: an endpoint that does not answer is given up once for the whole run,
  and discovery's verdict is the sweep's;
- its retry budget (`RetryQuota`);
- the observer told each request's outcome (``collector_requests_total{operation}``) and the
  run's `CallStats`, so discovery's ListServers are counted like every other call.

`Gateway.send` is the chain every API request passes, outermost first: the endpoint's health
gate (told how each request went, and whose it was, so that one server's timeouts are told
from an endpoint's outage), the rate limiter(s), the credentials (applied last, to the
finished request), the request itself (`Gateway.request`), and on a 401 one replay with
refreshed credentials.
`Gateway.request` is one request: aiohttp's errors become collector's
(`collector.net.transport.translate`), an error status becomes its `APIError`
(`collector.net.status.status_error`).

Which calls there are, and what their answers mean, is `collector.clouddc.api`'s business.
"""

from __future__ import annotations

import functools
import ssl as ssl_
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from yarl import URL

from collector.auth import Credentials, Request
from collector.auth.protocol import host_header
from collector.clouddc.replies import MAX_JSON_BYTES
from collector.config.settings import Settings
from collector.control.endpoint import OWN_TIMEOUTS, EndpointHealth, OwnTimeout, ServerTimedOut
from collector.control.throttle import RateLimiter, RetryPolicy, RetryQuota, Sleep, retrying
from collector.errors import AuthError, CollectorError, ServerError, ThrottledError
from collector.net.status import status_error
from collector.net.transport import read_bounded, translate

T = TypeVar("T")

EXPORT = "ExportServerLogs"
STATUS = "ShowLogsExportStatus"
DOWNLOAD = "DownloadServerLogs"
LIST = "ListServers"

# How metrics name each call (`collector_requests_total{operation}`); a redirected download
# ("DownloadServerLogs (redirected to HOST)") counts as a download.
METRIC_NAMES = {EXPORT: "export", STATUS: "status", DOWNLOAD: "download", LIST: "list"}

# Who goes first when requests queue for the endpoint's rate: a download holds one of few
# transfer slots and finishes a server; an export starts work on the server's side; a poll
# only asks whether that work is done. Discovery runs before the sweep, so its place hardly
# matters.
PRIORITY = {DOWNLOAD: 0, EXPORT: 1, LIST: 1, STATUS: 2}

MAX_ERROR_BYTES = 64 * 1024

OnRetry = Callable[[BaseException, int, float], None]
Observer = Callable[[str, int | BaseException], None]


@dataclass
class CallStats:
    """What the run sent and what it got back; read by progress, metrics and the report."""

    requests: int = 0
    throttled: int = 0
    retries: int = 0
    bytes_downloaded: int = 0


class Gateway:
    """One endpoint's shared machinery, and the chain its requests pass (see the module)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        *,
        limiter: RateLimiter,
        policy: RetryPolicy,
        export_limiter: RateLimiter | None = None,
        health: EndpointHealth | None = None,
        quota: RetryQuota | None = None,
        stats: CallStats | None = None,
        call_timeout: float = Settings.read_timeout,
        observe: Observer | None = None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.limiter = limiter
        self.export_limiter = export_limiter
        self.policy = policy
        self.health = health if health is not None else EndpointHealth(endpoint)
        self.quota = quota
        self.stats = stats if stats is not None else CallStats()
        self.call_timeout = call_timeout
        self.observe = observe  # told each request's outcome (metrics): operation, status or error
        self._json_timeout = json_timeout(session.timeout, call_timeout)

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        endpoint: str,
        settings: Settings,
        *,
        stats: CallStats | None = None,
        observe: Observer | None = None,
        rate: float | None = None,
    ) -> Gateway:
        """The gateway a run gives `endpoint`: limiters, health and budget from `settings`;
        `rate`, the API's budget an earlier run learned, to start at instead of --rate, as a
        budget known (`RateLimiter`'s `known`: no start-up's doubling past it)."""
        start = settings.rate if rate is None else rate
        return cls(
            session,
            endpoint,
            limiter=RateLimiter(start, max_rate=settings.max_rate, known=rate),
            export_limiter=RateLimiter(start, max_rate=settings.max_rate, known=rate),
            policy=settings.policy,
            health=EndpointHealth(endpoint, dead_after=settings.dead_after, outage_timeout=settings.outage_timeout),
            quota=RetryQuota(),
            stats=stats,
            call_timeout=settings.read_timeout,
            observe=observe,
        )

    async def retrying(
        self,
        call: Callable[[], Awaitable[T]],
        on_retry: OnRetry | None = None,
        *,
        away: Callable[[Sleep, float], Awaitable[None]] | None = None,
    ) -> T:
        """`call` under the run's retry policy and this endpoint's budget; its backoff ends
        early if the endpoint is given up. With `away`, the backoff is `away(backoff, seconds)`:
        the caller's way to give back what it holds while it waits (a slot others need).

        A try that times out while the endpoint answers others (`OwnTimeout`) costs a minute
        of a slot and says the server, not the API, is in trouble: after `OWN_TIMEOUTS` of
        them the call fails for good (`ServerTimedOut`), where other failures get the
        policy's `max_attempts`.
        """
        own_timeouts = 0

        async def attempt() -> T:
            nonlocal own_timeouts
            try:
                return await call()
            except OwnTimeout as exc:
                own_timeouts += 1
                if own_timeouts < OWN_TIMEOUTS:
                    raise
                what = METRIC_NAMES.get(exc.operation, exc.operation)
                raise ServerTimedOut(
                    f"{what} request timed out {own_timeouts} times (no answer in {self.call_timeout:g} s); "
                    "the API answered other servers"
                ) from exc

        def count(exc: BaseException, attempt: int, wait: float) -> None:
            self.stats.retries += 1
            if on_retry is not None:
                on_retry(exc, attempt, wait)

        result: T
        backoff: Sleep = self.health.backoff
        sleep = backoff if away is None else functools.partial(away, backoff)
        result, _ = await retrying(attempt, self.policy, on_retry=count, quota=self.quota, sleep=sleep)
        return result

    async def send(
        self,
        operation: str,
        method: str,
        url: URL,
        headers: dict[str, str],
        credentials: Credentials,
        *,
        project_id: str,
        ssl: ssl_.SSLContext | bool = True,
        read: bool,
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """One request to the API: past the endpoint's gate and the limiters, with credentials.

        Credentials are applied last, to the finished request (every header, `Host`
        included), which is what signing needs. On a 401 the credentials are refreshed once
        for every task that used them, and the request sent again, once; a 401 after that,
        or from credentials that cannot be refreshed, is final.

        With `read`, the body is read (bounded, under a total deadline) and the response
        released; without, the caller streams the body and releases the response. A redirect
        comes back as it is, unread: following it is the caller's decision.
        """
        # POSTs start exports, which the API may cap apart from its request rate: they pass
        # their own limiter first, so a refused export slows exports, not polls and downloads.
        governor = self.export_limiter if method == "POST" and self.export_limiter else self.limiter
        subject = subject_of(url)
        resent = False
        while True:
            async with self.health.admit() as probe:
                sent_at = await self._take_turn(governor, operation, probe)
                if sent_at is None:
                    continue  # the endpoint stopped answering while we queued: back to the gate
                request = Request(method, url, {"Host": host_header(url), **headers}, project_id=project_id)
                generation = await credentials.apply(request)
                ticket = self.health.sent()
                try:
                    result = await self.request(operation, request, ssl=ssl, read=read)
                except ThrottledError as error:
                    self.health.answered(probe, subject=subject)
                    self.stats.throttled += 1
                    self._throttled(governor, error.retry_after, sent_at, subject)
                    raise
                except AuthError as error:
                    self.health.answered(probe, subject=subject)
                    if error.status == 401 and not resent and await credentials.rejected(generation):
                        resent = True
                        continue
                    raise
                except CollectorError as error:
                    own = self.health.failed(error, probe, ticket=ticket, subject=subject)
                    if self.health.overloaded(error):
                        self.stats.throttled += 1
                        retry_after = error.retry_after if isinstance(error, ServerError) else None
                        self._throttled(governor, retry_after, sent_at, subject)
                    if own:
                        raise OwnTimeout(str(error), operation=operation, host=url.host) from error
                    raise
                self.health.answered(probe, subject=subject)
                governor.succeeded(sent_at=sent_at)
                if governor is not self.limiter:
                    self.limiter.succeeded(sent_at=sent_at)
                return result

    @property
    def learned(self) -> float:
        """The rate this endpoint was found to take, for the next run's start: its limiter's
        (`RateLimiter.learned`), unless only the exports' limiter ever met the budget: the
        endpoint's then knows only where this run's demand took it (a run's tail asks little:
        the next run started at 25 req/s against a budget of 100, issue 14)."""
        exports = self.export_limiter
        if not self.limiter.knows and exports is not None and exports.knows:
            return exports.learned
        return self.limiter.learned

    def _throttled(self, governor: RateLimiter, retry_after: float | None, sent_at: float, subject: str) -> None:
        """A request refused as too many slows its governor. An export's slows exports only
        (an API may cap running exports apart from its request rate), but the endpoint's
        limiter witnesses it: if the budget is one for all requests, its bucket was empty
        then, and the limiter measures the budget from there (`RateLimiter.witnessed`): it
        otherwise learned nothing from the export requests' refusals, and its first polls
        went out at twice what the exports had got through (issue 14)."""
        governor.throttled(retry_after, sent_at=sent_at, subject=subject)
        if governor is not self.limiter:
            self.limiter.witnessed()

    async def _take_turn(self, governor: RateLimiter, operation: str, probe: bool) -> float | None:
        """Wait for this request's slot of the rate; None if the endpoint paused meanwhile."""
        if governor is self.limiter and (sent_at := self.limiter.try_acquire()) is not None:
            # A free slot and nobody waiting: no wait, so no pause can cut one short and the
            # cancel scope below is not needed (it was ~2 % of a 5,000-server run's CPU).
            return None if self.health.paused and not probe else sent_at
        with self.health.queued(probe) as queue:
            if governor is not self.limiter:
                await governor.acquire()
            sent_at = await self.limiter.acquire(PRIORITY[operation])
        if queue.cancelled_caught or (self.health.paused and not probe):
            return None
        return sent_at

    async def request(
        self, operation: str, request: Request, *, ssl: ssl_.SSLContext | bool = True, read: bool
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """One request, aiohttp's errors translated, an error status raised as `APIError`.

        A JSON call (`read`) has a total deadline, `call_timeout`: an answer trickled one
        byte a second never trips the per-read timeout, and must not hold a server forever.
        aiohttp keeps that deadline (`json_timeout`), from the request until the body is read,
        and raises a `TimeoutError` when it passes, which `translate` words like any other.
        """
        self.stats.requests += 1
        url = request.url
        observed = METRIC_NAMES.get(operation.split(" ", 1)[0], "other")
        try:
            response = await self.session.request(
                request.method,
                url,
                headers=request.headers,
                data=request.body or None,
                allow_redirects=False,
                ssl=ssl,
                timeout=self._json_timeout if read else self.session.timeout,
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
                    raise status_error(response.status, operation, body, response.headers)
                content = None
                if read and not 300 <= response.status < 400:
                    content = await read_bounded(response, MAX_JSON_BYTES, operation)
            except BaseException:
                response.release()
                raise
            if read:
                response.release()
            return response, content
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = translate(exc, operation, url)
            if self.observe is not None:
                self.observe(observed, error)
            raise error from exc


def json_timeout(session: aiohttp.ClientTimeout, total: float) -> aiohttp.ClientTimeout:
    """A JSON call's timeouts: the session's, with `total` as the deadline for the whole call
    (connection, request, answer and body). A per-read limit no shorter than that adds nothing,
    and is left out (one timer less per read)."""
    sock_read = session.sock_read
    if sock_read is not None and sock_read >= total:
        sock_read = None
    return aiohttp.ClientTimeout(
        total=total,
        connect=session.connect,
        sock_read=sock_read,
        sock_connect=session.sock_connect,
        ceil_threshold=session.ceil_threshold,
    )


class Gateways:
    """The run's gateways, one per endpoint, each made on first use and kept for the run."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        observe: Observer | None = None,
        rates: Mapping[str, float] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.observe = observe
        self.rates = dict(rates or {})  # endpoint -> the rate to start at, where one was learned
        self.stats = CallStats()  # one for the run: every gateway counts into it
        self._by_endpoint: dict[str, Gateway] = {}

    def __getitem__(self, endpoint: str) -> Gateway:
        gateway = self._by_endpoint.get(endpoint)
        if gateway is None:
            gateway = Gateway.from_settings(
                self.session,
                endpoint,
                self.settings,
                stats=self.stats,
                observe=self.observe,
                rate=self.rates.get(endpoint),
            )
            self._by_endpoint[endpoint] = gateway
        return gateway

    def __iter__(self) -> Iterator[Gateway]:
        return iter(list(self._by_endpoint.values()))


def subject_of(url: URL) -> str:
    """Whose request `url` is: the server id in ``.../physicalservers/{id}/...``, else the path
    (ListServers: the project), so refusals can be told apart by server."""
    parts = url.path.split("/")
    if "physicalservers" in parts:
        index = parts.index("physicalservers")
        if index + 1 < len(parts) and parts[index + 1]:
            return parts[index + 1]
    return url.path
