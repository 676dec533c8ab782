"""Retry-After parsing, the backoff formula's bounds, and the shared rate limiter, on a fake clock."""

from __future__ import annotations

import email.utils
import math

import anyio
import anyio.lowlevel
import pytest
from _clock import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.control.throttle import MAX_RETRY_AFTER, RateLimiter, RetryPolicy, parse_retry_after, retrying
from collector.errors import (
    APIError,
    ArchiveTooLarge,
    AuthError,
    NotFoundError,
    RequestError,
    ServerError,
    ThrottledError,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("99999", MAX_RETRY_AFTER),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_delta_seconds(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_http_date_is_relative_to_now():
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(header, now=lambda: now) == pytest.approx(42)


def test_retry_after_http_date_in_the_past_means_now():
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=lambda: now) == 0


def test_retry_after_http_date_is_capped():
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 86400, usegmt=True), now=lambda: now) == MAX_RETRY_AFTER


@pytest.mark.parametrize("retry", [1, 2, 3, 6, 7, 20])
@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_backoff_is_full_jitter_under_the_exponential_ceiling(retry, draw):
    policy = RetryPolicy(base=1.0, cap=60.0, random=lambda: draw)
    ceiling = min(60.0, 2 ** (retry - 1))
    assert policy.delay(retry) == pytest.approx(draw * ceiling)
    assert 0 <= policy.delay(retry) <= 60


def test_retry_after_is_a_floor_not_a_ceiling():
    policy = RetryPolicy(random=lambda: 0.0)
    assert policy.delay(1, retry_after=30) == 30
    high = RetryPolicy(random=lambda: 0.99)
    assert high.delay(8, retry_after=1) == pytest.approx(0.99 * 60)


def throttled(retry_after=None):
    return ThrottledError(429, operation="op", retry_after=retry_after)


@pytest.mark.parametrize(
    "exc",
    [throttled(), ServerError(503, operation="op"), RequestError("reset")],
    ids=["429", "503", "transport"],
)
def test_retryable_outcomes(exc):
    assert RetryPolicy(random=lambda: 0.5).next_delay(exc, attempt=1, elapsed=0) is not None


@pytest.mark.parametrize(
    "exc",
    [
        AuthError(401, operation="op"),
        NotFoundError(404, operation="op"),
        APIError(400, operation="op"),
        ArchiveTooLarge("big"),
    ],
    ids=["401", "404", "400", "too-large"],
)
def test_final_outcomes_are_not_retried(exc):
    assert RetryPolicy().next_delay(exc, attempt=1, elapsed=0) is None


def test_attempts_and_elapsed_time_both_bound_retries():
    policy = RetryPolicy(max_attempts=3, throttled_attempts=6, max_elapsed=100, random=lambda: 1.0)
    error = ServerError(500, operation="op")
    assert policy.next_delay(error, attempt=2, elapsed=0) is not None
    assert policy.next_delay(error, attempt=3, elapsed=0) is None
    # 429s have their own, larger budget: the limiter is already slowing everyone down
    assert policy.next_delay(throttled(), attempt=5, elapsed=0) is not None
    assert policy.next_delay(throttled(), attempt=6, elapsed=0) is None
    assert policy.next_delay(throttled(retry_after=50), attempt=1, elapsed=60) is None


@pytest.mark.anyio
async def test_retrying_waits_per_policy_then_gives_the_last_error(clock):
    errors = [ServerError(500, operation="op"), throttled(retry_after=5), ServerError(502, operation="op")]
    calls = 0

    async def call():
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    policy = RetryPolicy(base=1, max_attempts=3, random=lambda: 0.5)
    with pytest.raises(ServerError) as caught:
        await retrying(call, policy, clock=clock, sleep=clock.sleep)
    assert caught.value.status == 502
    assert calls == 3
    assert clock.sleeps == [0.5, 5]  # 0.5 * 2**0, then Retry-After over 0.5 * 2**1


@pytest.mark.anyio
async def test_retrying_returns_result_and_attempts(clock):
    outcomes = [RequestError("reset"), "ok"]

    async def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await retrying(call, RetryPolicy(random=lambda: 0), clock=clock, sleep=clock.sleep) == ("ok", 2)


