"""When to ask about an export next.

Polling is most of the requests a sweep sends, so it is worth being deliberate: the first
poll comes after `first` seconds; without better knowledge each later wait is 1.5 times the
last, up to `longest`. Once an export has reported progress twice, we estimate when it will
reach 100 % from the rate between those reports and aim the next poll just after that
estimate (never sooner than `shortest`, never later than the backoff would be). So a 10 s
export is fetched soon after it is ready, and a 20 min export is not polled 240 times.

Also tracks what the failure reason should say if the export never completes: stuck at a
percentage, went backwards, or a status we do not understand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.api import ExportState, ExportStatus


@dataclass
class PollSchedule:
    first: float = 5.0
    shortest: float = 1.0
    longest: float = 60.0
    growth: float = 1.5
    started: float = 0.0  # clock time the export began (its POST returned)

    _wait: float = field(default=0.0, init=False)
    _samples: list[tuple[float, int]] = field(default_factory=list, init=False)
    went_backwards: tuple[int, int] | None = field(default=None, init=False)
    last: ExportStatus | None = field(default=None, init=False)

    def first_delay(self) -> float:
        self._wait = self.first
        return self.first

    def next_delay(self, status: ExportStatus, now: float) -> float:
        """Record a poll answer seen at clock time `now`; return how long to wait before the next."""
        self.last = status
        if status.percentage is not None:
            if self._samples and status.percentage < self._samples[-1][1]:
                self.went_backwards = (self._samples[-1][1], status.percentage)
                self._samples.clear()
            self._samples.append((now, status.percentage))
            del self._samples[:-2]
        backoff = min(self.longest, max(self.shortest, self._wait * self.growth))
        self._wait = backoff
        eta = self._eta(now)
        if eta is None:
            return backoff
        # Aim a little after the estimate: polling too early costs a request and a retry.
        return min(backoff, max(self.shortest, eta * 1.1 + 0.2))

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

    def failure_reason(self, timeout: float) -> str:
        """Why an export that did not finish within `timeout` seconds is given up."""
        last = self.last
        if last is None:
            return f"export did not report status within {timeout:g} s"
        if last.state is ExportState.UNKNOWN:
            return f"export status {last.status!r} not understood after {timeout:g} s"
        if self.went_backwards is not None:
            before, after = self.went_backwards
            return (
                f"export progress went backwards ({before}% -> {after}%) "
                f"and did not complete within {timeout:g} s"
            )
        at = f" at {last.percentage}%" if last.percentage is not None else ""
        return f"export stuck{at}: not completed within {timeout:g} s (status {last.status!r})"
