"""Is the endpoint there at all? One `EndpointHealth` per API endpoint, shared by its requests.

A dead or failing endpoint must cost O(1) requests and log lines, not O(servers): without
this, 300 servers against a port where nothing listens took 171 s, 2,400 connection attempts
and 300 warnings. Every request to the endpoint passes `admit()` first and reports how it
went (`answered()` or `failed()`); the states are:

- **open**: requests go through (after the rate limiter, as always).
- **paused**: the endpoint stopped answering. Only one request at a time goes through, as a
  probe, with exponential backoff between probes (full jitter, `PROBE_CAP` at most); the
  others wait at the gate, holding nothing but their place. The first answer of any kind
  reopens it for everyone.
- **given up**: every waiting and later request raises `Unreachable`, and the sweep reports
  those servers `pending` with the reason.

When it pauses and when it gives up:

- An endpoint that has never answered pauses at its first failure of any kind below, and is
  given up `dead_after` seconds (30) after its first request: refused connections, a host
  name that does not resolve, a certificate that does not verify.
- An endpoint that has answered before pauses at a connection it cannot make (refused, DNS,
  TLS), or after `OUTAGE_AFTER` failures in a row with no answer between them (timeouts,
  resets, 502/503/504: one server's bad luck does not pause the fleet), and is given up
  `outage_timeout` seconds (600) after the pause began.

"Answered" means any HTTP status except 502/503/504: a 404 or a 500 proves the API is there.

A slow server is not a dead endpoint (issue 14: three servers whose export POST trickled a
byte a second, in a fleet of 50 that the API answered, ended the run after 690 s with exit 4).
An endpoint is unreachable when it stops answering everyone, so a timeout is judged by what
else happened while that request waited (the caller says when it was sent, `sent()`, and
whose it was, a server id):

- A timeout is **its server's own** when another request got an answer after it was sent
  (the endpoint was answering meanwhile), and then every later timeout of that server is too,
  until one of its requests is answered (the server is *lagging*). A timeout of its own never
  counts toward an outage, never pauses anyone, and `failed()` says so: the caller gives
  such timeouts fewer tries than others (`OWN_TIMEOUTS`) and then fails that server alone
  (`ServerTimedOut`).
- Any other timeout (nothing was answered since it was sent) counts toward an outage as
  above; so does every timeout while the endpoint is paused (a probe's timeout is the
  endpoint's). Refused connections, resets and 502/503/504 are judged as before.

So a real outage (every request refused or timing out) still pauses the endpoint and is
ridden out; the servers it catches mid-request may lose one try each, not their place.
"""

from __future__ import annotations

import logging
import random as _random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from types import TracebackType

import anyio

from collector.control.throttle import Clock, Sleep, monotonic, sleep
from collector.errors import CollectorError, RequestError, RequestTimeout, ServerError
from collector.log import ev

log = logging.getLogger(__name__)

DEAD_AFTER = 30.0
OUTAGE_TIMEOUT = 600.0  # the --outage-timeout default (collector.config.settings reads both)
OUTAGE_AFTER = 3  # failures in a row, with no answer between, that pause an endpoint that worked
OWN_TIMEOUTS = 3  # a call's tries that time out on their own before its server fails (a refusal gets 8)
PROBE_BASE = 0.5
PROBE_CAP = 30.0
LAST_PROBE = 2.0  # seconds a probe sent at (or just before) the deadline still gets
GATEWAY_FAILURES = frozenset({502, 503, 504})
# Gateway failures (502, 504) or timeouts this close together, from across the fleet, say the
# endpoint is overloaded: slow everyone down, as a 429 does. One server's 500 says nothing.
OVERLOAD_BURST = 3
OVERLOAD_WINDOW = 2.0


# `admit()` of an open endpoint: lets the request through, not a probe.
_OPEN: AbstractAsyncContextManager[bool] = nullcontext(False)


class Unreachable(CollectorError):
    """The endpoint was given up: its servers are left pending, not failed."""

    kind = "unreachable"