@pytest.mark.anyio
async def test_limiter_paces_to_the_rate_after_a_short_burst(clock):
    limiter = RateLimiter(10, burst_seconds=0.25, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(25):
        await limiter.acquire()
    # slots every 0.1 s, the first 0.25 s of them available at once
    assert clock.now - start == pytest.approx(2.15)


def at_once_after_a_lull(limiter, clock):
    """How many slots a limiter gives at once after a second with nothing sent."""
    clock.advance(1.0)
    taken = 0
    while limiter._take_slot(clock.now) == 0.0:
        taken += 1
    return taken


def test_once_a_budget_is_known_a_burst_is_a_tenth_of_a_second(clock):
    """Start-up may send a quarter second's worth at once; past it, a request the API's bucket
    refuses waits out a Retry-After, and issue 14's stand-in holds a fifth of a second."""
    assert at_once_after_a_lull(RateLimiter(100, clock=clock), clock) == 26  # 0.25 s at 100, and the one due now
    assert at_once_after_a_lull(RateLimiter(100, known=100, clock=clock), clock) == 11
    refused = RateLimiter(100, clock=clock)
    refused.throttled(1.0)
    assert not refused.starting
    assert at_once_after_a_lull(refused, clock) == math.floor(refused.rate * RateLimiter.KNOWN_BURST + 1e-9) + 1
    assert at_once_after_a_lull(RateLimiter(100, known=100, burst_seconds=0.05, clock=clock), clock) == 6


@pytest.mark.anyio
async def test_retry_after_from_several_servers_pauses_every_caller(clock):
    """The API's budget is plainly exhausted: everyone waits."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    for server in ("s1", "s2", "s3"):
        limiter.throttled(retry_after=3, subject=server)
    await limiter.acquire()
    assert clock.now >= 1000 + 3


@pytest.mark.anyio
async def test_one_servers_retry_after_pauses_only_that_server(clock):
    """One `503 Retry-After: 600` stood the whole fleet still for ten minutes (issue 17): it
    delays its own request (the retry policy's floor), the others go on at the (lowered) rate."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    limiter.throttled(retry_after=600, subject="s1")
    limiter.throttled(retry_after=600, subject="s1")  # the same server again: still one
    await limiter.acquire()
    assert clock.now < 1000 + 1 and limiter.paused_for == 0
    assert limiter.rate < 100  # a refusal still slows everyone down, as a 429 does


def test_the_wave_a_decrease_answered_is_no_sign_of_exhaustion(clock):
    """A token bucket refuses the few requests in flight at once, each `Retry-After: 1`: they
    were sent before the decrease their first refusal made, so they pause nobody (pausing
    everyone for that second cost a second of the budget, twice or three times a run);
    refusals of requests sent after it still do."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    sent = clock.now
    clock.now += 0.01
    for server in ("s1", "s2", "s3", "s4"):
        limiter.throttled(retry_after=1, sent_at=sent, subject=server)
        clock.now += 0.001
    assert limiter.paused_for == 0
    for server in ("s1", "s2", "s3"):
        clock.now += 0.01
        limiter.throttled(retry_after=1, sent_at=clock.now - 0.005, subject=server)
    assert limiter.paused_for > 0


@pytest.mark.anyio
async def test_a_fleet_wide_pause_is_at_most_a_minute_at_a_time(clock):
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    for server in ("s1", "s2", "s3"):
        limiter.throttled(retry_after=600, subject=server)
    assert limiter.paused_for == RateLimiter.FLEET_PAUSE
    await limiter.acquire()
    assert 1000 + 60 <= clock.now < 1000 + 61


def saturated(limiter):
    """A request takes its slot, and the next caller is already waiting for its own: the rate
    is what holds them back (else it is not in use, and its curve waits)."""
    limiter.try_acquire()
    limiter.try_acquire()


def succeed_at(limiter, clock, per_second, seconds):
    """`per_second` requests asked for (each asks the limiter for its slot) and got through."""
    for _ in range(int(per_second * seconds)):
        clock.now += 1 / per_second
        limiter.try_acquire()
        limiter.succeeded()


def through_at(limiter, clock, per_second, seconds):
    """The demand fills the rate (a caller waits for each slot) and `per_second` of it gets
    through; the rest is refused (not told to the limiter here: it would count them as the
    last decrease's event, sent before anything got through again)."""
    got, end = 0, clock.now + seconds
    while clock.now < end:
        clock.now += 1 / max(limiter.rate, per_second)
        saturated(limiter)
        if got < per_second * (clock.now - end + seconds):
            got += 1
            limiter.succeeded()


def refused_then(clock, flow):
    """A limiter past start-up, refused (the API's bucket empty), then 100 requests a second
    got through for two seconds by `flow` (`succeed_at`: less asked than the rate allows;
    `through_at`: the demand filled it): a budget of 100 measured from the next refusal on."""
    limiter = RateLimiter(130, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    limiter.throttled(sent_at=clock.now)
    flow(limiter, clock, 100, 2)
    return limiter


def test_a_429_cuts_the_rate_once_for_the_requests_already_in_flight(clock):
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.starting = False  # CUBIC's decrease (start-up's first refusal halves: tested below)
    sent_earlier = clock.now
    clock.now += 0.5
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(70)
    limiter.throttled(sent_at=sent_earlier)  # sent at the old rate: already answered
    assert limiter.rate == pytest.approx(70)
    clock.now += 0.1
    limiter.throttled(sent_at=clock.now)  # sent after the cut, but nothing got through since:
    assert limiter.rate == pytest.approx(70)  # the same event (issue 17's waves; it cut again before)
    limiter.succeeded()
    clock.now += 0.1
    before = limiter.rate
    limiter.throttled(sent_at=clock.now)  # refused after something got through: a new signal
    assert limiter.rate == pytest.approx(0.7 * before)


def test_after_a_429_cubic_returns_to_the_last_good_rate_then_probes_beyond(clock):
    limiter = RateLimiter(100, max_rate=100, clock=clock, sleep=clock.sleep)
    limiter.starting = False  # CUBIC's decrease (start-up's first refusal halves: tested below)
    succeed_at(limiter, clock, 100, 2)
    limiter.max_rate = float("inf")
    w_max = limiter.rate
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(0.7 * w_max)
    k = (w_max * 0.3 / 0.4) ** (1 / 3)  # about 4.3 s back to w_max
    succeed_at(limiter, clock, 100, k / 2)
    assert 0.7 * w_max < limiter.rate < w_max
    succeed_at(limiter, clock, 100, k / 2)
    assert limiter.rate == pytest.approx(w_max, abs=1)
    send_all_it_allows(limiter, clock, 3)  # probing beyond takes more to send than it allows
    assert w_max + 1 < limiter.rate <= 0.4 * 27 + w_max + 2  # the curve, from when demand filled it


def test_a_decrease_stops_at_what_was_measured_getting_through(clock):
    """BBR's delivery-rate floor: refused while 100 a second got through (a token bucket's
    refill), the rate goes to 0.9 x 100, not 0.7 x 100; when little got through (our demand
    was low), the cut is CUBIC's 0.7. CUBIC then climbs from where the cut left it."""
    limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    limiter.throttled(sent_at=clock.now)  # the bucket is empty: from here, what gets through is its refill
    assert limiter.rate == pytest.approx(84)  # nothing measured yet: CUBIC's 0.7
    succeed_at(limiter, clock, 100, 3)
    refused_at = limiter.rate
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90, rel=0.01)  # 0.9 x the 100 that got through, not 0.7 x
    assert refused_at * 0.7 < 90
    before = limiter.rate
    succeed_at(limiter, clock, 100, 0.2)
    assert before <= limiter.rate <= refused_at  # the curve starts where the cut left it
    idle = RateLimiter(100, clock=clock, sleep=clock.sleep)
    idle.starting = False
    idle.throttled(sent_at=clock.now)
    succeed_at(idle, clock, 20, 3)  # only 20 a second to send: no measure of the budget
    idle.rate = 100
    idle.throttled(sent_at=clock.now)
    assert idle.rate == pytest.approx(70)


def test_never_faster_than_twice_what_gets_through(clock):
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    limiter.throttled(sent_at=clock.now)  # past slow start
    succeed_at(limiter, clock, 5, 20)  # only 5/s get through (the rest is demand we don't have)
    assert limiter.rate == pytest.approx(10, abs=0.5)


def test_probing_stops_at_max_rate(clock):
    limiter = RateLimiter(20, max_rate=30, clock=clock, sleep=clock.sleep)
    succeed_at(limiter, clock, 100, 20)
    assert limiter.rate == 30


def test_rate_never_falls_below_the_floor(clock):
    limiter = RateLimiter(2, min_rate=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        clock.now += 1
        limiter.throttled(sent_at=clock.now)
    assert limiter.rate == 0.5


@pytest.mark.anyio
async def test_queued_callers_are_served_by_priority_then_arrival():
    limiter = RateLimiter(50)  # real clock: slots 20 ms apart
    served: list[str] = []

    async def call(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        served.append(name)

    async with anyio.create_task_group() as tasks:
        for _ in range(30):
            await limiter.acquire()  # use up the burst so the callers below queue
        tasks.start_soon(call, "poll-1", 2)
        tasks.start_soon(call, "poll-2", 2)
        tasks.start_soon(call, "export", 1)
        tasks.start_soon(call, "download", 0)
    # the first poll already held the turn; then downloads, exports, polls
    assert served == ["poll-1", "download", "export", "poll-2"]


@pytest.mark.anyio
async def test_a_cancelled_waiter_does_not_stall_the_queue(clock):
    """A holds the turn (asleep until its slot), B queues behind it and is cancelled, C queues
    behind B: when A's slot comes, the turn must skip B and reach C."""
    due = anyio.Event()

    async def sleep_until_due(seconds: float) -> None:
        await due.wait()
        clock.now += seconds

    limiter = RateLimiter(1, burst_seconds=0, clock=clock, sleep=sleep_until_due)
    await limiter.acquire()  # the free slot; the next one is a second away
    got: list[str] = []

    async def take(name: str) -> None:
        await limiter.acquire()
        got.append(name)

    b = anyio.CancelScope()

    async def b_waits() -> None:
        with b:
            await take("B")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take, "A")
        await wait_until(lambda: limiter._busy)
        tasks.start_soon(b_waits)
        await wait_until(lambda: len(limiter._waiting) == 1)
        tasks.start_soon(take, "C")
        await wait_until(lambda: len(limiter._waiting) == 2)
        b.cancel()
        await wait_until(lambda: b.cancelled_caught)
        due.set()
        with anyio.fail_after(2):
            await wait_until(lambda: len(got) == 2)
    assert sorted(got) == ["A", "C"]
    assert not limiter._busy and not limiter._waiting


@pytest.mark.anyio
async def test_a_waiter_cancelled_as_it_is_handed_the_turn_passes_it_on(clock):
    """A's turn ends and goes to B; B is cancelled before it could run: the turn must reach C,
    not stay with the cancelled B (the future B waits on already has its result)."""
    due = anyio.Event()

    async def sleep_until_due(seconds: float) -> None:
        await due.wait()
        clock.now += seconds

    limiter = RateLimiter(1, burst_seconds=0, clock=clock, sleep=sleep_until_due)
    await limiter.acquire()
    got: list[str] = []
    b = anyio.CancelScope()

    async def a_then_cancel_b() -> None:
        await limiter.acquire()  # its turn went to B as it returned; B has not run since
        got.append("A")
        b.cancel()

    async def b_waits() -> None:
        with b:
            await limiter.acquire()
            got.append("B")

    async def c_waits() -> None:
        await limiter.acquire()
        got.append("C")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(a_then_cancel_b)
        await wait_until(lambda: limiter._busy)
        tasks.start_soon(b_waits)
        await wait_until(lambda: len(limiter._waiting) == 1)
        tasks.start_soon(c_waits)
        await wait_until(lambda: len(limiter._waiting) == 2)
        due.set()
        with anyio.fail_after(2):
            await wait_until(lambda: len(got) == 2)
    assert got == ["A", "C"] and b.cancelled_caught
    assert not limiter._busy and not limiter._waiting


async def wait_until(condition) -> None:
    """Let other tasks run until `condition()` holds (no wall-clock waiting)."""
    for _ in range(1000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


def test_a_lull_does_not_pull_the_measured_rate_down(clock):
    """While every server waits for its export nothing is sent; that says nothing of the API."""
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    limiter.throttled(sent_at=clock.now)
    succeed_at(limiter, clock, 40, 10)
    before = limiter.measured.rate
    assert before == pytest.approx(40, rel=0.05)
    clock.now += 8  # the lull
    succeed_at(limiter, clock, 40, 0.25)  # the first answers after it
    assert limiter.measured.rate == pytest.approx(before, rel=0.05)
    assert limiter.rate >= 40


def test_a_slow_start_whose_first_answer_comes_late_still_climbs(clock):
    """A shard starting at 2.5 req/s whose first success comes 0.6 s in must not stay at 0.5."""
    limiter = RateLimiter(2.5, clock=clock, sleep=clock.sleep)
    clock.now += 0.6
    for _ in range(600):
        saturated(limiter)
        limiter.succeeded()
        clock.now += 1 / limiter.rate
    assert limiter.rate > 10


# -- no state of the limiter is a trap ---------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["success", "throttle", "lull"]),
        st.floats(min_value=0.001, max_value=30.0),  # seconds before it
    ),
    max_size=300,
)


@settings(max_examples=300)
@given(start=st.floats(min_value=0.5, max_value=200.0), events=EVENTS)
def test_from_any_history_the_rate_recovers_once_requests_get_through(start, events):
    """Whatever came before (refusals, lulls, successes at any pace), once every request gets
    through again the rate climbs back: it was possible for a limiter measured below 1 req/s
    to take every success for the end of a lull and stay at 0.5 req/s for good (issue 14)."""
    clock = FakeClock()
    limiter = RateLimiter(start, clock=clock, sleep=clock.sleep)
    for kind, gap in events:
        clock.now += gap
        if kind == "success":
            limiter.succeeded()
        elif kind == "throttle":
            limiter.throttled(sent_at=clock.now - gap / 2)
    # Now the API takes all we send, and we send as fast as the limiter lets us.
    deadline = clock.now + 120
    while clock.now < deadline and limiter.rate < 50:
        clock.now += 1 / limiter.rate
        saturated(limiter)
        limiter.succeeded()
    assert limiter.rate >= 50, limiter.rate


# -- start-up: finding the budget fast, without a burst of refusals ---------------------------


def against_a_token_bucket(limiter, clock, *, budget, burst, latency, seconds):
    """Send as fast as `limiter` allows to an API that takes `budget` requests/s with a bucket
    of `burst`, each answer `latency` s after its request; returns what happened, in order:
    (kind, sent_at, answered_at, rate when sent, and after the answer: rate, pause, starting,
    and the budget it had measured before it)."""
    import heapq as _heapq

    tokens, updated = float(burst), clock.now
    pending: list[tuple[float, float, bool, float]] = []  # (answered_at, sent_at, granted, rate then)
    history = []
    next_send = clock.now
    end = clock.now + seconds
    while True:
        send_next = next_send if next_send < end else float("inf")
        if pending and pending[0][0] <= send_next:
            answered, sent, granted, rate_then = _heapq.heappop(pending)
            clock.now = answered
            measured = limiter._measure(clock.now)[0]
            if granted:
                limiter.succeeded()
            else:
                limiter.throttled(1.0, sent_at=sent, subject=f"s{len(history) % 7}")
            after = (limiter.rate, limiter.paused_for, limiter.starting, measured)
            history.append(("ok" if granted else "refused", sent, answered, rate_then, *after))
            continue
        if send_next == float("inf"):
            return history
        clock.now = max(next_send, clock.now, limiter._paused_until)
        tokens = min(float(burst), tokens + (clock.now - updated) * budget)
        updated = clock.now
        saturated(limiter)
        granted = tokens >= 1
        tokens -= granted
        _heapq.heappush(pending, (clock.now + latency, clock.now, granted, limiter.rate))
        next_send = clock.now + 1 / limiter.rate


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(min_value=1.0, max_value=50.0),
    budget=st.floats(min_value=20.0, max_value=400.0),
    burst_share=st.floats(min_value=0.25, max_value=1.0),
    latency=st.floats(min_value=0.001, max_value=0.2),
)
def test_start_up_finds_any_budget_in_seconds_with_few_refusals(start, budget, burst_share, latency):
    """From any --rate, against any budget of 20 requests/s or more: the budget is in use
    within seconds, and refusals are start-up's one event (the requests in flight when it was
    refused) and then at most 5 % of what was sent. (Below 20 requests/s CUBIC's own probing,
    a refusal every few seconds, is a larger share.)"""
    clock = FakeClock()
    limiter = RateLimiter(start, clock=clock, sleep=clock.sleep)
    began = clock.now
    history = against_a_token_bucket(
        limiter, clock, budget=budget, burst=max(1.0, burst_share * budget), latency=latency, seconds=30
    )
    refused = [h for h in history if h[0] == "refused"]
    first = refused[0] if refused else None
    in_flight = sum(1 for h in history if first and h[1] < first[2] and h[2] >= first[2])
    assert len(refused) <= in_flight + max(3, 0.05 * len(history)), (len(refused), in_flight, len(history))
    # the budget is found: the second half of the run got at least 60 % of it through
    late = [h for h in history if h[0] == "ok" and h[1] >= began + 15]
    assert len(late) >= 0.6 * budget * 15, (len(late), budget)


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(min_value=1.0, max_value=50.0),
    budget=st.floats(min_value=5.0, max_value=400.0),
    latency=st.floats(min_value=0.001, max_value=0.2),
)
def test_start_up_ends_at_its_first_refusal_below_the_refused_rate(start, budget, latency):
    """Start-up takes one refusal, not a burst: the first refusal ends it (the refusals of
    requests already in flight count with it); after any refusal the rate is no higher than
    the rate the refused request was sent at, and lower when something got through since the
    last decrease (else it is that decrease's event, issue 17), unless everyone is paused or
    the rate is already at or below 0.9 of the budget measured (a cascade of refusals from one
    burst cut it to 45 % of the budget: issue 14), where it stays."""
    clock = FakeClock()
    limiter = RateLimiter(start, clock=clock, sleep=clock.sleep)
    rate_before, delivered, last_cut = start, True, -1.0
    for kind, sent, answered, rate_then, rate_after, paused, starting, measured in against_a_token_bucket(
        limiter, clock, budget=budget, burst=budget, latency=latency, seconds=10
    ):
        if kind == "ok":
            delivered = True
        else:
            assert not starting  # start-up never outlives a refusal
            floor = RateLimiter.DELIVERED * measured
            # no higher than when it was sent; a rate at the floor stays there (which moves up
            # a hair as requests get through: the budget is measured over a longer window)
            assert rate_after <= rate_then or rate_after <= 1.01 * floor
            if delivered and sent >= last_cut and not paused and limiter.min_rate < rate_after and rate_then > floor:
                assert rate_after < rate_then
            if rate_after < rate_before:
                delivered, last_cut = False, answered
        rate_before = rate_after


def send_all_it_allows(limiter, clock, seconds, latency=None):
    """Every request the limiter allows for `seconds`, each taken (answered `latency` later)."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 1 / limiter.rate
        saturated(limiter)
        limiter.succeeded(sent_at=None if latency is None else clock.now - latency)


def test_start_up_doubles_with_what_gets_through_and_halves_at_the_first_refusal(clock):
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    send_all_it_allows(limiter, clock, 1.0)  # the first bucket starts at the first answer
    rate = limiter.rate
    send_all_it_allows(limiter, clock, 1.0)
    assert limiter.starting and limiter.rate == pytest.approx(rate * 2**4, rel=0.1)  # twice every quarter second
    refused_at = limiter.rate
    limiter.throttled(sent_at=clock.now)
    assert not limiter.starting and limiter.rate == pytest.approx(refused_at / 2)
    assert limiter.learned == pytest.approx(refused_at / 2)  # the last rate that got through whole
    send_all_it_allows(limiter, clock, 2.0)
    # CUBIC probes on from there, concave towards half-way back to the refused rate (it
    # climbed convex from the halved rate, 0.4 t**3, before: issue 14)
    w_max, k = 0.75 * refused_at, (refused_at / 4 / 0.4) ** (1 / 3)
    assert limiter.rate == pytest.approx(0.4 * (2 - k) ** 3 + w_max, rel=0.02)
    assert refused_at / 2 + 0.4 * 2**3 + 1 < limiter.rate < w_max


def test_start_up_grows_no_faster_than_twice_what_is_sent(clock):
    """With little to send, start-up does not race ahead of what was tried."""
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    succeed_at(limiter, clock, 5, 20)
    assert limiter.starting and limiter.rate == pytest.approx(10, abs=0.5)


def test_start_up_stops_growing_when_answers_slow_down(clock):
    """HyStart's delay test: a queue building at the API ends start-up, without a decrease."""
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    send_all_it_allows(limiter, clock, 2.0, latency=0.01)
    assert limiter.starting
    rate = limiter.rate
    send_all_it_allows(limiter, clock, 1.0, latency=0.2)  # answers 20 times slower
    assert not limiter.starting
    assert rate <= limiter.rate <= 4 * rate  # kept (a round at most past it), not cut


def test_what_is_learned_is_what_got_through_between_two_decreases(clock):
    """The next run starts from the budget measured (a bucket's refill), not from the rate
    CUBIC had probed to when it was last refused, which is above it."""
    limiter = refused_then(clock, succeed_at)
    limiter.rate = 120
    limiter.throttled(sent_at=clock.now)
    assert limiter.learned == pytest.approx(100, rel=0.01)


def test_a_lull_is_no_time_on_the_curve(clock):
    """Polls wait ten seconds for their exports: when they come, the rate resumes where the
    curve was, not at 0.4 x 10**3 above it (capped only by twice the rate measured, a burst
    into refusals)."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    succeed_at(limiter, clock, 100, 1)
    limiter.throttled(sent_at=clock.now)
    send_all_it_allows(limiter, clock, 1)
    before = limiter.rate
    clock.now += 10  # nothing to send
    send_all_it_allows(limiter, clock, 0.5)
    assert before < limiter.rate < 100  # still below w_max, on the concave part


def test_a_rate_not_in_use_does_not_climb(clock):
    """RFC 7661: a rate the demand does not fill was not tried, so it does not grow. With
    polls trickling in for ten seconds (a run's quiet middle), the curve once climbed to twice
    what was sent, four times the budget measured, and the next burst of polls went out at it
    into a cascade of refusals (issue 14). Once the demand fills it, it climbs."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    send_all_it_allows(limiter, clock, 1)
    limiter.throttled(sent_at=clock.now)  # 70, on its way back to 100
    send_all_it_allows(limiter, clock, 0.5)
    before = limiter.rate
    succeed_at(limiter, clock, 60, 10)  # less than it allows: nobody waits for a slot
    assert limiter.rate < before + 10  # half a second on the curve at most (it climbed to 120)
    idle = limiter.rate
    send_all_it_allows(limiter, clock, 2)
    assert limiter.rate > idle + 5


def test_a_limiter_idle_from_its_start_resumes_at_its_rate(clock):
    """The poll limiter waits ten seconds for the first exports to end: once out of start-up,
    its curve starts with its first answer, not 0.4 x 10**3 above it."""
    limiter = RateLimiter(95, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    clock.now += 10
    send_all_it_allows(limiter, clock, 1.0)
    assert 95 <= limiter.rate < 96


def test_a_refusal_soon_after_another_is_measured_over_the_window_before(clock):
    """Two refusals a fifth of a second apart: the second is measured from the latest refusal
    at least a second back, so the cut stops at 0.9 x the 100 that got through, not 0.7 x."""
    limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    limiter.throttled(sent_at=clock.now)
    succeed_at(limiter, clock, 100, 2)
    limiter.rate = 110
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90, rel=0.01)  # 0.9 x min(110, the 100 that got through)
    succeed_at(limiter, clock, 100, 0.2)
    limiter.rate = 105
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90, rel=0.01)  # the last 2.2 s say 100 a second: not 0.7 x 105


def test_a_lull_between_two_refusals_is_left_out_of_the_budget(clock):
    """Ten seconds with nothing to send between two refusals: counted, they made a budget of
    100 a second look like 17; the budget is what got through while requests flowed."""
    limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    limiter.throttled(sent_at=clock.now)
    succeed_at(limiter, clock, 100, 1.5)
    clock.now += 10  # nothing to send
    assert limiter.budget == pytest.approx(100, rel=0.02)  # the lull going on is left out too
    succeed_at(limiter, clock, 100, 1)
    limiter.throttled(sent_at=clock.now)
    assert limiter.learned == pytest.approx(100, rel=0.02)


def test_the_budget_is_unknown_until_a_refusal_a_second_back(clock):
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    succeed_at(limiter, clock, 50, 3)
    assert limiter.budget is None and not limiter.refused  # never refused: nothing measured
    limiter.throttled(sent_at=clock.now)
    succeed_at(limiter, clock, 40, 0.5)
    assert limiter.budget is None  # half a second is too short a window
    succeed_at(limiter, clock, 40, 1)
    assert limiter.budget == pytest.approx(40, rel=0.03) and limiter.refused


def test_others_refusals_witnessed_measure_the_budget_and_cap_the_rate_there(clock):
    """The exports' refusals go to their own limiter; the endpoint's limiter, which passes
    every request, sees its bucket empty at each: what got through between two is what it
    learned (it kept twice the budget for the next run before), and it keeps no rate above
    that (its polls went out at twice the budget, into a burst of refusals). One refusal
    alone measures nothing and changes nothing."""
    limiter = RateLimiter(400, clock=clock, sleep=clock.sleep)
    succeed_at(limiter, clock, 100, 0.5)
    limiter.witnessed()
    assert limiter.rate > 150 and limiter.starting  # nothing measured yet
    succeed_at(limiter, clock, 100, 2)
    limiter.witnessed()
    assert limiter.rate == pytest.approx(100, rel=0.01) and not limiter.starting
    assert not limiter.refused  # no refusal of its own
    assert limiter.learned == pytest.approx(100, rel=0.01)
    assert limiter.budget == pytest.approx(100, rel=0.01)
    succeed_at(limiter, clock, 100, 1)
    assert limiter.rate > 100  # and probes on from there


def test_refusals_that_later_requests_got_past_are_no_exhaustion(clock):
    """A bucket at its refill rate refuses one request in a few dozen, each `Retry-After: 1`:
    three from three servers within two seconds, each followed by requests that got through,
    pause nobody (each such pause cost a second of the budget). Three with nothing through
    between them still do."""
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    for server in ("s1", "s2", "s3"):
        clock.now += 0.3
        limiter.throttled(retry_after=1, sent_at=clock.now - 0.001, subject=server)
        sent = clock.now
        clock.now += 0.01
        limiter.succeeded(sent_at=sent)  # asked after the refusal, and it got through
    assert limiter.paused_for == 0
    for server in ("s4", "s5", "s6"):
        clock.now += 0.01
        limiter.throttled(retry_after=1, sent_at=clock.now - 0.001, subject=server)
    assert limiter.paused_for > 0


def test_spare_says_when_a_slot_is_free_and_nobody_waits(clock):
    limiter = RateLimiter(10, burst_seconds=0.0, clock=clock, sleep=clock.sleep)
    assert limiter.spare() == 0.0
    assert limiter.try_acquire() is not None
    assert limiter.spare() == pytest.approx(0.1)
    limiter._busy = True  # a caller holds the turn (tested through `acquire` above)
    assert limiter.spare() is None


def test_a_budget_an_earlier_run_learned_is_known_from_the_start(clock):
    """The next run starts at the budget kept (`collector.run.learned`) as a budget found: no
    start-up doubling past it (it went to 5 x the budget in under a second, into a cascade of
    refusals that left the rate at 60 % of it), a first refusal cut to 0.9 of it, not to 0.7
    or a half, and the budget is known for planning before this run measures its own."""
    limiter = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    assert not limiter.starting and limiter.budget == 100 and limiter.learned == 100
    send_all_it_allows(limiter, clock, 1)
    assert 100 <= limiter.rate < 101  # on the plateau: the convex probe has barely begun
    limiter.throttled(sent_at=clock.now)  # a bucket's burst spent at the start
    assert limiter.rate == pytest.approx(90)
    assert limiter.learned == 100  # nothing measured yet: no more than the rate refused
    never = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    succeed_at(never, clock, 30, 2)  # a run that never met the budget keeps the earlier one
    assert never.learned == 100


def test_a_cascade_of_refusals_stops_at_the_budget_measured_and_that_is_what_is_kept(clock):
    """Refusals in a row, each of a request sent after the last cut (a bucket still empty from
    a burst), cut the rate to 0.9 of the budget measured and no further: they cut a tenth each,
    to 45 % of it within a quarter second. What the next run starts from is that budget, not
    where a cascade left the rate (a run ending in one kept 66 against 100: issue 14)."""
    limiter = refused_then(clock, succeed_at)
    limiter.rate = 150  # probed past it
    for _ in range(8):
        limiter.throttled(sent_at=clock.now)
        succeed_at(limiter, clock, 100, 0.03)
    assert limiter.rate == pytest.approx(90, rel=0.02)
    assert limiter.learned == pytest.approx(100, rel=0.02)
    limiter.rate = 60  # below the floor already (a fleet-wide pause's refill, say): a refusal keeps it
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == 60


def test_a_budget_known_is_not_lowered_by_a_window_whose_demand_did_not_fill_the_rate(clock):
    """Polls trickling in for seconds (a run's quiet middle) between two refusals measure our
    demand, not the budget: an earlier run's budget of 100 stands as the cut's floor and what
    is kept (they made it look like 84: the rate was cut to 80 and climbed back for four
    seconds, and the next run would have started at 84)."""
    limiter = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    send_all_it_allows(limiter, clock, 1)
    limiter.throttled(sent_at=clock.now)  # the bucket's burst spent
    succeed_at(limiter, clock, 60, 5)  # less to send than the rate allows
    send_all_it_allows(limiter, clock, 0.5)
    assert limiter._measure(clock.now)[0] < 70  # what got through: the demand
    assert limiter.budget == 100
    limiter.rate = 160  # a bucket's refill let it probe far past the budget
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90)
    assert limiter.learned == 100


