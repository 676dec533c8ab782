"""Showing a run as it goes: a live display on a terminal, a periodic log line elsewhere.

Both read the same `Tally` (servers per phase, fed by sweep events) and the client's
`CallStats` (requests, 429s, bytes) through one `Snapshot`; neither reaches into the sweep.
Time comes from an injected clock and waits from an injected sleep, so tests need neither.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from collector.clouddc.gateway import CallStats
from collector.control.endpoint import EndpointHealth
from collector.log import ev
from collector.observe.report import human_bytes, human_duration
from collector.sweep.events import Phase, PhaseChanged, Waits
from collector.sweep.timebox import TimeBox

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

log = logging.getLogger("collector.progress")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BAR_WIDTH = 24  # with the text beside it, the first line fits 80 columns


class Tally:
    """Servers per phase, kept current from `PhaseChanged` events, and when they finished.

    A server an earlier run collected goes straight from pending to collected; it counts as
    done, but not in the finish rate the ETA comes from: skipping it took no time.
    """

    WINDOW = 120.0  # seconds of finishes the rate is measured over

    def __init__(self, total: int, *, export_timeout: float | None = None, clock: Clock = time.monotonic) -> None:
        self.total = total
        self.counts: Counter[Phase] = Counter({Phase.PENDING: total})
        self.earlier = 0
        self.clock = clock
        self.started = clock()
        self.export_timeout = export_timeout
        self._finishes: deque[float] = deque()  # clock() of this run's finishes, in the window
        self._polling_since: dict[tuple[str, str], float] = {}  # when each export was accepted

    def __call__(self, event: PhaseChanged) -> None:
        self.counts[event.previous] -= 1
        self.counts[event.phase] += 1
        key = (event.project_id, event.server_id)
        if event.phase is Phase.POLLING:
            self._polling_since.setdefault(key, self.clock())
        else:
            self._polling_since.pop(key, None)
        if event.phase is Phase.COLLECTED and event.previous is Phase.PENDING:
            self.earlier += 1
        elif event.phase.finished:
            self._finishes.append(self.clock())

    @property
    def finished(self) -> int:
        return self.counts[Phase.COLLECTED] + self.counts[Phase.FAILED]

    def eta(self, now: float) -> float | None:
        """Seconds until every server is done at the recent finish rate; None until known."""
        remaining = self.total - self.finished
        if remaining <= 0:
            return 0.0
        while len(self._finishes) > 2 and now - self._finishes[0] > self.WINDOW:
            self._finishes.popleft()
        if len(self._finishes) < 2 or now <= self._finishes[0]:
            return None
        rate = (len(self._finishes) - 1) / (now - self._finishes[0])
        return remaining / rate

    def waiting_only(self) -> bool:
        """Whether all that is left is exports the server has not finished: nothing to start,
        nothing to download."""
        c = self.counts
        return c[Phase.POLLING] > 0 and not (c[Phase.PENDING] or c[Phase.EXPORTING] or c[Phase.DOWNLOADING])

    def timeout_in(self, now: float) -> float | None:
        """Seconds until the last export still polled reaches --export-timeout."""
        if self.export_timeout is None or not self._polling_since:
            return None
        return max(0.0, max(self._polling_since.values()) + self.export_timeout - now)


class _Rates:
    """Requests/s and bytes/s over the last few seconds, so bursts do not make them flicker."""

    WINDOW = 5.0

    def __init__(self, stats: CallStats, clock: Clock = time.monotonic) -> None:
        self.stats = stats
        self.clock = clock
        self._samples: deque[tuple[float, int, int]] = deque()
        self.requests_per_s = 0.0
        self.bytes_per_s = 0.0
        self.update()

    def update(self) -> None:
        now = self.clock()
        self._samples.append((now, self.stats.requests, self.stats.bytes_downloaded))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.popleft()
        then, requests, size = self._samples[0]
        elapsed = now - then
        if elapsed > 0:
            self.requests_per_s = (self.stats.requests - requests) / elapsed
            self.bytes_per_s = (self.stats.bytes_downloaded - size) / elapsed


@dataclass(frozen=True)
class Snapshot:
    """The run at one moment: what the display draws and the `progress` event carries."""

    elapsed_s: float
    servers: int
    collected: int  # including those earlier runs collected
    collected_earlier: int
    failed: int
    not_started: int
    exporting: int
    polling: int
    downloading: int
    eta_s: float | None
    bytes: int
    bytes_per_s: float
    requests: int
    requests_per_s: float
    throttled: int
    retries: int
    waiting_only: bool = False  # all that is left is exports the server has not finished
    timeout_in_s: float | None = None  # until the last of them reaches --export-timeout
    retry_waits: int = 0  # servers waiting out a Retry-After
    retry_asked_s: float = 0.0  # the longest Retry-After among them
    retry_until: float | None = None  # wall-clock time the last of those waits ends
    probing_gives_up_in_s: float | None = None  # an endpoint stopped answering: until it is given up
    deadline_in_s: float | None = None  # --deadline: until the run ends

    @property
    def finished(self) -> int:
        return self.collected + self.failed

    @property
    def percent(self) -> float:
        """Rounded down, and below 100 while any server is left: never "100%" with two to go."""
        if not self.servers:
            return 100.0
        exact = 100.0 * self.finished / self.servers
        return exact if self.finished == self.servers else min(math.floor(exact * 10) / 10, 99.9)

    def fields(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed_s, 1),
            "percent": round(self.percent, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "servers": self.servers,
            "collected": self.collected,
            "collected_earlier": self.collected_earlier,
            "failed": self.failed,
            "not_started": self.not_started,
            "exporting": self.exporting,
            "polling": self.polling,
            "downloading": self.downloading,
            "bytes": self.bytes,
            "bytes_per_s": round(self.bytes_per_s),
            "requests": self.requests,
            "requests_per_s": round(self.requests_per_s, 1),
            "throttled": self.throttled,
            "retries": self.retries,
            "waiting_only": self.waiting_only,
            "timeout_in_s": None if self.timeout_in_s is None else round(self.timeout_in_s),
            "retry_waits": self.retry_waits,
            "probing_gives_up_in_s": None if self.probing_gives_up_in_s is None else round(self.probing_gives_up_in_s),
            "deadline_in_s": None if self.deadline_in_s is None else round(self.deadline_in_s),
        }


@dataclass(frozen=True)
class Watched:
    """What the run may be waiting on besides exports: servers told to come back later,
    endpoints that stopped answering, and the deadline (--deadline) it must end by."""

    waits: Waits | None = None
    endpoints: tuple[EndpointHealth, ...] = ()
    timebox: TimeBox | None = None


def snapshot(tally: Tally, stats: CallStats, rates: _Rates, watched: Watched = Watched()) -> Snapshot:
    now = tally.clock()
    c = tally.counts
    waits = watched.waits.current() if watched.waits is not None else []
    giving_up = [s for s in (e.gives_up_in() for e in watched.endpoints) if s is not None]
    return Snapshot(
        elapsed_s=now - tally.started,
        servers=tally.total,
        collected=c[Phase.COLLECTED],
        collected_earlier=tally.earlier,
        failed=c[Phase.FAILED],
        not_started=c[Phase.PENDING],
        exporting=c[Phase.EXPORTING],
        polling=c[Phase.POLLING],
        downloading=c[Phase.DOWNLOADING],
        eta_s=tally.eta(now),
        bytes=stats.bytes_downloaded,
        bytes_per_s=rates.bytes_per_s,
        requests=stats.requests,
        requests_per_s=rates.requests_per_s,
        throttled=stats.throttled,
        retries=stats.retries,
        waiting_only=tally.waiting_only(),
        timeout_in_s=tally.timeout_in(now),
        retry_waits=len(waits),
        retry_asked_s=max((asked for _, asked in waits), default=0.0),
        retry_until=max((until for until, _ in waits), default=None),
        probing_gives_up_in_s=min(giving_up, default=None),
        deadline_in_s=None if watched.timebox is None else max(0.0, watched.timebox.left()),
    )


def _clock_line(s: Snapshot) -> str:
    done = f"{math.floor(s.percent):3d}% {s.finished}/{s.servers}, elapsed {human_duration(s.elapsed_s)}"
    if s.deadline_in_s is not None:
        done += f", deadline in {human_duration(s.deadline_in_s)}"
    # When the run waits rather than works, say on what and until when: no rate of finishes
    # predicts it, and an ETA would count down, then grow.
    if s.probing_gives_up_in_s is not None:
        return f"{done}, endpoint unreachable, probing (giving up in {human_duration(s.probing_gives_up_in_s)})"
    left = s.servers - s.finished
    if s.retry_waits and s.retry_until is not None and s.retry_waits >= left - s.polling:
        servers = f"{s.retry_waits} server{'s' * (s.retry_waits != 1)}"
        until = time.strftime("%H:%M:%S", time.localtime(s.retry_until))
        return f"{done}, waiting: API asked to retry after {s.retry_asked_s:g} s ({servers}, until {until})"
    if s.waiting_only:
        exports = f"{s.polling} export{'s' * (s.polling != 1)}"
        timeout = "" if s.timeout_in_s is None else f" (timeout in {human_duration(s.timeout_in_s)})"
        return f"{done}, waiting on {exports}{timeout}"
    eta = "--" if s.eta_s is None or s.retry_waits else human_duration(s.eta_s)
    if s.eta_s is not None and s.deadline_in_s is not None and s.eta_s > s.deadline_in_s:
        eta = "after the deadline"  # what is left then stays pending
    return f"{done}, ETA {eta}"


def _done_line(s: Snapshot) -> str:
    earlier = f" ({s.collected_earlier} by earlier runs)" if s.collected_earlier else ""
    return f"{s.collected} collected{earlier}, {s.failed} failed, {s.not_started} not started"


def _flight_line(s: Snapshot) -> str:
    return f"in flight: {s.exporting} exporting, {s.polling} polling, {s.downloading} downloading"


def _traffic_line(s: Snapshot) -> str:
    return (
        f"{human_bytes(s.bytes)} at {human_bytes(s.bytes_per_s)}/s, {s.requests_per_s:.0f} req/s, "
        f"{s.throttled} throttled, {s.retries} retries"
    )


def progress_line(s: Snapshot) -> str:
    """The whole snapshot on one line, for the log."""
    return f"{_clock_line(s).lstrip()}; {_done_line(s)}; {_flight_line(s)}; {_traffic_line(s)}"


def render(s: Snapshot) -> RenderableType:
    """Four lines, none wider than 80 columns; on a narrower terminal they are cut, not wrapped."""
    # Imported here: a run without a terminal (or with --no-progress) never loads rich.
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def line(text: str) -> Text:
        return Text(text, no_wrap=True, overflow="ellipsis")

    top = Table.grid(padding=(0, 1))
    top.add_column(width=BAR_WIDTH, no_wrap=True)
    top.add_column(no_wrap=True, overflow="ellipsis")
    top.add_row(ProgressBar(total=max(s.servers, 1), completed=s.finished, width=BAR_WIDTH), line(_clock_line(s)))
    return Group(top, line(_done_line(s)), line(_flight_line(s)), line(_traffic_line(s)))


async def show_progress(
    tally: Tally,
    stats: CallStats,
    *,
    live: bool,
    watched: Watched = Watched(),
    interval: float = 10.0,
    refresh: float = 0.5,
    sleep: Sleep = anyio.sleep,
    console: Console | None = None,
) -> None:
    """Run until cancelled: a rich live display if `live`, else a `progress` log line at
    once and then every `interval` s (with the numbers as fields, for JSON logs)."""
    rates = _Rates(stats, tally.clock)
    if not live:
        while True:
            rates.update()
            now = snapshot(tally, stats, rates, watched)
            log.info("progress: %s", progress_line(now), extra=ev("progress", **now.fields()))
            await sleep(interval)
    from rich.console import Console  # only a live display loads rich (see `render`)
    from rich.live import Live

    console = console or Console(file=sys.stderr)
    with Live(
        render(snapshot(tally, stats, rates, watched)), console=console, auto_refresh=False, transient=False
    ) as display:
        try:
            while True:
                await sleep(refresh)
                rates.update()
                display.update(render(snapshot(tally, stats, rates, watched)), refresh=True)
        finally:
            display.update(render(snapshot(tally, stats, rates, watched)), refresh=True)
