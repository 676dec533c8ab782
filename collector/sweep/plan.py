"""The order in which the fan-out asks for exports, when earlier runs said how long they take.

A sweep ends when its slowest export has been asked for, has run, and been collected; and,
against a rate-limited API, when all its requests have been sent. Asked in inventory order,
a slow export may be asked last, when the others are asked: the run then ends that long
after the last request (on a first run nothing better can be known). With each server's
export time from an earlier run (`collector.run.learned`) and the API's budget, each
endpoint's exports are asked by one of two rules, the one a model of the run says ends
sooner (`modelled_end`; long first where they tie):

- **long first**: the exports that must start early for the run to end at its lower bound,
  slowest first, then the others in inventory order. With

      horizon = max(slowest export, requests / rate) - servers / rate

  (`servers / rate` is the time it takes to ask for every export, `requests` = 3 a server:
  an export, a poll, a download), an export longer than `horizon`, asked last, would end
  after the bound. Right where the slowest export sets the end (300 servers of 5-15 s, 800 of
  1-30 s, 1,500 of 60-120 s at 100 requests/s: within 0.1 % of the best order found).
- **least laxity**: inventory order, but an export is asked as soon as waiting longer would
  make it end after the bound, counting the exports that are due before it (each takes a
  slot of the rate): its latest start is

      latest = bound - its time - spread x (its rank among the slowest) / rate

  and it goes once `latest - k / rate <= now`, with k the exports due no later (least laxity
  first). Decided as each export is taken, on the clock: an asking slower than planned is
  met by taking the urgent ones sooner, where a list planned in advance left them to the end.
  Right where the rate sets the end (600 servers of 5-15 s at 100 requests/s: 1.04-1.06 x the
  bound in the model, against 1.08-1.11 x for long first; measured with every kept time
  exact, 19.1-20.3 s against 20.5-20.6 s), since long first bunches the slowest exports' ends
  together with those of the others into the run's last seconds, where their polls and
  downloads wait for the rate. `spread` (0, 1 or 2 requests a server, the model's pick) moves
  the slowest exports' ends apart so that their polls and downloads do not queue at the end.

A server no earlier run saw counts as the slowest (it may be); a time that is only a bound
(the export was done by the poll that found it so) counts as that bound.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from collector.sweep.polling import OwnTime

T = TypeVar("T")
REQUESTS_PER_SERVER = 3  # an export, a poll, a download: the least a server costs
SPREADS = (0.0, 1.0, 2.0)  # least laxity's spreads the model tries (requests a server)
MODELLED_MAX = 20_000  # servers of one endpoint past which the model is not run: long first


class _Plan:
    """One endpoint's rule: which of its exports must be asked now (`due`), by its position
    in the fan-out's work, or None if the next in inventory order may go."""

    def __init__(
        self,
        seconds: Sequence[float],
        positions: Sequence[int],
        rate: float,
        spread: float | None,
        asked: set[int],
        unseen: frozenset[int] = frozenset(),
    ) -> None:
        self.rate = rate
        self.asked = asked  # positions taken, by any plan or in inventory order
        count, slowest = len(seconds), max(seconds)
        bound = max(slowest, REQUESTS_PER_SERVER * count / rate)
        if spread is None:  # long first: those past the horizon, slowest first, at once
            horizon = bound - count / rate
            urgent = sorted(
                (i for i in range(count) if seconds[i] > horizon),
                key=lambda i: -math.inf if i in unseen else -seconds[i],  # never seen: it may be the slowest
            )
            self._urgent = [positions[i] for i in urgent]
            self._slack = [-math.inf] * len(urgent)
        else:
            by_length = sorted(range(count), key=lambda i: -seconds[i])
            latest = [0.0] * count
            for rank, i in enumerate(by_length):
                latest[i] = bound - seconds[i] - spread * rank / rate
            urgent = sorted(range(count), key=latest.__getitem__)
            self._urgent = [positions[i] for i in urgent]
            # slack of the k-th (all before it go first): latest - k / rate; the least from
            # each k on, so that after j were taken the least slack is this + j / rate - now
            slack = [latest[i] - k / rate for k, i in enumerate(urgent)]
            for k in range(len(slack) - 2, -1, -1):
                slack[k] = min(slack[k], slack[k + 1])
            self._slack = slack
        self._head = 0

    def due(self, elapsed: float) -> tuple[float, int] | None:
        """(its slack, its position) of the export that must go now, if one must."""
        while self._head < len(self._urgent) and self._urgent[self._head] in self.asked:
            self._head += 1
        if self._head == len(self._urgent):
            return None
        slack = self._slack[self._head] + self._head / self.rate - elapsed
        return (slack, self._urgent[self._head]) if slack <= 0 else None


