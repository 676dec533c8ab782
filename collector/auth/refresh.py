"""One credential that expires, shared by every task: refreshed ahead of its end, once.

A fleet run sends thousands of requests at a time. When the IAM token or the temporary AK/SK
nears its end, the first task to notice fetches a new one and every other task waits for that
same fetch (single flight): 5,000 concurrent requests cause one call to IAM, not 5,000. The
refresh starts early, when less than ``max(min_margin, fraction x lifetime)`` is left (5 min or
10 %; never more than half the lifetime, so a short-lived credential is not refetched at
every request); until the credential really ends, a failed early refresh is logged and the
current one kept, with the next try `retry_interval` later.

`rejected` is the 401 path: the first task to report the credential it used fetches another
(forced), the others wait for that fetch. A fresh credential that is rejected again within
`reject_window` is final: refetching would only loop. Time is the injected `clock` (Unix
seconds, since expiry times are wall-clock times), so tests move it by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from collector.auth.protocol import Generation
from collector.errors import ProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
# What a fetch returns: the credential and when it ends (Unix time), or None if it never does.
Fetch = Callable[[], Awaitable[tuple[T, float | None]]]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When an expiring credential is renewed: once less than `min_margin` (5 min) or
    `fraction` (10 %) of its lifetime is left, whichever comes later.

    Late, because each renewal is a request to IAM or the identity agent, and a run of T
    seconds on credentials that live L should cost about T / L of them (issue 9: at most
    T / L + 2); early enough that a clock a little off or a slow answer never lets a request
    go out with an expired credential (the 401 path covers what slips through).
    """

    min_margin: float = 300.0  # refresh when less than this is left...
    fraction: float = 0.1  # ...or less than this share of the lifetime, whichever is less
    retry_interval: float = 30.0  # after a failed early refresh, keep the current one this long
    reject_window: float = 60.0  # a credential fetched after a 401 and rejected within this is final

    def refresh_at(self, issued_at: float, expires_at: float) -> float:
        lifetime = expires_at - issued_at
        margin = min(self.min_margin, self.fraction * lifetime)
        return expires_at - margin


DEFAULT_REFRESH = RefreshPolicy()  # frozen: one instance serves as every default


@dataclass(frozen=True, slots=True)
class Lease(Generic[T]):
    """The current credential and what `apply` hands back for it."""

    value: T = field(repr=False)
    generation: Generation
    expires_at: float | None
    refresh_at: float | None


class _Flight:
    """One fetch in progress; the tasks waiting for it read `error` when it is done."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


class Refresher(Generic[T]):
    """Holds one expiring credential; `get` and `rejected` share a single fetch in flight."""

    def __init__(self, fetch: Fetch[T], *, clock: Clock, policy: RefreshPolicy = DEFAULT_REFRESH, what: str) -> None:
        self._fetch = fetch
        self._clock = clock
        self.policy = policy
        self.what = what  # "IAM token for project 0f1e...", for log lines and errors
        self._lease: Lease[T] | None = None
        self._flight: _Flight | None = None
        self._retry_at = float("-inf")
        self.fetches = 0  # fetches started, for tests and stats

    def __repr__(self) -> str:
        return f"<Refresher {self.what}>"

    def owns(self, generation: object) -> bool:
        return isinstance(generation, Generation) and generation.owner is self

    async def get(self) -> Lease[T]:
        """The current credential, fetched first if there is none or it is due for refresh."""
        while True:
            lease = self._lease
            now = self._clock()
            if lease is not None and (lease.refresh_at is None or now < lease.refresh_at):
                return lease
            # Due for refresh; still usable meanwhile if it has not expired.
            usable = lease if lease is not None and (lease.expires_at is None or now < lease.expires_at) else None
            if usable is not None and now < self._retry_at:
                return usable
            flight = self._flight
            if flight is None:
                try:
                    await self._fly(forced=False)
                except Exception as exc:
                    if usable is None:
                        raise
                    left = "" if usable.expires_at is None else f" for {usable.expires_at - self._clock():.0f} s more"
                    log.warning("%s: early refresh failed (%s); the current one is valid%s", self.what, exc, left)
                    return usable
                continue
            await flight.done.wait()
            if flight.error is not None and self._lease is lease:
                if usable is not None:
                    return usable
                raise flight.error.with_traceback(None)

    async def rejected(self, generation: object) -> bool:
        """True if a credential other than `generation` is available now, after one fetch at most."""
        lease = self._lease
        if lease is None or not self.owns(generation):
            return False
        if lease.generation is not generation:
            return True  # already replaced since that request was sent
        assert isinstance(generation, Generation)
        if generation.forced and self._clock() - generation.issued_at < self.policy.reject_window:
            log.warning("%s: rejected again right after it was fetched; not fetching another", self.what)
            return False
        flight = self._flight
        if flight is None:
            await self._fly(forced=True)
        else:
            await flight.done.wait()
            if flight.error is not None and self._lease is lease:
                raise flight.error.with_traceback(None)
        return self._lease is not lease

    async def _fly(self, *, forced: bool) -> None:
        """Fetch once; tasks arriving meanwhile wait on the flight. Cancellation leaves no trace."""
        flight = self._flight = _Flight()
        previous = self._lease
        self.fetches += 1
        try:
            value, expires_at = await self._fetch()
            now = self._clock()
            if expires_at is not None and expires_at <= now:
                raise ProtocolError(f"{self.what}: the credential received has already expired (check the clock)")
            if forced and previous is not None and value == previous.value:
                log.warning("%s: the source answered the credential that was just rejected", self.what)
                return
            self._lease = Lease(
                value,
                Generation(now, forced=forced, owner=self),
                expires_at,
                None if expires_at is None else self.policy.refresh_at(now, expires_at),
            )
            log.debug("%s: fetched%s", self.what, "" if expires_at is None else f", valid for {expires_at - now:.0f} s")
        except Exception as exc:
            flight.error = exc
            self._retry_at = self._clock() + self.policy.retry_interval
            raise
        finally:
            self._flight = None
            flight.done.set()
