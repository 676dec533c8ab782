"""When to ask about an export next.

Polls are most of the requests a sweep sends, and when the API's request budget is the
limit, every poll that finds an export still running delays the whole fleet. So:

- The first poll of an export comes when most exports of this run have finished by then:
  a percentile of the durations seen so far (`ExportDurations`), measured from the export's
  `created_at`: the 60th to the 95th, spread evenly over the exports so that their polls and
  downloads do not all come at once. Until a few exports have been seen, `first` seconds (--poll-interval);
  an export whose first poll is still ahead when the fleet's durations become known waits
  for them instead (`postpone`), so only the first few exports of a run pay for finding out.
  A run starts with what earlier runs saw (a prior sample, `collector.run.learned`), so
  even its first exports wait for their likely end.
- After a poll that reports progress, we estimate when the export reaches 100 % from its
  percentage history (rate between the two latest reports, or since it started): the latest
  end those percentages allow (a reported 40 % may be 40.9 %), and aim just after that.
  Except for an export that may end the run (`tight_delay`, the caller decides): its poll's
  lag is the run's, so it aims at the middle of what the percentages allow and polls again
  soon if it was early.
- Without an estimate (no percentage, or it did not move), each wait is 1.5 times the last.
  Every wait stays between `shortest` and `longest` seconds, whatever the estimate says;
  a first poll aimed at the fleet's durations, between `shortest` and `max_age`.

Polling a little late costs that one server a few seconds; polling early costs a request
for everyone. The makespan of a sweep is set by its slowest exports and its request budget,
so we lean late; except into budget nobody uses, while the budget binds: then the export
whose end is only guessed and which has waited longest is polled at once
(`collector.sweep.early`, `guessing`), and if it is still running its percentage says when
it ends.

Also tracks what the failure reason should say if an export never completes: stuck at a
percentage, went backwards, or a status we do not understand.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from collector.clouddc.replies import ExportState, ExportStatus
from collector.config.settings import Settings
from collector.errors import ExportFailed


class OwnTime(NamedTuple):
    """What one server's export took in an earlier run (`collector.run.learned`)."""

    seconds: float
    exact: bool  # where its percentages put its end; else a bound: it was done by then


class ExportDurations:
    """How long exports of this run take: a bounded sample of recent estimates, in seconds.

    `prior` is a sample from earlier runs (`collector.run.learned`): it answers until this
    run's own estimates push it out of the sample, one for one.
    """

    MIN_SAMPLES = 5
    SPREAD = (0.6, 0.95)  # the shares of exports done by the first polls, spread over
    KEPT = 21  # points of the distribution kept for the next run: every 5th percentile

    def __init__(self, size: int = 512, prior: Iterable[float] = (), spread: tuple[float, float] = SPREAD) -> None:
        self._recent: deque[float] = deque((s for s in prior if s > 0), maxlen=size)
        self.spread = spread
        self.seen = 0  # estimates of this run (not the prior's)
        self._turn = 0
        self._imputed = 0

    def add(self, seconds: float) -> None:
        if seconds > 0:
            self._recent.append(seconds)
            self.seen += 1

    def first_poll_quantile(self) -> float:
        """Where in the distribution the next export's first poll aims: its share of exports
        done by then. Spread evenly over SPREAD (a golden-ratio sequence), not all at one
        percentile: exports asked for together would otherwise all be polled, and the done
        ones downloaded, in the same second, a burst of twice the fleet's requests at the
        end of the run. The cost: a second poll for 22.5 % of the exports on average, where
        aiming all at the 90th percentile costs 10 % but collects most of the fleet late, and
        at once."""
        self._turn += 1
        lo, hi = self.spread
        return lo + (hi - lo) * ((self._turn * 0.6180339887498949) % 1.0)

    def below(self, share: float) -> float:
        """A share spread evenly over [0, `share`) (a golden-ratio sequence): where in the
        distribution to take the duration of an export known only to be done by `share`."""
        self._imputed += 1
        return share * ((self._imputed * 0.6180339887498949) % 1.0)

    def quantile(self, q: float) -> float | None:
        if len(self._recent) < self.MIN_SAMPLES:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> list[float]:
        """The distribution in `KEPT` points (its quantiles, 0 to 100 %), as the next run's
        prior; empty when this run saw too few exports to say."""
        if self.seen < self.MIN_SAMPLES:
            return []
        ordered = sorted(self._recent)
        last = len(ordered) - 1
        return [round(ordered[round(last * i / (self.KEPT - 1))], 3) for i in range(self.KEPT)]


