"""--deadline, as the sweep uses it: when the run ends, and which work is still worth starting.

At the deadline the sweep's cancel scope ends everything still running (`Sweep.run`); what is
not collected by then is `pending` with the reason ``deadline``, and the journal keeps the
exports already asked for, so the same command run again takes them up without asking again.

Before then, the time left is spent where it can still pay, by what this run has seen of how
long exports and transfers take (their medians; nothing is refused before a few are known):

- a new export is not asked for once it could not finish, and be downloaded, in the time left:
  the request budget goes to the polls and downloads of exports that can;
- a download is not started once a typical transfer would not finish in time (the export
  stays in the journal for the next run, which downloads it without exporting again);
- polls come closer together as the deadline nears (a quarter of the time left, at least a
  second apart), so an export that finishes a few seconds before the deadline is seen in time.
"""

from __future__ import annotations

from collections.abc import Callable

from collector.control.throttle import monotonic
from collector.sweep.polling import ExportDurations

DEADLINE = "deadline"  # the reason of a server the deadline left pending, and the run's stop reason

_POLL_SHARE = 0.25  # of the time left: the longest wait between polls as the deadline nears
_CLOSEST_POLLS = 1.0  # seconds: polls never come closer than this


class TimeBox:
    """The deadline of one sweep, `ends_at` on the `clock` (the event loop's, as anyio's)."""

    def __init__(self, ends_at: float, written: str, clock: Callable[[], float] = monotonic) -> None:
        self.ends_at = ends_at
        self.written = written  # as the user gave it, for messages: "40s", "2026-12-06T21:00Z"
        self.clock = clock
        self.transfers = ExportDurations()  # how long this run's downloads take

    def __str__(self) -> str:
        return self.written

    def left(self) -> float:
        return self.ends_at - self.clock()

    def worth_exporting(self, exports: ExportDurations) -> bool:
        """Could a new export, asked for now, finish and be downloaded before the deadline?"""
        export = exports.quantile(0.5)
        if export is None:
            return self.left() > 0
        return self.left() > export + (self.transfers.quantile(0.5) or 0.0)

    def worth_downloading(self) -> bool:
        """Would a typical transfer, started now, finish before the deadline?"""
        return self.left() > (self.transfers.quantile(0.5) or 0.0)

    def poll_delay(self, delay: float) -> float:
        """`delay`, shortened as the deadline nears."""
        return min(delay, max(_CLOSEST_POLLS, self.left() * _POLL_SHARE))