class OwnTimeout(RequestTimeout):
    """A timeout the endpoint did not share: it answered others while this request waited.

    Retried like any timeout, but charged to its server (`OWN_TIMEOUTS`), not the endpoint.
    `operation` is the call's name (``ExportServerLogs``).
    """

    def __init__(self, message: str, *, operation: str, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.operation = operation


class ServerTimedOut(CollectorError):
    """A server's call timed out `OWN_TIMEOUTS` times while the endpoint answered others:
    that server fails, with reason ``timeout``; the rest of the fleet goes on."""

    kind = "timeout"
    reason = "timeout"


def is_endpoint_failure(exc: BaseException) -> bool:
    """A failure that says the endpoint (not one server) is in trouble."""
    if isinstance(exc, RequestError):
        return True
    return isinstance(exc, ServerError) and exc.status in GATEWAY_FAILURES


class EndpointHealth:
    def __init__(
        self,
        url: str,
        *,
        dead_after: float = DEAD_AFTER,
        outage_timeout: float = OUTAGE_TIMEOUT,
        clock: Clock = monotonic,
        sleep: Sleep = sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.url = url
        self.dead_after = dead_after
        self.outage_timeout = outage_timeout
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self.answered_once = False
        self.paused_since: float | None = None
        self.given_up: Unreachable | None = None
        self._first_request: float | None = None
        self._failures_in_row = 0
        self._probes_failed = 0
        self._next_probe = 0.0
        self._probing = False
        self._last_error: BaseException | None = None
        self._change = anyio.Event()  # replaced by a fresh one at each change: a broadcast
        self._gone = anyio.Event()  # set when given up
        self._queued: set[anyio.CancelScope] = set()  # requests let through, waiting for the rate
        self._overload_signals: deque[float] = deque()
        self._sent = 0  # requests sent, numbered (`sent()`), and the latest that was answered
        self._answered = 0  # ... as the number `sent()` had reached when that answer came
        self._lagging: set[str] = set()  # servers whose latest outcome was a timeout of their own

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def gives_up_in(self) -> float | None:
        """Seconds until a paused endpoint is given up; None while it answers (or once given up)."""
        if not self.paused or self.given_up is not None or self._first_request is None:
            return None
        return max(0.0, self._deadline() - self._clock())

    def admit(self) -> AbstractAsyncContextManager[bool]:
        """Hold a request until the endpoint lets it through; raise `Unreachable` if given up.

        Yields whether this request is the probe of a paused endpoint. The body reports how
        it went with `answered(probe)` or `failed(exc, probe)`; a probe that ends any other
        way (cancelled, a bug) hands its turn to the next waiter.
        """
        if self._first_request is not None and self.given_up is None and self.paused_since is None:
            # Open, the common case: nothing to wait for or to clean up (what `_admit` would
            # do, without its generator's cost on every request).
            return _OPEN
        return self._admit()

    @asynccontextmanager
    async def _admit(self) -> AsyncIterator[bool]:
        probe = await self._wait_turn()
        try:
            if not probe:
                yield probe
                return
            # A probe gets until the deadline (at least LAST_PROBE): one that hangs (a proxy or
            # a host that drops packets: connect times out after --connect-timeout) must not
            # carry the verdict past the documented `dead_after` / `outage_timeout`.
            window = max(self._deadline() - self._clock(), LAST_PROBE)
            with anyio.move_on_after(window) as scope:
                yield probe
            if scope.cancelled_caught:
                self.give_up(self._verdict(f"a probe had no answer in {window:.0f} s; last error: {self._last_error}"))
                raise Unreachable(str(self.given_up))
        finally:
            if probe and self._probing:
                self._probing = False
                self._notify()

    async def _wait_turn(self) -> bool:
        if self._first_request is None:
            self._first_request = self._clock()
        while True:
            if self.given_up is not None:
                raise Unreachable(str(self.given_up))
            if not self.paused:
                return False
            if not self._probing:
                self._probing = True
                try:
                    wait = self._next_probe - self._clock()
                    if wait > 0:
                        await self._sleep(wait)
                except BaseException:
                    self._probing = False
                    self._notify()
                    raise
                if self.given_up is None and self.paused_since is not None:  # still, after the wait
                    return True
                self._probing = False
                self._notify()
                continue
            change = self._change
            await change.wait()

    def queued(self, probe: bool) -> _Queued:
        """Scope a request's wait for the rate limiter: if the endpoint pauses meanwhile, the
        wait is cancelled (`cancelled_caught`) and the request goes back to the gate.

        Otherwise requests let through before the pause would each still spend a slot of
        the rate on a dead endpoint, and a probe would queue behind all of them.
        """
        return _Queued(self._queued, probe)

    async def backoff(self, seconds: float) -> None:
        """A retry's wait before its next try at this endpoint; ends early if it is given up.

        Without this, servers waiting out a backoff of up to a minute would keep a run
        against a dead endpoint going long after it was given up.
        """
        if self.given_up is None:
            with anyio.move_on_after(seconds):
                await self._gone.wait()
        if self.given_up is not None:
            raise Unreachable(str(self.given_up))

    def sent(self) -> int:
        """A request is sent now: its number, for `failed(ticket=)`."""
        self._sent += 1
        return self._sent

    def answered(self, probe: bool = False, *, subject: str | None = None) -> None:
        """An HTTP answer came back (any status but a gateway failure); `subject` is whose
        request it was (a server id)."""
        self.answered_once = True
        self._answered = self._sent
        if subject is not None:
            self._lagging.discard(subject)
        self._failures_in_row = 0
        if probe:
            self._probing = False
        if self.paused_since is not None:
            downtime = self._clock() - self.paused_since
            self.paused_since = None
            self._probes_failed = 0
            log.warning(
                "%s answers again after %.0f s",
                self.url,
                downtime,
                extra=ev("endpoint_recovered", endpoint=self.url, wait_s=round(downtime, 1)),
            )
            self._notify()

    def failed(
        self, exc: BaseException, probe: bool = False, *, ticket: int | None = None, subject: str | None = None
    ) -> bool:
        """A request to this endpoint failed; `exc` is what the API client raised, `ticket`
        the request's number from `sent()`, `subject` whose request it was (a server id).

        Returns True when the failure is its server's own (a timeout while others were
        answered, see the module), which leaves the endpoint as it was; without `ticket`
        and `subject` no failure is.
        """
        if not is_endpoint_failure(exc):
            self.answered(probe, subject=subject)  # a 404, a 500, bad JSON: the endpoint is there
            return False
        if self._own_timeout(exc, probe, ticket, subject):
            return True
        now = self._clock()
        if self._first_request is None:
            self._first_request = now
        self._last_error = exc
        self._failures_in_row += 1
        if not self.paused:
            definitive = isinstance(exc, RequestError) and not exc.sent
            if not self.answered_once or definitive or self._failures_in_row >= OUTAGE_AFTER:
                self._pause(now, exc)
        if probe and self._probing:
            self._probing = False
            self._probes_failed += 1
            ceiling = min(PROBE_CAP, PROBE_BASE * 2**self._probes_failed)
            # The last probe comes at the deadline, not after it.
            self._next_probe = min(now + ceiling * (0.5 + 0.5 * self._random()), self._deadline())
        self._check_deadline(now)
        self._notify()
        return False

    def _own_timeout(self, exc: BaseException, probe: bool, ticket: int | None, subject: str | None) -> bool:
        if not isinstance(exc, RequestTimeout) or not exc.sent or ticket is None or subject is None:
            return False
        if probe or self.paused:
            return False  # while paused, no answer comes to anyone: the endpoint's
        if subject in self._lagging or self._answered >= ticket:
            self._lagging.add(subject)
            return True
        return False

    def overloaded(self, exc: BaseException) -> bool:
        """Should this failure slow the endpoint's limiter down for everyone?"""
        if isinstance(exc, ServerError) and exc.status == 503 and exc.retry_after is not None:
            return True
        if not (isinstance(exc, RequestTimeout) or (isinstance(exc, ServerError) and exc.status in (502, 504))):
            return False
        now = self._clock()
        signals = self._overload_signals
        signals.append(now)
        while signals and now - signals[0] > OVERLOAD_WINDOW:
            signals.popleft()
        return len(signals) >= OVERLOAD_BURST

    def _pause(self, now: float, exc: BaseException) -> None:
        for scope in self._queued:
            scope.cancel()
        self._queued.clear()
        self.paused_since = now
        self._next_probe = now
        self._probes_failed = 0
        if self.answered_once:
            log.warning(
                "%s stopped answering (%s); holding its servers and probing it, for up to %g s",
                self.url,
                exc,
                self.outage_timeout,
                extra=ev("endpoint_outage", endpoint=self.url, error=str(exc), reason=exc_kind(exc)),
            )
        else:
            log.warning(
                "%s does not answer (%s); probing it for up to %g s",
                self.url,
                exc,
                self.dead_after,
                extra=ev("endpoint_unreachable", endpoint=self.url, error=str(exc), reason=exc_kind(exc)),
            )

    def _deadline(self) -> float:
        """When a paused endpoint is given up: `outage_timeout` after the pause if it ever
        answered, else `dead_after` after the first request."""
        since, limit = (
            (self.paused_since, self.outage_timeout) if self.answered_once else (self._first_request, self.dead_after)
        )
        assert since is not None, "a deadline exists only while paused, after a first request"
        return since + limit

    def _check_deadline(self, now: float) -> None:
        if self.given_up is not None or not self.paused or now < self._deadline():
            return
        self.give_up(self._verdict(f"last error: {self._last_error}"))

    def _verdict(self, detail: str) -> str:
        if self.answered_once:
            why = f"no answer for {self.outage_timeout:g} s (--outage-timeout)"
        else:
            why = f"no answer in {self.dead_after:g} s"
        return f"API unreachable: {self.url}: {why}; {detail}"

    def give_up(self, reason: str) -> None:
        if self.given_up is None:
            self.given_up = Unreachable(reason)
            self._gone.set()
            log.error(
                "%s; its servers stay pending", reason, extra=ev("endpoint_given_up", endpoint=self.url, reason=reason)
            )
            self._notify()

    def _notify(self) -> None:
        self._change.set()
        self._change = anyio.Event()


class _Queued:
    """`EndpointHealth.queued`: a cancel scope that `_pause` can reach while it is open. A class,
    not a generator: it is on every request's path."""

    __slots__ = ("_queue", "_scope")

    def __init__(self, queue: set[anyio.CancelScope], probe: bool) -> None:
        self._scope = anyio.CancelScope()
        self._queue = queue
        if not probe:
            queue.add(self._scope)

    def __enter__(self) -> anyio.CancelScope:
        try:
            return self._scope.__enter__()
        except BaseException:
            self._queue.discard(self._scope)
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        try:
            return self._scope.__exit__(exc_type, exc, traceback)
        finally:
            self._queue.discard(self._scope)


def exc_kind(exc: BaseException) -> str:
    return getattr(exc, "kind", type(exc).__name__)
