"""Progress: the numbers (ETA from this run's finishes only), the display within 80 columns,
and the log line at once and then every interval; a fake clock and sleep, no waiting."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace

import anyio
import anyio.lowlevel
import pytest
from _clock import FakeClock
from rich.console import Console

from collector.cli.logs import JsonFormatter
from collector.clouddc.gateway import CallStats
from collector.observe.progress import Snapshot, Tally, _Rates, progress_line, render, show_progress, snapshot
from collector.sweep.events import Phase, PhaseChanged


def move(tally: Tally, phase: Phase, previous: Phase, server: str = "S") -> None:
    tally(PhaseChanged("p1", server, phase, previous))


def collect(tally: Tally, clock: FakeClock, at: float) -> None:
    clock.now = at
    move(tally, Phase.EXPORTING, Phase.PENDING)
    move(tally, Phase.POLLING, Phase.EXPORTING)
    move(tally, Phase.DOWNLOADING, Phase.POLLING)
    move(tally, Phase.COLLECTED, Phase.DOWNLOADING)


def test_eta_comes_from_this_runs_finish_rate_not_from_servers_earlier_runs_collected():
    clock = FakeClock(0.0)
    tally = Tally(100, clock=clock)
    for _ in range(40):  # skipped at once: the journal says they are on disk
        move(tally, Phase.COLLECTED, Phase.PENDING)
    assert tally.earlier == 40 and tally.eta(0.0) is None
    for second in range(10, 21):  # 11 finishes, one a second
        collect(tally, clock, float(second))
    assert tally.finished == 51
    assert tally.eta(20.0) == pytest.approx(49.0)  # 49 left at 1/s


def test_eta_is_unknown_before_two_finishes_and_zero_when_all_are_done():
    clock = FakeClock(0.0)
    tally = Tally(2, clock=clock)
    collect(tally, clock, 5.0)
    assert tally.eta(6.0) is None
    clock.now = 7.0
    move(tally, Phase.FAILED, Phase.PENDING)
    assert tally.eta(7.0) == 0.0


def test_eta_follows_the_recent_rate():
    clock = FakeClock(0.0)
    tally = Tally(1000, clock=clock)
    for second in range(100):  # 1/s for 100 s
        collect(tally, clock, float(second))
    for tenth in range(300):  # then 10/s for 30 s
        collect(tally, clock, 100 + tenth / 10)
    eta = tally.eta(130.0)
    remaining = 1000 - 400
    # over the last 120 s: 90 + 300 finishes; far faster than 1/s, far slower than 10/s
    assert remaining / 10 < eta < remaining / 1
    assert eta == pytest.approx(remaining / (389 / (130.0 - 10.0)), rel=0.01)


def test_rates_use_the_injected_clock():
    clock = FakeClock(0.0)
    stats = CallStats()
    rates = _Rates(stats, clock)
    stats.requests, stats.bytes_downloaded = 30, 3 * 1024**2
    clock.now = 3.0
    rates.update()
    assert rates.requests_per_s == pytest.approx(10.0)
    assert rates.bytes_per_s == pytest.approx(1024**2)


def big_snapshot(**overrides) -> Snapshot:
    values = dict(
        elapsed_s=45 * 3600 + 59 * 60 + 59,
        servers=100_000,
        collected=99_999,
        collected_earlier=88_888,
        failed=1,
        not_started=77_777,
        exporting=66_666,
        polling=55_555,
        downloading=44_444,
        eta_s=99 * 3600,
        bytes=999 * 1024**4,
        bytes_per_s=1023.9 * 1024**3,
        requests=10**9,
        requests_per_s=99_999.0,
        throttled=9_999_999,
        retries=9_999_999,
    )
    return Snapshot(**{**values, **overrides})


def rendered(s: Snapshot, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render(s))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize(
    "s",
    [
        big_snapshot(),
        big_snapshot(eta_s=None, collected_earlier=0),
        big_snapshot(
            servers=3,
            collected=1,
            failed=0,
            collected_earlier=0,
            not_started=0,
            exporting=1,
            polling=1,
            downloading=0,
            eta_s=5,
            elapsed_s=2,
            bytes=0,
            bytes_per_s=0,
            requests=3,
            requests_per_s=1.5,
            throttled=0,
            retries=0,
        ),
    ],
    ids=["huge", "huge-no-eta", "small"],
)
def test_display_fits_the_width_without_wrapping(s, width):
    lines = rendered(s, width)
    assert len(lines) == 4  # a wrapped line would make more
    assert max(len(line) for line in lines) <= width


def test_display_shows_percentage_elapsed_and_eta():
    s = big_snapshot(
        servers=200,
        collected=50,
        collected_earlier=20,
        failed=10,
        not_started=100,
        exporting=10,
        polling=20,
        downloading=10,
        elapsed_s=83,
        eta_s=245,
    )
    top, done, flight, traffic = rendered(s, 80)
    assert " 30% 60/200, elapsed 1:23, ETA 4:05" in top
    assert done.startswith("50 collected (20 by earlier runs), 10 failed, 100 not started")
    assert flight.startswith("in flight: 10 exporting, 20 polling, 10 downloading")
    assert "req/s" in traffic and "throttled" in traffic


def test_progress_line_is_one_line_with_everything():
    line = progress_line(big_snapshot(eta_s=None))
    assert "\n" not in line and "ETA --" in line and "in flight:" in line


@pytest.mark.anyio
async def test_without_a_terminal_progress_is_logged_at_once_then_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="collector.progress")
    clock = FakeClock(0.0)
    tally = Tally(10, clock=clock)
    stats = CallStats()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds
        stats.requests += 50
        if len(sleeps) == 1:
            collect(tally, clock, clock.now)
        if len(sleeps) == 3:
            scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        await show_progress(tally, stats, live=False, interval=10.0, sleep=fake_sleep)
    records = [r for r in caplog.records if r.name == "collector.progress"]
    assert sleeps == [10.0, 10.0, 10.0]
    assert [r.fields["elapsed_s"] for r in records] == [0.0, 10.0, 20.0]  # the first at once
    assert [r.event for r in records] == ["progress"] * 3
    assert records[1].fields["collected"] == 1 and records[1].fields["percent"] == 10.0
    assert records[2].fields["requests"] == 100
    entry = json.loads(JsonFormatter().format(records[1]))
    assert entry["event"] == "progress" and entry["eta_s"] is None and entry["message"].startswith("progress: ")


@pytest.mark.anyio
async def test_live_display_draws_on_the_console_and_draws_the_end():
    clock = FakeClock(0.0)
    tally = Tally(2, clock=clock)
    stats = CallStats()
    console = Console(width=80, record=True, file=io.StringIO(), color_system=None)
    ticks = 0

    async def fake_sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        collect(tally, clock, clock.now + seconds)
        if ticks == 2:
            scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        await show_progress(tally, stats, live=True, refresh=0.5, sleep=fake_sleep, console=console)
    text = console.export_text()
    assert "100% 2/2" in text and "2 collected" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_snapshot_reads_the_tally_and_the_stats():
    clock = FakeClock(50.0)
    tally = Tally(3, clock=clock)
    stats = CallStats(requests=7, throttled=2, retries=1, bytes_downloaded=4096)
    move(tally, Phase.COLLECTED, Phase.PENDING)
    move(tally, Phase.EXPORTING, Phase.PENDING)
    clock.now = 62.5
    s = snapshot(tally, stats, _Rates(stats, clock))
    assert (s.elapsed_s, s.collected, s.collected_earlier, s.exporting, s.not_started) == (12.5, 1, 1, 1, 1)
    assert (s.requests, s.throttled, s.retries, s.bytes) == (7, 2, 1, 4096)
    assert s.percent == 33.3  # rounded down


def test_two_servers_left_is_never_shown_as_100_percent():
    """`100% 498/500, ETA 0:00` while two stuck exports went on being polled (issue 16, bug 4)."""
    clock = FakeClock(0.0)
    tally = Tally(500, export_timeout=1800, clock=clock)
    for n in range(500):
        move(tally, Phase.EXPORTING, Phase.PENDING, server=f"S{n}")
        move(tally, Phase.POLLING, Phase.EXPORTING, server=f"S{n}")
    clock.now = 50.0
    for n in range(498):
        move(tally, Phase.DOWNLOADING, Phase.POLLING, server=f"S{n}")
        move(tally, Phase.COLLECTED, Phase.DOWNLOADING, server=f"S{n}")
    stats = CallStats()
    s = snapshot(tally, stats, _Rates(stats, clock))
    assert s.percent < 100 and s.waiting_only
    line = progress_line(s)
    assert line.startswith("99% 498/500, elapsed 0:50, waiting on 2 exports (timeout in 29:10)"), line
    assert "ETA" not in line.split(";")[0]


def test_the_eta_is_back_once_anything_but_waiting_is_left():
    clock = FakeClock(0.0)
    tally = Tally(3, export_timeout=60, clock=clock)
    move(tally, Phase.EXPORTING, Phase.PENDING, server="a")
    move(tally, Phase.POLLING, Phase.EXPORTING, server="a")
    stats = CallStats()
    s = snapshot(tally, stats, _Rates(stats, clock))
    assert not s.waiting_only and "ETA --" in progress_line(s)


@pytest.mark.parametrize("width", [80, 60])
def test_with_a_deadline_the_display_still_fits(width):
    lines = rendered(big_snapshot(deadline_in_s=99 * 3600), width)
    assert len(lines) == 4
    assert max(len(line) for line in lines) <= width


def test_the_clock_line_says_when_the_deadline_comes_and_an_eta_past_it():
    s = big_snapshot(servers=10, collected=4, failed=0, collected_earlier=0, elapsed_s=20, eta_s=30, deadline_in_s=90)
    assert progress_line(s).startswith("40% 4/10, elapsed 0:20, deadline in 1:30, ETA 0:30;")
    late = replace(s, eta_s=300)
    assert progress_line(late).startswith("40% 4/10, elapsed 0:20, deadline in 1:30, ETA after the deadline;")
    assert late.fields()["deadline_in_s"] == 90
