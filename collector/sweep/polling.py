"""When to ask about an export next.

Polls are most of the requests a sweep sends, and when the API's request budget is the
limit, every poll that finds an export still running delays the whole fleet. So:

- The first poll of an export comes when most exports of this run have finished by then:
  the 90th percentile of the durations seen so far (`ExportDurations`), measured from the
  export's `created_at`. Until a few exports have been seen, `first` seconds (--poll-interval).
- After a poll that reports progress, we estimate when the export reaches 100 % from its
  percentage history (rate between the two latest reports, or since it started) and aim just
  after that.
- Without an estimate (no percentage, or it did not move), each wait is 1.5 times the last.
  Every wait stays between `shortest` and `longest` seconds, whatever the estimate says.

Polling a little late costs that one server a few seconds; polling early costs a request
for everyone. The makespan of a sweep is set by its slowest exports and its request budget,
so we lean late.

Also tracks what the failure reason should say if an export never completes: stuck at a
percentage, went backwards, or a status we do not understand.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.clouddc.replies import ExportState, ExportStatus
from collector.config.settings import Settings
from collector.errors import ExportFailed


class ExportDurations:
    """How long exports of this run take: a bounded sample of recent estimates, in seconds."""

    MIN_SAMPLES = 5

    def __init__(self, size: int = 512) -> None:
        self._recent: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if seconds > 0:
            self._recent.append(seconds)

    def quantile(self, q: float) -> float | None:
        if len(self._recent) < self.MIN_SAMPLES:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class PollSchedule:
    first: float = Settings.poll_interval
    shortest: float = 1.0
    longest: float = Settings.poll_max
    growth: float = 1.5
    started: float = 0.0  # clock time the export began, as far as we know
    resumed: bool = False  # an earlier run asked for it: `started` is only when we took it up
    max_age: float = Settings.export_timeout  # a `created_at` further back than this (--export-timeout) is not believed
    durations: ExportDurations | None = None  # shared by every export of the run
    wall: Callable[[], float] = field(default=time.time, repr=False)

    _wait: float = field(default=0.0, init=False)
    _samples: list[tuple[float, int]] = field(default_factory=list, init=False)
    _polls: int = field(default=0, init=False)
    _anchored: bool = field(default=False, init=False)
    went_backwards: tuple[int, int] | None = field(default=None, init=False)
    last: ExportStatus | None = field(default=None, init=False)

    def first_delay(self, now: float) -> float:
        """How long after `now` to poll first."""
        typical = self.durations.quantile(0.9) if self.durations is not None else None
        wait = self.first if typical is None else typical * 1.05 - (now - self.started)
        self._wait = min(self.longest, max(self.shortest, wait))
        return self._wait

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
                self.durations.add((now - self.started) * 100 / status.percentage)
        eta = self._eta(now)
        if eta is None:
            self._wait = min(self.longest, max(self.shortest, self._wait * self.growth))
        else:
            # Aim a little after the estimate: polling too early costs a request, and another.
            self._wait = min(self.longest, max(self.shortest, eta * 1.1 + 0.2))
        return self._wait

    def completed(self, now: float) -> None:
        """The export was found complete at `now`: at most this long, a sample for the fleet."""
        if self.durations is not None and self._polls <= 1:
            self.durations.add(now - self.started)

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
        """Seconds until 100 %, from the two latest samples (or the start and the latest)."""
        if not self._samples:
            return None
        t1, p1 = self._samples[-1]
        if len(self._samples) >= 2:
            t0, p0 = self._samples[0]
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
