"""How fast we may ask, and how long we wait after being told no.

Two pieces, both with injectable time and randomness so tests run in milliseconds:

- `RetryPolicy`: one retry policy for every call (the formula is in its docstring).
- `RateLimiter`: one per endpoint, shared by every task. It paces requests to a rate, pauses
  everyone when the API says `Retry-After`, and slows down for everyone when any task is
  throttled, so one 429 is not followed by a hundred more.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import math
import random as _random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from collector.errors import (
    APIError,
    ArchiveDamaged,
    ArchiveError,
    ArchiveTooLarge,
    RequestError,
    RequestTimeout,
    ServerError,
    ThrottledError,
)

MAX_RETRY_AFTER = 600.0  # never sleep longer than 10 minutes on a server's say-so
MIN_RATE = 0.5  # requests/s: a limiter's rate never falls below it (unless started below it)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

# The clock and sleep of the hot paths (every request passes the limiter and `retrying`).
# asyncio's loop clock is time.monotonic, and anyio.current_time/anyio.sleep call into it
# after looking up the running async library on every call: about 5 % of the event loop's
# time at 10,000 servers. aiohttp ties the collector to asyncio anyway. Cancellation is
# unchanged: anyio's cancel scopes cancel an asyncio.sleep like any other await.
monotonic: Clock = time.monotonic
sleep: Sleep = asyncio.sleep


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
        except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year past 2**31
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_retryable(exc: BaseException) -> bool:
    """The explicit list of outcomes worth another try."""
    if isinstance(exc, (ArchiveTooLarge, ArchiveDamaged)):
        return False
    return isinstance(exc, (ThrottledError, ServerError, RequestError, ArchiveError))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, `Retry-After` as a floor.

    Before retry number n (n = 1, 2, ...) we wait

        delay(n) = max(retry_after, uniform(0, min(cap, base * 2 ** (n - 1))))

    where retry_after is what a 429 or a 503 said (0 if nothing; at most `MAX_RETRY_AFTER`). We stop
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
        ceiling = min(self.cap, self.base * 2.0 ** (retry - 1))
        jittered = self.random() * ceiling
        return max(jittered, retry_after or 0.0)

    def next_delay(self, exc: BaseException, attempt: int, elapsed: float) -> float | None:
        """The wait before attempt `attempt + 1`, or None if `exc` after `attempt` tries is final."""
        if not is_retryable(exc):
            return None
        throttled = isinstance(exc, ThrottledError)
        if attempt >= (self.throttled_attempts if throttled else self.max_attempts):
            return None
        wait = self.delay(attempt, getattr(exc, "retry_after", None))
        if elapsed + wait > self.max_elapsed:
            return None
        return wait


class RateLimiter:
    """A shared, adaptive pace for one endpoint: it learns the API's request budget.

    Pacing: callers take the next free slot at `rate` per second in turn (virtual scheduling,
    like GCRA), with up to `burst_seconds` of unused rate allowed at once after a lull while
    start-up looks for the budget, and at most `KNOWN_BURST` once one is known (an earlier
    run's, or a refusal): a request the API's bucket refuses waits out its Retry-After (a
    second at least), where a burst gains a tenth of a second or so. Issue 14's stand-in of
    the API holds a fifth of a second (20 requests at 100 a second): with a quarter second's
    burst, a second run was refused 11-14 times, most at its start, the slowest exports among
    them (16.4-16.9 s for 300 servers); with a tenth, 2 (15.9-16.2 s). The
    turn goes by priority: a download holds one of few transfer slots and an export starts
    work on the server, so both go before polls, which only ask whether work is done.

    Starting, after TCP's slow start (RFC 5681) and BBR's start-up: until the first refusal the
    rate is

        rate = min(GAIN * max(latest, measured),  max_rate)        (GAIN = 2)

    where `latest` is the rate of successful requests in the last round and
    `measured` its smoothed value while they flow (lulls are left out, see `_MeasuredRate`):
    while the API takes all we send, the rate doubles every round (`ROUND`, a quarter of a
    second), so `--rate 20` finds a budget of 100 in under a second and one of 1,000 in under
    two; while we have less to send than the rate allows, it stays at twice what we send, so
    it never races far ahead of what was tried. Start-up also
    ends, without a decrease, when answers slow down (a round's quickest answer more than twice
    the quickest seen, and 50 ms more: HyStart's delay test, RFC 9406), when the caller says
    when each request was sent. At the first refusal it hands over to CUBIC at the rate of the
    round before the refused request's, the last that got through whole, and probes on from
    there:

        rate = rate_when_sent / GAIN;  w_max = HANDOVER * rate;  K = cbrt((w_max - rate) / C)

    (not back to the refused rate: doubling reaches past the budget by what a bucket's burst
    and the answers still in flight hid, as much as three times it; but half-way, along the
    concave part of the curve, so that a budget above the rate is reached within a second
    or two, not the four of a convex climb from it.)

    (A slow start that doubled until the first 429 was tried before and overshot into bursts
    of 429s; this one grows only with what was measured getting through, a refusal halves it,
    and the refusals of requests already in flight count once, as below.)

    Adapting, after CUBIC (RFC 9438) as botocore's "adaptive" retry mode applies it to request
    rates. CUBIC rather than plain AIMD because it returns quickly to the rate that last
    worked and then probes carefully around it, where AIMD's linear climb would spend most of
    a sweep below the budget. On a 429 (`throttled()`):

        w_max = rate;  rate = max(beta * rate,  DELIVERED * min(rate, delivered))
        w_max = max(w_max, rate);  K = cbrt((w_max - rate) / C)

    (with w_max = rate * (1 + beta) / 2 first when refused below the last w_max: RFC 9438's
    fast convergence; K as RFC 9438 4.2 has it, so the curve starts at the new rate). The
    floor is BBR's delivery-rate estimate: `delivered` is what got through per second of
    requests flowing since the latest refusal at least `DELIVERY_SPAN` such seconds before this
    one (0 if none; see `_measure`), any request's refusal: the exports' limiter's too,
    which this one `witnessed`. An API's token bucket that refuses us is empty at each
    refusal, so what got through between two is its refill rate, its budget (`budget`), and a
    cut far below it (to 0.7 of the rate) would cost seconds of climbing back for nothing.
    Where the budget is known, not only at least (`_budget_from`: measured while the demand
    filled the rate, or an earlier run's), the cut goes to that floor even from far above
    (rate = DELIVERED * min(rate, budget)) and the curve's plateau is the budget
    (w_max = min(w_max, budget)): the rate a bucket's burst let it probe to is no rate to
    return to.
    And on each success, t seconds after that 429:

        rate = min(C * (t - K) ** 3 + w_max,  2 * measured,  max_rate)

    we never send faster than twice what we saw getting through. Time when the rate is not in
    use does not count in t (RFC 7661: a window the sender does not fill is not grown): while
    no caller has waited for its slot for `APP_LIMITED` seconds, or during a lull (see
    `_MeasuredRate`), the curve waits, and resumes where it was when the demand fills it again.

    A rate an earlier run learned (`known`, `collector.run.learned`) is a budget already found:
    no start-up (its doubling went past it into a burst of refusals), the curve's plateau there,
    and until this run measures its own (in a window whose demand filled the rate), a
    decrease's floor as `delivered` below; a rate still refused at that floor a quarter second
    after the cut there is lowered a tenth a refusal (the budget is lower now).

    One congestion event, one decrease (TCP counts one loss per window): a refusal of a request
    sent before the last decrease says nothing new (the decrease already answered it), so a
    burst of 429s from requests in flight counts once. Until a request gets through again,
    refusals of requests sent within `GRACE` seconds of the decrease (or of the end of a
    fleet-wide pause, below, when the API asked everyone to wait) are that same event too:
    waves of refusals during a 20 s outage cost one decrease, not one each (which took the
    rate to its floor, and the run minutes to climb back: issue 17). Without a pause, an API
    that refuses everything is still met with a decrease every `GRACE` seconds.

    A `Retry-After` delays its own request (the retry policy takes it as a floor). It holds
    every caller only when the API's budget is plainly exhausted: refusals with a Retry-After
    for `EXHAUSTED_SUBJECTS` different servers within `EXHAUSTED_WINDOW` seconds, each of a
    request sent after the last decrease (those sent before are the wave the decrease
    answered: a token bucket refuses a few at once, each `Retry-After: 1`, and pausing
    everyone for that second cost a second of the budget each time), and none followed by a
    request sent after it that got through (a bucket at its refill rate refuses one request
    in a few dozen, each `Retry-After: 1`: three such within two seconds are the rate
    probing its edge, not exhaustion, and each pause cost a second of it: issue 14); and then for
    `FLEET_PAUSE` seconds at most, re-armed while refusals go on. One server's, or one
    download origin's, long Retry-After costs that server only (issue 17: one `503
    Retry-After: 600` stood the whole fleet still for ten minutes). botocore and urllib3 take
    a Retry-After per request; botocore's adaptive mode slows the shared rate on any throttle,
    as this limiter does.
    """

    EXHAUSTED_SUBJECTS = 3
    EXHAUSTED_WINDOW = 2.0
    FLEET_PAUSE = 60.0
    GAIN = 2.0  # start-up: the rate is this many times what gets through
    ROUND = 0.25  # start-up: seconds of each measuring round (a bucket of `_MeasuredRate`)
    GRACE = 1.0  # seconds after a decrease (or a pause) whose refusals are still its event
    SLOWER = 2.0  # start-up ends when a round's quickest answer is this many times the quickest
    SLOWER_BY = 0.05  # ... and this many seconds more
    HANDOVER = 1.5  # start-up's first refusal: w_max is this many times the rate it sets
    DELIVERED = 0.9  # a decrease goes no lower than this share of the rate measured getting through
    DELIVERY_SPAN = 1.0  # ... measured over at least this many seconds since the last decrease
    MARK_SPACING = 0.25  # seconds: refusals closer to the last window's start start none of their own
    APP_LIMITED = 0.5  # seconds since a caller last waited for its slot, past which the curve waits
    IN_USE = 0.75  # share of a window of `_measure` with the rate in use, to measure a lower budget
    KNOWN_BURST = 0.1  # seconds of unused rate at once, at most, once a budget is known (past start-up)

    def __init__(
        self,
        rate: float,
        *,
        max_rate: float | None = None,
        min_rate: float = MIN_RATE,
        beta: float = 0.7,
        scale: float = 0.4,
        burst_seconds: float = 0.25,
        known: float | None = None,
        clock: Clock = monotonic,
        sleep: Sleep = sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = max_rate if max_rate is not None else math.inf
        self.rate = min(rate, self.max_rate)
        self.min_rate = min(min_rate, self.rate)
        self.beta = beta
        self.scale = scale
        self.burst_seconds = burst_seconds
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._refusals: deque[tuple[float, str]] = deque()  # (when, whose) Retry-After refusals, in the window
        self._busy = False  # someone holds the turn (is taking or waiting for the next slot)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # by priority, then arrival
        self._arrivals = itertools.count()
        now = clock()
        self._w_max = self.rate
        self._epoch = now  # when the current CUBIC curve started: the last decrease, or now
        self._k = 0.0
        self._last_decrease = -math.inf
        self._learned = self.rate
        self.starting = True  # in start-up: growing with what gets through, until the first refusal
        # (since, rate) of start-up's last rounds: the rate a refused request was sent at
        self._start_up_rates: deque[tuple[float, float]] = deque([(now, self.rate)], maxlen=16)
        self._held_until = -math.inf  # refusals of requests sent before this are the last event's
        self._delivered = True  # a request sent since the last decrease got through
        self._got_through = 0  # successes in all
        self._measured = False  # `_learned` is what got through between refusals it witnessed
        self._lulls = 0.0  # seconds of lulls in all (see `_MeasuredRate`)
        self._app_limited = 0.0  # seconds in all when the rate was not in use (see `succeeded`)
        self._floored_at = -math.inf  # when a cut brought the rate down to an earlier run's floor
        # (when, successes, lulls, app-limited seconds by then) at the latest refusals: the
        # windows of `_measure`
        self._refusal_marks: deque[tuple[float, int, float, float]] = deque(maxlen=8)
        self._quickest = math.inf  # the quickest answer seen (start-up's latency test)
        self._round_quickest = math.inf  # ... in the current measuring bucket
        self._in_use_at = -math.inf  # when a caller last found its slot not yet due
        self.measured = _MeasuredRate(now, floor=self.rate / 2)
        self.measured.bucket = self.ROUND
        self._known = known  # the budget an earlier run learned, until this one measures its own
        if known is not None:
            self.starting = False
            self.measured.bucket = _MeasuredRate.BUCKET
            self._learned = self._w_max = max(known, self.rate)
            self._k = ((self._w_max - self.rate) / self.scale) ** (1 / 3)

    async def acquire(self, priority: int = 0) -> float:
        """Wait for this caller's turn; returns the clock time it was sent at.

        Waiters queue by `priority` (lower first), then in arrival order, and only the first
        sleeps, so a slot is computed at the rate in force when it comes due: a thousand
        waiters do not book a thousand slots at a rate the limiter has since changed.
        """
        if self._busy:
            # A bare asyncio future in a heap tuple (priority, arrival, future): 8,000 callers
            # waiting cost ~200 bytes each, where a dataclass holding an anyio.Event cost ~370
            # (issue 14). Arrivals are unique, so the future is never compared.
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._pass_turn()  # we were handed the turn as we were cancelled
                else:
                    turn.cancel()  # skipped by `_pass_turn`
                raise
        self._busy = True
        try:
            while True:
                now = self._clock()
                wait = self._take_slot(now)
                if not wait:
                    return now
                await self._sleep(wait)
        finally:
            self._pass_turn()

    def try_acquire(self) -> float | None:
        """`acquire` without waiting: the clock time, when a slot is free now and nobody is
        waiting for one; else None (and nothing taken). Lets a caller skip what it would set
        up only for a wait (a cancel scope, a task switch): most requests of a run that is not
        limited find their slot free."""
        if self._busy:
            return None
        now = self._clock()
        return None if self._take_slot(now) else now

    def spare(self) -> float | None:
        """Seconds until the next slot comes free with nobody waiting for it (0.0: free now);
        None while callers wait. What a caller with nothing urgent to send can use without
        taking a slot from anyone (see `collector.sweep.early`)."""
        if self._busy:
            return None
        now = self._clock()
        return max(0.0, self._free_slot(now) - now)

    def _free_slot(self, now: float) -> float:
        """When the next slot comes free: after the last one taken, at most `burst_seconds`
        of unused rate back (`KNOWN_BURST` past start-up), and not during a fleet-wide pause."""
        burst = self.burst_seconds if self.starting else min(self.burst_seconds, self.KNOWN_BURST)
        return max(self._next_slot, now - burst, self._paused_until)

    def _take_slot(self, now: float) -> float:
        """Take the next slot if it is due (0.0); else the seconds until it is, taking nothing."""
        slot = self._free_slot(now)
        if slot <= now:
            self._next_slot = slot + 1.0 / self.rate
            return 0.0
        self._in_use_at = now  # the rate holds a caller back: it is in use
        return slot - now

    def _pass_turn(self) -> None:
        while self._waiting:
            turn = heapq.heappop(self._waiting)[2]
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    def throttled(
        self, retry_after: float | None = None, *, sent_at: float | None = None, subject: str | None = None
    ) -> None:
        """A request was refused as too many (429, or 503 and the like, with `retry_after` if
        it said one); `subject` names whose request it was (a server id), for telling one
        server's trouble from the API's budget."""
        now = self._clock()
        if sent_at is not None and sent_at < self._last_decrease:
            return  # sent at the old rate; the decrease already answered it (nor is it exhaustion)
        if retry_after:
            self._refused(now, retry_after, subject)
        if not self._delivered and (sent_at if sent_at is not None else now) < self._held_until:
            return  # the API still refuses everyone: the same event as the last decrease
        if self.starting:
            # The refused rate was reached by doubling past what a bucket's burst and the
            # answers in flight hid: not a rate to return to. Probe on from the one before.
            self.starting = False
            refused = self._rate_at(sent_at) if sent_at is not None else self.rate
            self.rate = self._learned = max(self.min_rate, min(self.rate, refused) / self.GAIN)
            # The budget lies between the two: the curve aims half-way, concave, so it is back
            # near a budget above the rate in a second or so, where a convex climb from the
            # rate itself (K = 0) took four (issue 14), and a refusal on the way meets the
            # delivery-rate floor.
            self._w_max = self.rate * self.HANDOVER
            self._k = ((self._w_max - self.rate) / self.scale) ** (1 / 3)
            self._start_up_rates.clear()
            self.measured.bucket = _MeasuredRate.BUCKET
        else:
            # Fast convergence (RFC 9438, 4.7): refused below where it was refused last time,
            # the budget has shrunk, or a pause's refill made it look larger: remember less.
            fell = self.rate < self._w_max
            # The budget: measured, or an earlier run's (see `_budget_from`).
            measured, in_use = self._measure(now)
            budget, exact = self._budget_from(measured, in_use)
            refused = self.rate
            self._w_max = self.rate * (1 + self.beta) / 2 if fell else self.rate
            # A token bucket that refuses still lets its refill rate through: never cut below
            # (a share of) the budget, and probe on from there. A rate already below that
            # share stays: a cascade of refusals (each of a request sent after the last cut,
            # the bucket still empty from a burst) otherwise cut by a tenth each, to 45 % of
            # the budget within a quarter second (issue 14).
            floor = min(self.rate, self.DELIVERED * budget)
            if not in_use and self._known is not None and self._known > measured:
                # ... unless the budget is an earlier run's and the rate is still refused at
                # its floor a while after the cut that brought it there (no burst's cascade,
                # then): the budget is lower now. A tenth a refusal until this run measures its
                # own (started from 170 against 100, a run stayed at 153 for the second a
                # measure takes: 96 refusals of its 300 export requests).
                if self.rate > 1.01 * self.DELIVERED * budget:
                    self._floored_at = now
                elif now - self._floored_at >= self.MARK_SPACING:
                    floor = self.DELIVERED * self.rate
            if exact:
                # Nor above it, where the budget is known (not only at least): a rate a
                # bucket's burst let climb past it (1.6 x), cut by 0.3 only, was refused again
                # at once; and the curve's plateau is the budget, not where the burst had let
                # the rate climb (cut to 1.1 x it, it went on climbing above it: issue 14).
                self.rate = max(self.min_rate, floor)
                self._w_max = min(self._w_max, budget)
            else:
                self.rate = max(self.min_rate, self.rate * self.beta, floor)
            self._w_max = max(self._w_max, self.rate)
            self._k = ((self._w_max - self.rate) / self.scale) ** (1 / 3)
            # What is kept for the next run: the budget measured, not the rate cut below it by
            # a cascade of refusals (a run ending in one kept 66 against 100: issue 14); else
            # an earlier run's, unless refused below it; else the rate this cut set, not the
            # one refused, which is above the budget (a first run refused only in start-up's
            # cascade kept 120 against 100, where it was last refused; a next run that starts
            # above the budget is refused until it measures its own: issue 14).
            if measured:
                self._learned = budget
            else:
                self._learned = min(refused, budget) if budget else self.rate
        self._epoch = self._last_decrease = now
        self._mark_refusal(now)
        self._delivered = False
        # Until something gets through, refusals within a grace of this decrease (or of the
        # end of a fleet-wide pause) are this event. A hold armed before it is over.
        self._held_until = max(now, self._paused_until) + self._grace()

    def witnessed(self) -> None:
        """The endpoint refused a request (this limiter's, or another's that shares its
        budget: an export's, see `Gateway.send`): its bucket was empty then, the end of one
        window of `_measure` and the start of the next. What got through in the window
        it ends is what the limiter `learned` (it may never be refused itself: the exports'
        refusals went to their own limiter, and the rate it reached past them was kept for the
        next run's start, twice the budget: issue 14), and no rate above it is kept: the
        curve starts again from there (the polls after the exports otherwise went out at
        twice the budget, into a burst of refusals)."""
        now = self._clock()
        measured, in_use = self._measure(now)
        budget = self._budget_from(measured, in_use)[0]
        if measured:
            self._learned, self._measured = budget, True
        # Nothing measured yet, an earlier run's budget caps it too: the polls' limiter, which
        # passes the export requests, probed on to 1.6 x it while they were refused.
        if budget and self.rate > budget:
            self.starting = False  # its purpose, finding the budget, is served
            self.measured.bucket = _MeasuredRate.BUCKET
            self.rate = self._w_max = max(self.min_rate, budget)
            self._k, self._epoch = 0.0, now
        self._mark_refusal(now)

    @property
    def budget(self) -> float | None:
        """What the API lets through per second, as far as measured: `_measure` now,
        the refill of its bucket if it refuses now, else at least that (we may have sent less);
        the budget an earlier run learned (`known`) where this run measured less without
        filling its rate, or nothing yet (see `_budget_from`); else None. `learned` may be far
        above it: start-up's refusal came past a bucket's burst."""
        return self._budget_from(*self._measure(self._clock()))[0] or None

    def _measure(self, now: float) -> tuple[float, bool]:
        """What got through per second of requests flowing since one of the latest refusals
        (`witnessed`) at least `DELIVERY_SPAN` such seconds ago, the most of those windows;
        0 if there is none. A refusal says the API's bucket is empty, so between two refusals
        all that got through was its refill: its budget. Lulls are left out of the seconds
        (the bucket filled to its brim and wasted the rest: counted, they made a budget of
        100 look like 40); the brim's burst after one is in the count, an over-estimate of at
        most the bucket over the window, which the next refusals correct. A window with less to
        send than the budget, though not a lull, under-counts it (a second of a few polls made
        a budget of 100 look like 60, and the rate climbed back from 54 for seconds): hence the
        most of the windows. Not only since the last decrease: two refusals a fifth of a second
        apart (the rate cut just above the budget, then a step of the climb) left the second
        none to measure, and the rate was cut to 0.7 of it, 25 % below the budget, for seconds
        (issue 14). Never over less than `DELIVERY_SPAN`: an API that counts per fixed second
        lets a whole second's budget through in a moment.

        And whether one of those windows had the rate in use for most of its span (`IN_USE`):
        only such a window measures a budget below what was known."""
        idle = now - self.measured.last  # a lull going on, not yet in `_lulls`
        lulls = self._lulls + (idle if idle >= _MeasuredRate.IDLE else 0.0)
        best, in_use = 0.0, False
        for when, got_through, lulls_then, limited_then in self._refusal_marks:
            span = now - when - (lulls - lulls_then)
            if span >= self.DELIVERY_SPAN:
                best = max(best, (self._got_through - got_through) / span)
                in_use = in_use or self._app_limited - limited_then <= (1 - self.IN_USE) * span
        return best, in_use

    def _budget_from(self, measured: float, in_use: bool) -> tuple[float, bool]:
        """The budget as best known, from what `_measure` says (0 if nothing is), and whether
        it is the budget itself rather than at least it: what was measured getting through,
        or the budget an earlier run learned (`known`) where that is more and no window with
        the rate in use measured less. A window whose demand did not fill the rate
        under-counts the budget (the polls of a run's quiet middle made a budget of 100 look
        like 84, and the rate was cut to 80 and climbed back for four seconds: issue 14); one
        that did measures it, a budget lowered since included, and the earlier one is
        forgotten."""
        if in_use or self._known is None:
            return measured, in_use
        return max(measured, self._known), True

    def _mark_refusal(self, now: float) -> None:
        """A window of `_measure` starts here, unless one started less than
        `MARK_SPACING` ago: a cascade of refusals from one burst pushed the mark a second or
        more back out of the few kept, and the budget measured from it was forgotten just as
        the cascade needed it as the floor of its cuts (issue 14)."""
        marks = self._refusal_marks
        if not marks or now - marks[-1][0] >= self.MARK_SPACING:
            marks.append((now, self._got_through, self._lulls, self._app_limited))

    def _refused(self, now: float, retry_after: float, subject: str | None) -> None:
        refusals = self._refusals
        refusals.append((now, subject or f"#{len(refusals)}"))
        while refusals and now - refusals[0][0] > self.EXHAUSTED_WINDOW:
            refusals.popleft()
        if len({whose for _, whose in refusals}) >= self.EXHAUSTED_SUBJECTS:
            self._paused_until = max(self._paused_until, now + min(retry_after, self.FLEET_PAUSE))
            # What is sent in the first moments after the pause meets the same exhaustion.
            self._held_until = max(self._held_until, self._paused_until + self._grace())

    def _grace(self) -> float:
        """How long after a decrease or a fleet-wide pause refusals are still its event: long
        enough for requests from several servers to go out and be answered."""
        return max(self.GRACE, self.EXHAUSTED_SUBJECTS / self.rate)

    @property
    def learned(self) -> float:
        """The rate this limiter found the API to take: what got through between its last two
        decreases (the refill of a token bucket, see `_measure`), else the rate its last
        decrease set, if it was ever refused (the rate refused is above the budget; for
        start-up's refusal, the round before, the last that got through whole; the budget an
        earlier run learned, if not refused below it), else what got through between two
        refusals of others' requests (`witnessed`), else the earlier run's budget, else where
        the demand took it."""
        if self.knows:
            return self._learned
        # Never refused: an earlier run's budget still stands. Not the rate this run climbed
        # to: a bucket's burst let a run's busy last seconds probe to 1.4 x the budget
        # unrefused, and the next run would have started there (issue 14).
        return self.rate if self._known is None else self._known

    @property
    def knows(self) -> bool:
        """Has it met the API's budget (refused, or measured between refusals it witnessed),
        so that `learned` is more than where the demand took it?"""
        return self._measured or self.refused

    @property
    def refused(self) -> bool:
        """Has the API refused this limiter's requests as too many (its budget binds)?"""
        return self._last_decrease > -math.inf

    @property
    def paused_for(self) -> float:
        """Seconds every caller still waits because the API's budget is exhausted (0: none)."""
        return max(0.0, self._paused_until - self._clock())

    def succeeded(self, *, sent_at: float | None = None) -> None:
        """A request got through; `sent_at` (what `acquire` returned for it), when given, lets
        start-up watch the answers' latency."""
        now = self._clock()
        if sent_at is None or sent_at >= self._last_decrease:
            self._delivered = True
        self._got_through += 1
        refusals = self._refusals
        while refusals and refusals[0][0] <= (now if sent_at is None else sent_at):
            refusals.popleft()  # something asked after it got through: no sign of exhaustion
        previous = self.measured.last
        closed = self.measured.add(now, interval=1 / self.rate)
        self._lulls += self.measured.lull
        if not self.starting:
            if now - self._in_use_at > self.APP_LIMITED and previous > -math.inf:
                # The rate was not in use (no caller waited for a slot: less to send than it
                # allows), so it was not tried: the curve waits, as RFC 7661 has a sender keep
                # a window it does not fill. Else, in a run's quiet middle, the rate drifted up
                # to twice what was sent, four times the budget, and the next burst of polls
                # went out at it into a cascade of refusals and a fleet-wide pause (issue 14).
                self._epoch = min(now, self._epoch + (now - previous))
                self._app_limited += now - previous
            elif self.measured.lull:
                # Time with nothing to send is no probing: the curve waits for us (Linux's CUBIC
                # moves its epoch by the idle time), else a limiter idle for ten seconds (polls
                # waiting for their exports) came back at a rate of t**3, a burst into refusals.
                self._epoch = min(now, self._epoch + self.measured.lull)
        if self.starting:
            if sent_at is not None:
                self._watch_latency(now - sent_at, closed)
            if self.starting:
                got_through = max(self.measured.latest, self.measured.rate)
                self.rate = max(self.min_rate, min(self.GAIN * got_through, self.max_rate))
                if closed:
                    self._start_up_rates.append((now, self.rate))
                return
        t = now - self._epoch
        cubic = self.scale * (t - self._k) ** 3 + self._w_max
        self.rate = max(self.min_rate, min(cubic, 2 * self.measured.rate, self.max_rate))

    def _rate_at(self, when: float) -> float:
        """Start-up's rate at clock time `when` (it changes as each measuring round closes)."""
        rate = self._start_up_rates[0][1]
        for since, then in self._start_up_rates:
            if since > when:
                break
            rate = then
        return rate

    def _watch_latency(self, latency: float, closed: bool) -> None:
        """Start-up's delay test: a round (measuring bucket) whose quickest answer is much
        slower than the quickest seen means a queue is building: stop doubling, keep the rate,
        and probe on from it as CUBIC does."""
        if closed:
            slower = self._round_quickest > max(self.SLOWER * self._quickest, self._quickest + self.SLOWER_BY)
            self._quickest = min(self._quickest, self._round_quickest)
            self._round_quickest = math.inf
            if slower:
                self.starting = False
                self.measured.bucket = _MeasuredRate.BUCKET
                self._w_max, self._k, self._epoch = self.rate, 0.0, self._clock()
                return
        self._round_quickest = min(self._round_quickest, max(0.0, latency))


class _MeasuredRate:
    """Successful requests per second while requests flow: half-second buckets (a quarter of a
    second in start-up), smoothed.

    A lull (no success for `IDLE` seconds: every server waiting for its export, say) measures
    our demand, not the API's capacity, so it is left out: the bucket it would have ended is
    dropped and counting starts afresh. Otherwise the cap of twice the measured rate falls
    towards the floor during each lull, and the polls and downloads after it start over
    from there.
    """

    BUCKET = 0.5
    IDLE = 1.0
    SMOOTHING = 0.8  # weight of the newest bucket

    def __init__(self, now: float, *, floor: float) -> None:
        self.rate = floor  # until measured, as if half the starting rate got through
        self.bucket = self.BUCKET  # seconds; start-up measures in shorter rounds
        self.latest = floor  # the last bucket's own rate, unsmoothed
        self._bucket_start = self._started = now
        self.last = -math.inf  # the first success starts a bucket: the wait for it is no measure
        self.lull = 0.0  # seconds of the lull the latest success ended (0: none)
        self._count = 0

    def add(self, now: float, interval: float = 0.0) -> bool:
        """A success at `now`; `interval` is the gap the limiter's pace puts between requests;
        True when it closed a bucket (a measuring round).
        A gap counts as a lull only when it is also several of those: at 0.5 req/s, successes
        two seconds apart are the flow, not a lull (taking them for one kept such a limiter
        from ever measuring, so from ever climbing: issue 14)."""
        closed = False
        self.lull = 0.0
        if now - self.last >= max(self.IDLE, 4 * interval):
            self._bucket_start, self._count = now, 0
            # (before the first success: since the start, when nothing had been asked yet)
            self.lull = now - (self.last if self.last > -math.inf else self._started)
        elif (elapsed := now - self._bucket_start) >= self.bucket:
            self.latest = self._count / elapsed
            self.rate = self.SMOOTHING * self.latest + (1 - self.SMOOTHING) * self.rate
            self._bucket_start, self._count = now, 0
            closed = True
        self._count += 1
        self.last = now
        return closed


class RetryQuota:
    """A budget of retries shared by every task of one endpoint, as botocore's retry quota.

    Each retry takes `cost` tokens (`timeout_cost` after a timeout, which held a connection
    for long), each success gives `refund` back, up to `capacity`. When the budget is spent,
    failures are final until successes refill it: a failing API sees a few hundred retries
    from the whole fleet, not eight from every one of thousands of servers. Being throttled
    (429) costs nothing: the rate limiter answers that.
    """

    def __init__(self, capacity: int = 500, *, cost: int = 5, timeout_cost: int = 10, refund: int = 1) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.cost = cost
        self.timeout_cost = timeout_cost
        self.refund_amount = refund
        self.spent = False  # the budget ran out at least once (for the summary)

    def take(self, exc: BaseException) -> bool:
        if isinstance(exc, ThrottledError):
            return True
        cost = self.timeout_cost if isinstance(exc, RequestTimeout) else self.cost
        if cost > self.tokens:
            self.spent = True
            return False
        self.tokens -= cost
        return True

    def refund(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.refund_amount)


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    quota: RetryQuota | None = None,
    clock: Clock = monotonic,
    sleep: Sleep = sleep,
) -> tuple[T, int]:
    """Run `call` until it succeeds or `policy` (or the shared `quota`) says the failure is
    final; re-raise that one.

    Returns `(result, attempts)`. Only collector's own errors are considered; cancellation
    and bugs pass straight through.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await call()
        except (APIError, RequestError, ArchiveError) as exc:
            wait = policy.next_delay(exc, attempt, clock() - started)
            if wait is None:
                raise
            if quota is not None and not quota.take(exc):
                exc.add_note("the endpoint's retry budget is spent: not retried")
                raise
            if on_retry is not None:
                on_retry(exc, attempt, wait)
        else:
            if quota is not None:
                quota.refund()
            return result, attempt
        await sleep(wait)
