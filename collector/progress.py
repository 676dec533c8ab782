"""Showing a run as it goes: a live display on a terminal, a periodic log line elsewhere.

Both read the same `Tally` (servers per phase, fed by sweep events) and the client's
`CallStats` (requests, 429s, bytes); neither reaches into the sweep.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter, deque

import anyio
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
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
    """Requests/s and bytes/s over the last few seconds, so bursts do not make them flicker."""

    WINDOW = 5.0

    def __init__(self, stats: CallStats) -> None:
        self.stats = stats
        self._samples: deque[tuple[float, int, int]] = deque()
        self.requests_per_s = 0.0
        self.bytes_per_s = 0.0
        self.update()

    def update(self) -> None:
        now = anyio.current_time()
        self._samples.append((now, self.stats.requests, self.stats.bytes_downloaded))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.popleft()
        then, requests, size = self._samples[0]
        elapsed = now - then
        if elapsed > 0:
            self.requests_per_s = (self.stats.requests - requests) / elapsed
            self.bytes_per_s = (self.stats.bytes_downloaded - size) / elapsed


def _counts(tally: Tally) -> str:
    c = tally.counts
    return f"{tally.finished}/{tally.total} done ({c[Phase.COLLECTED]} collected, {c[Phase.FAILED]} failed)"


def _phases(tally: Tally) -> str:
    c = tally.counts
    return f"exporting {c[Phase.EXPORTING]}, polling {c[Phase.POLLING]}, downloading {c[Phase.DOWNLOADING]}"


def _traffic(stats: CallStats, rates: _Rates) -> str:
    return (
        f"{human_bytes(stats.bytes_downloaded)} at {human_bytes(rates.bytes_per_s)}/s, "
        f"{rates.requests_per_s:.0f} req/s, {stats.throttled} throttled, {stats.retries} retries"
    )


def status_line(tally: Tally, stats: CallStats, rates: _Rates) -> str:
    return f"{_counts(tally)} | {_phases(tally)} | {_traffic(stats, rates)}"


async def show_progress(tally: Tally, stats: CallStats, *, live: bool, interval: float = 10.0) -> None:
    """Run until cancelled: a rich live display if `live`, else a log line every `interval` s."""
    rates = _Rates(stats)
    if not live:
        while True:
            await anyio.sleep(interval)
            rates.update()
            log.info("progress: %s", status_line(tally, stats, rates))
    console = Console(file=sys.stderr)

    def render() -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(ProgressBar(total=max(tally.total, 1), completed=tally.finished, width=40), Text(_counts(tally)))
        grid.add_row(Text(""), Text(_phases(tally)))
        grid.add_row(Text(""), Text(_traffic(stats, rates)))
        return grid

    with Live(render(), console=console, auto_refresh=False, transient=False) as display:
        try:
            while True:
                await anyio.sleep(0.5)
                rates.update()
                display.update(render(), refresh=True)
        finally:
            display.update(render(), refresh=True)