@dataclass(slots=True)  # one per export in flight: thousands at once
class PollSchedule:
    first: float = Settings.poll_interval
    shortest: float = 1.0
    longest: float = Settings.poll_max
    growth: float = 1.5
    started: float = 0.0  # clock time the export began, as far as we know
    resumed: bool = False  # an earlier run asked for it: `started` is only when we took it up
    max_age: float = Settings.export_timeout  # a `created_at` further back than this (--export-timeout) is not believed
    durations: ExportDurations | None = None  # shared by every export of the run
    expected: OwnTime | None = None  # what this server's export took in an earlier run
    wall: Callable[[], float] = field(default=time.time, repr=False)

    QUEUED: ClassVar[float] = 0.5  # see `completed`
    OWN_MARGIN: ClassVar[float] = 1.02  # a first poll aimed at the server's own earlier time comes this much after it
    TIGHTEST: ClassVar[float] = 0.25  # the shortest wait of a poll aimed tight (`tight_delay`)

    _wait: float = field(default=0.0, init=False)
    _samples: list[tuple[float, int]] = field(default_factory=list, init=False)
    _polls: int = field(default=0, init=False)
    _anchored: bool = field(default=False, init=False)
    _aimed: float | None = field(default=None, init=False)  # the fleet's duration the first poll aimed at
    _share: float | None = field(default=None, init=False)  # ... at this share of exports done
    _end: float | None = field(default=None, init=False)  # when the percentages said it would end
    took: OwnTime | None = field(default=None, init=False)  # its duration as best known, once completed
    went_backwards: tuple[int, int] | None = field(default=None, init=False)
    last: ExportStatus | None = field(default=None, init=False)

    @property
    def guessing(self) -> bool:
        """Is the next poll's moment a guess? Not once a percentage has put the export's end,
        nor before the first poll of a server whose own exact time an earlier run kept."""
        if self._end is not None:
            return False
        own = self.expected
        return own is None or not own.exact or self._polls > 0

    @property
    def polled(self) -> bool:
        """Has it been polled (its next wait is not its first)?"""
        return self._polls > 0

    def first_delay(self, now: float) -> float:
        """How long after `now` to poll first."""
        own = self.expected
        # This server's own exact time from an earlier run needs no fleet's: a log bundle's
        # export takes about as long as it did yesterday, closer than any share of the fleet's.
        typical = None if own is not None and own.exact else self._typical()
        self._aimed = typical
        if typical is None and own is None:
            self._wait = min(self.longest, max(self.shortest, self.first))
        else:
            # Not capped at `longest` (the backoff's cap, for when nothing is known): with
            # exports of 60-120 s, that cap brought every first poll to 60 s after the first
            # few, when almost none was done, a poll more per server (issue 14); at most
            # `max_age`, the longest an export may take. Just after its own exact time; no
            # later than its bound (it was once found done by then).
            aim = math.inf if typical is None else self._aim(typical, now)
            if own is not None:
                margin = self.OWN_MARGIN if own.exact else 1.0
                aim = min(aim, own.seconds * margin - (now - self.started))
            self._wait = min(self.max_age, max(self.shortest, aim))
        return self._wait

    def _aim(self, typical: float, now: float) -> float:
        """Seconds from `now` until just after `typical` seconds from the export's start."""
        return typical * 1.05 - (now - self.started)

    def postpone(self, now: float) -> float:
        """Before the first poll: how much longer to wait, now that the fleet's durations may
        be known (they were not when `first_delay` was asked); 0 to poll now."""
        if self._polls or self._aimed is not None or self.expected is not None:
            return 0.0
        typical = self._typical()
        if typical is None:
            return 0.0
        self._aimed = typical
        return max(0.0, min(self.max_age, self._aim(typical, now)))

    def _typical(self) -> float | None:
        """How long this export likely takes: the fleet's duration at this export's share."""
        if self.durations is None or self.durations.quantile(0.5) is None:
            return None
        if self._share is None:
            self._share = self.durations.first_poll_quantile()
        return self.durations.quantile(self._share)

    def next_delay(self, status: ExportStatus, now: float) -> float:
        """Record a poll answer seen at clock time `now`; return how long to wait before the next."""
        self.last = status
        self._polls += 1
        self._anchor(status, now)
        if status.percentage is not None:
            if self._samples and status.percentage < self._samples[-1][1]:
                self.went_backwards = (self._samples[-1][1], status.percentage)
                self._samples.clear()
            self._samples.append((now, status.percentage))
            del self._samples[:-2]
            if self.durations is not None and 0 < status.percentage < 100:
                # For the fleet, the middle of what the percentage allows (40 % is 40 to 41).
                self.durations.add((now - self.started) * 100 / (status.percentage + 0.5))
        eta = self._eta(now)
        if eta is None:
            self._wait = min(self.longest, max(self.shortest, self._wait * self.growth))
        else:
            # Just after the latest end the percentages allow: too early costs a request.
            self._wait = min(self.longest, max(self.shortest, eta * 1.02 + 0.2))
            self._end = now + eta
        return self._wait

    @property
    def end(self) -> float | None:
        """Clock time the percentages put the export's end at, at the latest (None: unknown)."""
        return self._end

    def tight_delay(self, now: float) -> float | None:
        """For an export that may end the run, after `next_delay`: the wait until the middle
        of what its percentages allow (a reported 40 % is 40 to 41 %), with no margin, where
        `next_delay` aims past the latest. A poll that comes early costs a request, and the
        next estimate, taken near the end, is close; a late one costs the whole run its lag:
        with 300 servers of 5-15 s the last export was found 0.77 s after its end, 0.36 s of
        it the latest end's margin and 0.41 s `next_delay`'s. None without an estimate."""
        if self._end is None or not self._samples:
            return None
        t1, p1 = self._samples[-1]
        if p1 >= 100 or t1 <= self.started:
            return None
        # as `_eta`, at the middle of the latest percentage, from the export's start
        middle = self.started + (t1 - self.started) * 100 / (p1 + 0.5)
        self._wait = min(self._wait, max(self.TIGHTEST, middle - now))
        return self._wait

    def completed(self, now: float, due: float | None = None) -> None:
        """The export was found complete at `now` by a poll that was `due` (its wait over) at
        that clock time: at most this long, a sample for the fleet.

        Found at a first poll aimed at the fleet's q-th percentile, it counts as a duration
        drawn from the fleet's own distribution below q, not as the later moment of the poll:
        otherwise each run's sample (and, kept between runs, the next run's) would lose its
        lower part and drift later by the poll's margin. And a poll that waited for its turn
        (our own rate limiter, busy with exports) for more than `QUEUED` of the time it was
        due at gives no sample: it tells our queue's length, not the export's. Taken as one,
        a run's first exports, polled late behind the others' POSTs, made every later first
        poll wait as long as they had, and the servers pile up waiting (issue 14).

        Sets `took`, this server's own time for the next run (`collector.sweep.plan`): exact
        where its percentages put its end; else a bound, at most the moment of the poll that
        found it done (or its earlier time, if that poll aimed at it), never the fleet's draw
        above, which would make a slow server look quick, asked late and polled early."""
        took = now - self.started
        own = self.expected
        if self._end is not None:  # where its percentages put its end
            self.took = OwnTime(min(took, self._end - self.started), exact=True)
        elif own is not None and not self._polls:
            # Done by a poll aimed at its earlier time: no later than that. An exact time is
            # confirmed and kept (downgraded to a bound, it had the next run poll it early,
            # find it running, and make it exact again: every other night a poll more for most
            # of the fleet, issue 14); a bound stays a bound. An export that became slower is
            # found running there and its percentages tell its new time; one that became
            # faster costs its poll's lag, not a request.
            took = min(took, own.seconds)
            self.took = OwnTime(took, exact=own.exact)
        else:
            self.took = OwnTime(took, exact=False)
        if due is not None and now - due > self.QUEUED * max(0.0, due - self.started):
            return
        if self.durations is not None and self._polls <= 1:
            if self._aimed is not None and self._share is not None:
                # Done before a poll aimed at the fleet's share q: a duration from the fleet's
                # own distribution below q (at a share spread over 0..q), not the poll's time.
                took = min(took, self.durations.quantile(self.durations.below(self._share)) or took)
            self.durations.add(took)

    def _anchor(self, status: ExportStatus, now: float) -> None:
        """For an export an earlier run asked for, take its start from `created_at`, once.

        For our own exports the POST's return is the better witness: no clock skew.
        """
        if not self.resumed or self._anchored or status.created_at is None:
            return
        self._anchored = True
        age = self.wall() - status.created_at.timestamp()
        if age > self.max_age:
            # A clock far off, or an export long forgotten: as a start it would make every
            # estimate (and the fleet's, through `durations`) absurdly long. Keep ours.
            return
        self.started = min(now, now - age)

    def _eta(self, now: float) -> float | None:
        """Seconds until 100 % at the latest the two latest samples allow (or the start and
        the latest): a reported percentage is rounded down, so the export may have been
        almost a point further at each, and went no faster than from the first's top to the
        latest's bottom. From the start, 0 % is exact."""
        if not self._samples:
            return None
        t1, p1 = self._samples[-1]
        if len(self._samples) >= 2 and self._samples[0][1] + 1 < p1:
            t0, p0 = self._samples[0]
            p0 += 1
        else:
            t0, p0 = self.started, 0
        if p1 <= p0 or t1 <= t0:
            return None
        speed = (p1 - p0) / (t1 - t0)
        return (100 - p1) / speed - (now - t1)

    def failure(self, timeout: float, waited: float) -> ExportFailed:
        """Why an export the server had not completed after `waited` seconds (past `timeout`,
        --export-timeout) is given up: the message says this server's numbers, the reason is
        the summary's group (stuck, went backwards, not understood, no status at all)."""
        last = self.last
        took = f"after {waited:.1f} s" if waited < 10 else f"after {waited:.0f} s"
        took += f" (--export-timeout {timeout:g} s)"
        if last is None:
            return ExportFailed(f"export did not report status {took}", "export reported no status in time")
        if last.state is ExportState.UNKNOWN:
            return ExportFailed(f"export status {last.status!r} not understood {took}", "export status not understood")
        if self.went_backwards is not None:
            before, after = self.went_backwards
            return ExportFailed(
                f"export progress went backwards ({before}% -> {after}%) and it did not complete {took}",
                "export progress went backwards",
            )
        at = f" at {last.percentage}%" if last.percentage is not None else ""
        return ExportFailed(
            f"export stuck{at}: not completed {took} (status {last.status!r})",
            "export not completed within --export-timeout",
        )
