"""Showing a run as it goes: a live display on a terminal, a periodic log line elsewhere.

Both read the same `Tally` (servers per phase, fed by sweep events) and the client's
`CallStats` (requests, 429s, bytes); neither reaches into the sweep.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from collector.api import CallStats
from collector.events import Phase, PhaseChanged
from collector.report import human_bytes

log = logging.getLogger("collector.progress")


class Tally:
    """Servers per phase, kept current from `PhaseChanged` events."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.counts: Counter[Phase] = Counter({Phase.PENDING: total})

    def __call__(self, event: PhaseChanged) -> None:
        self.counts[event.previous] -= 1
        self.counts[event.phase] += 1

    @property
    def finished(self) -> int:
        return self.counts[Phase.COLLECTED] + self.counts[Phase.FAILED]


class _Rates:
    """Requests/s and bytes/s over the last refresh interval."""

    def __init__(self, stats: CallStats) -> None:
        self.stats = stats
        self._last = (anyio.current_time(), stats.requests, stats.bytes_downloaded)
        self.requests_per_s = 0.0
        self.bytes_per_s = 0.0

    def update(self) -> None:
        now = anyio.current_time()
        then, requests, size = self._last
        elapsed = max(now - then, 1e-6)
        self.requests_per_s = (self.stats.requests - requests) / elapsed
        self.bytes_per_s = (self.stats.bytes_downloaded - size) / elapsed
        self._last = (now, self.stats.requests, self.stats.bytes_downloaded)


def status_line(tally: Tally, stats: CallStats, rates: _Rates) -> str:
    c = tally.counts
    return (
        f"{tally.finished}/{tally.total} done ({c[Phase.COLLECTED]} collected, {c[Phase.FAILED]} failed) | "
        f"exporting {c[Phase.EXPORTING]}, polling {c[Phase.POLLING]}, downloading {c[Phase.DOWNLOADING]} | "
        f"{human_bytes(stats.bytes_downloaded)} at {human_bytes(rates.bytes_per_s)}/s | "
        f"{rates.requests_per_s:.0f} req/s, {stats.throttled} throttled, {stats.retries} retries"
    )


async def show_progress(tally: Tally, stats: CallStats, *, live: bool, interval: float = 10.0) -> None:
    """Run until cancelled: a rich live display if `live`, else a log line every `interval` s."""
    rates = _Rates(stats)
    if not live:
        while True:
            await anyio.sleep(interval)
            rates.update()
            log.info("progress: %s", status_line(tally, stats, rates))
    console = Console(file=sys.stderr)

    def render() -> Group:
        bar = ProgressBar(total=max(tally.total, 1), completed=tally.finished, width=40)
        return Group(bar, Text(status_line(tally, stats, rates)))

    with Live(render(), console=console, auto_refresh=False, transient=False) as display:
        try:
            while True:
                await anyio.sleep(0.5)
                rates.update()
                display.update(render(), refresh=True)
        finally:
            display.update(render(), refresh=True)
