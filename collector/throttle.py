"""How fast we may ask, and how long we wait after being told no.

Two pieces, both with injectable time and randomness so tests run in milliseconds:

- `RetryPolicy`: one retry policy for every call (the formula is in its docstring).
- `RateLimiter`: one per endpoint, shared by every task. It paces requests to a rate, pauses
  everyone when the API says `Retry-After`, and slows down for everyone when any task is
  throttled, so one 429 is not followed by a hundred more.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from collector.errors import (
    APIError,
    ArchiveError,
    ArchiveTooLarge,
    RequestError,
    ServerError,
    ThrottledError,
)

MAX_RETRY_AFTER = 600.0  # never sleep longer than 10 minutes on a server's say-so

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_retry_after(value: str | None, *, now: Clock = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date.

    Returns None when the header is absent or unreadable; caps at `MAX_RETRY_AFTER`;
    a date in the past means 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_retryable(exc: BaseException) -> bool:
    """The explicit list of outcomes worth another try."""
    if isinstance(exc, ArchiveTooLarge):
        return False
    return isinstance(exc, (ThrottledError, ServerError, RequestError, ArchiveError))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, `Retry-After` as a floor.

    Before retry number n (n = 1, 2, ...) we wait

        delay(n) = max(retry_after, uniform(0, min(cap, base * 2 ** (n - 1))))

    where retry_after is what a 429 said (0 if nothing; at most `MAX_RETRY_AFTER`). We stop
    after `max_attempts` attempts in all (`throttled_attempts` when the latest failure was a
    429: being told to slow down is not the server failing, and the shared limiter is already
    slowing everyone), or when the next wait would end more than `max_elapsed` seconds after
    the first attempt, whichever comes first. Retried: 429, 5xx, connection errors and
    timeouts, broken archives (see `is_retryable`); everything else is final at once.
    """

    base: float = 1.0
    cap: float = 60.0
    max_attempts: int = 8
    throttled_attempts: int = 30
    max_elapsed: float = 900.0
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        jittered = self.random() * ceiling
        return max(jittered, retry_after or 0.0)

    def next_delay(self, exc: BaseException, attempt: int, elapsed: float) -> float | None:
        """The wait before attempt `attempt + 1`, or None if `exc` after `attempt` tries is final."""
        if not is_retryable(exc):
            return None
        throttled = isinstance(exc, ThrottledError)
        if attempt >= (self.throttled_attempts if throttled else self.max_attempts):
            return None
        retry_after = exc.retry_after if throttled else None
        wait = self.delay(attempt, retry_after)
        if elapsed + wait > self.max_elapsed:
            return None
        return wait


class RateLimiter:
    """A shared pace for one endpoint: at most `rate` requests per second, in bursts of `burst`.

    Each caller reserves the next free slot (virtual scheduling, like GCRA), so waiting
    callers are served in order and nothing loops. A throttled request (`throttled()`)
    cuts the rate for everyone by `backoff` (multiplicative decrease) and, if the API said
    `Retry-After`, holds every caller until then. Successes (`succeeded()`) win the rate
    back slowly (additive increase), never beyond the configured rate.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int | None = None,
        min_rate: float = 0.5,
        backoff: float = 0.7,
        recovery: float = 0.05,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self.rate = rate
        self.min_rate = min(min_rate, rate)
        self.burst = burst if burst is not None else max(1, math.ceil(rate))
        self.backoff = backoff
        self.recovery = recovery
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._last_decrease = -math.inf

    async def acquire(self) -> None:
        """Wait for this caller's turn."""
        while True:
            now = self._clock()
            interval = 1.0 / self.rate
            slot = max(self._next_slot, now - (self.burst - 1) * interval, self._paused_until)
            self._next_slot = slot + interval
            if slot > now:
                await self._sleep(slot - now)
            if self._clock() >= self._paused_until:
                return
            # A Retry-After arrived while we slept: take a new slot after the pause.

    def throttled(self, retry_after: float | None = None) -> None:
        now = self._clock()
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        # Many requests in flight get their 429s together: count them as one signal.
        if now - self._last_decrease >= 1.0 / self.rate:
            self.rate = max(self.min_rate, self.rate * self.backoff)
            self._last_decrease = now

    def succeeded(self) -> None:
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.recovery)


async def retrying(
    call: Callable[[], Awaitable],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    clock: Clock = anyio.current_time,
    sleep: Sleep = anyio.sleep,
):
    """Run `call` until it succeeds or `policy` says the failure is final; re-raise that one.

    Returns `(result, attempts)`. Only collector's own errors are considered; cancellation
    and bugs pass straight through.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except (APIError, RequestError, ArchiveError) as exc:
            wait = policy.next_delay(exc, attempt, clock() - started)
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, wait)
        await sleep(wait)