def test_a_budget_lowered_since_is_measured_by_a_window_that_filled_the_rate(clock):
    """The earlier run's 100 is forgotten once a window in which the demand filled the rate
    measures less: the API now takes 50."""
    limiter = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90)
    through_at(limiter, clock, 50, 2)
    assert limiter.budget == pytest.approx(50, rel=0.02)
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(45, rel=0.02)
    assert limiter.learned == pytest.approx(50, rel=0.02)


def test_a_refusal_far_above_a_budget_known_cuts_to_it_and_the_curve_returns_to_it(clock):
    """Refused at 1.6 x a budget measured (a bucket's refill let the rate climb there), the
    rate goes to 0.9 x the budget, not to 0.7 x 160 = 112 (refused again at once), and the
    curve's plateau is the budget, not the 160 it was refused at."""
    limiter = refused_then(clock, through_at)
    limiter.rate = 160
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(90, rel=0.01)
    send_all_it_allows(limiter, clock, 3)  # K = cbrt(10 / 0.4) = 2.9 s to the plateau
    assert 99 <= limiter.rate <= 102


def test_a_budget_known_caps_the_limiter_that_witnesses_a_refusal(clock):
    """The polls' limiter passes the export requests too, and probed past an earlier run's
    budget with them (to 1.6 x) while the exports' limiter took the refusals: witnessing one,
    it comes down to the budget known, though it measured nothing yet."""
    limiter = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    send_all_it_allows(limiter, clock, 5)
    assert limiter.rate > 140
    limiter.witnessed()
    assert limiter.rate == 100