class _Taker:
    """Which position of `count` goes next, `elapsed` seconds in: the plans' most urgent export
    if one must go now, else the next in inventory order not taken yet (None: all taken)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.asked: set[int] = set()  # shared with every plan
        self.plans: list[_Plan] = []
        self._next = 0

    def take(self, elapsed: float) -> int | None:
        due = min(filter(None, (plan.due(elapsed) for plan in self.plans)), default=None)
        if due is not None:
            position = due[1]
        else:
            while self._next in self.asked:
                self._next += 1
            if self._next >= self.count:
                return None
            position = self._next
        self.asked.add(position)
        return position


def rule_end(
    seconds: Sequence[float],
    rate: float,
    spread: float | None,
    taken: list[int] | None = None,
    *,
    burst: float | None = None,
) -> float:
    """`modelled_end` of exports asked by a rule: `spread` None for long first, else least
    laxity with that spread; the order they were asked in is appended to `taken`, if given."""
    taker = _Taker(len(seconds))
    taker.plans.append(_Plan(seconds, range(len(seconds)), rate, spread, taker.asked))

    def take(now: float) -> int:
        which = taker.take(now)
        assert which is not None  # the model takes no more than there are
        if taken is not None:
            taken.append(which)
        return which

    return modelled_end(seconds, rate, take, burst=burst)


def modelled_end(
    seconds: Sequence[float], rate: float, take: Callable[[float], int], *, burst: float | None = None
) -> float:
    """When the last download goes, in a model of one endpoint's run: the export `take(now)`
    says is asked for at each export request's turn, each polled once at its end and
    downloaded at once, every request at the API's token bucket (`rate` a second, `burst` at
    once: by default a second's worth, the API's is not documented), a download before an
    export request before a poll. What a collector that knew every export's time would reach
    (`benchmarks/ideal.py` measures the collector by it)."""
    count = len(seconds)
    capacity = max(1.0, rate) if burst is None else burst
    now, tokens = 0.0, capacity
    asked, downloads, last = 0, 0, 0.0
    ends: list[float] = []  # running exports' ends: each one's poll is due then
    while asked < count or ends or downloads:
        if not (downloads or asked < count or ends[0] <= now):
            tokens = min(capacity, tokens + (ends[0] - now) * rate)  # nothing to send until then
            now = ends[0]
            continue
        if tokens < 1.0:
            now += (1.0 - tokens) / rate
            tokens = 1.0
            continue
        tokens -= 1.0
        if downloads:
            downloads -= 1
            last = now
        elif asked < count:
            heapq.heappush(ends, now + seconds[take(now)])
            asked += 1
        else:
            heapq.heappop(ends)
            downloads += 1
    return last


def flow_bound(durations: Sequence[float], rate: float, burst: float) -> float:
    """No run, whatever its order and timing, ends before this (seconds from its first request).

    With n servers, the k-th export request goes at (k - burst) / rate at the earliest (the
    bucket starts with `burst` tokens and refills at `rate`), and export i ends at c_i = its
    request's time + its duration, whichever order they are asked in. Every export ending at
    or after t needs its poll and its download at or after t: two requests each, and at most
    burst + rate x (E - t) requests fit in [t, E]. So the j-th latest end c(j) satisfies
    E >= c(j) + (2j - burst) / rate. Summed over j = 1..n, with the sum of the ends at least
    the sum of the earliest request times plus the sum of the durations (`modelled_end`'s
    runs never end before it: tests/test_plan.py):

        E >= mean(max(0, (k - burst) / rate) for k = 1..n) + mean(durations) + (n + 1 - burst) / rate

    `benchmarks/ideal.py`'s hill-climb over orders of 600 servers of 5-15 s at 100 req/s,
    burst 20, each export polled the moment it ends, comes within 0.04 s of it (18.80 s
    against 18.76 s): the bound is about what a collector that knew every export's time
    could reach."""
    n = len(durations)
    if n == 0:
        return 0.0
    first_requests = sum(max(0.0, (k - burst) / rate) for k in range(1, n + 1))
    return (first_requests + sum(durations)) / n + (n + 1 - burst) / rate


class AskingOrder(Generic[T]):
    """`work` in the order to ask for it, decided as each item is taken (iterate it once):
    each endpoint by the rule its model ends soonest with (see the module); long first for
    every endpoint unless `modelled`."""

    def __init__(
        self,
        work: Sequence[T],
        known: Mapping[tuple[str, str], OwnTime],
        key: Callable[[T], tuple[str, str]],
        endpoint: Callable[[T], str],
        rates: Mapping[str, float],
        *,
        modelled: bool = True,
        lead: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._clock = clock
        self._lead = lead
        self._started: float | None = None
        self._taker = _Taker(len(work))
        self.rules: dict[str, str] = {}  # endpoint -> the rule chosen, for the log and the tests
        by_endpoint: dict[str, list[int]] = {}
        for position, item in enumerate(work):
            by_endpoint.setdefault(endpoint(item), []).append(position)
        for where, positions in by_endpoint.items():
            times = [known.get(key(work[p])) for p in positions]
            slowest = max((own.seconds for own in times if own is not None), default=0.0)
            if not slowest:
                continue  # nothing known of this endpoint's servers: inventory order
            seconds = [slowest if own is None else own.seconds for own in times]
            unseen = frozenset(i for i, own in enumerate(times) if own is None)
            spread = _best_rule(seconds, rates[where]) if modelled else None
            self.rules[where] = "long first" if spread is None else f"least laxity, spread {spread:g}"
            self._taker.plans.append(_Plan(seconds, positions, rates[where], spread, self._taker.asked, unseen))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._started is None:
            self._started = self._clock()
        position = self._taker.take(self._clock() - self._started + self._lead)
        if position is None:
            raise StopIteration
        return self._work[position]


def _best_rule(seconds: Sequence[float], rate: float) -> float | None:
    """Least laxity's spread, or None for long first: whichever the model ends soonest with
    (long first where they tie, or past `MODELLED_MAX` servers)."""
    if len(seconds) > MODELLED_MAX:
        return None
    best, rule = rule_end(seconds, rate, None), None
    for spread in SPREADS:
        end = rule_end(seconds, rate, spread)
        if end < best - 1e-9:
            best, rule = end, spread
    return rule


def asking_order(
    work: Sequence[T],
    known: Mapping[tuple[str, str], OwnTime],
    key: Callable[[T], tuple[str, str]],
    endpoint: Callable[[T], str],
    rates: Mapping[str, float],
) -> list[T]:
    """`work` in the order long first asks for it (stable): a list, for --first to keep each
    group in its order."""
    return list(AskingOrder(work, known, key, endpoint, rates, modelled=False))