def test_what_a_run_refused_but_never_measured_keeps_is_below_where_it_was_refused(clock):
    """Refused only in a cascade too quick to measure anything (start-up's, say), a run keeps
    the rate its last cut set, not the rate refused, which is above the budget: kept, such a
    rate starts the next run above the budget (one started at 1.7 x it: 96 refusals of its 300
    export requests)."""
    limiter = RateLimiter(170, clock=clock, sleep=clock.sleep)
    limiter.starting = False
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(119)
    assert limiter.learned == pytest.approx(119)  # was 170


def test_a_run_never_refused_keeps_the_earlier_budget_not_the_rate_it_climbed_to(clock):
    """A bucket's burst let a run's busy last seconds probe past the earlier budget unrefused;
    that climb is no budget (kept, the next run would start at 1.4 x the budget)."""
    limiter = RateLimiter(100, known=100, clock=clock, sleep=clock.sleep)
    send_all_it_allows(limiter, clock, 5)
    assert limiter.rate > 130
    assert limiter.learned == 100


def test_an_earlier_budget_still_refused_at_its_floor_is_lowered_a_tenth_a_refusal(clock):
    """The API now takes 100 where an earlier run kept 170: at 153 (0.9 x 170) it still
    refuses. A quarter second after the cut to that floor (a burst's cascade is over by then),
    each refusal cuts a tenth, where the rate stayed at 153 until this run had measured its
    own budget, a second later."""
    limiter = RateLimiter(170, known=170, clock=clock, sleep=clock.sleep)
    limiter.throttled(sent_at=clock.now)
    assert limiter.rate == pytest.approx(153)
    rates = []
    for _ in range(30):  # a refusal every 20 ms, something getting through between
        clock.now += 0.01
        saturated(limiter)
        limiter.succeeded(sent_at=clock.now)
        clock.now += 0.01
        limiter.throttled(sent_at=clock.now)
        rates.append(limiter.rate)
    assert rates[10] == pytest.approx(153)  # 0.2 s on: still the floor
    assert rates[-1] <= 100  # 0.6 s on: at the budget or below
