"""The runner every door calls: how a run starts, how it ends, and what a crash leaves behind."""

from __future__ import annotations

import json
import logging
import re
import signal
from pathlib import Path

import pytest

from collector import crash
from collector.errors import ExitCode, UsageError
from collector.events import Phase, PhaseChanged
from collector.runner import Outcome, closing_lines, error_exit_code, exit_code, summary_lines
from collector.simulator import SimConfig, Simulator
from collector.sweep import ServerResult
from _fleet import assert_exact, partials, sweep

CONFIG = SimConfig(servers=12, export_seconds=(0.05, 0.15), archive_bytes=(4096, 16384), seed=31)

CRASH_LINE = re.compile(
    r"collector: internal error: (?P<type>\w+): (?P<message>[^\n]*); details in (?P<path>\S+); please report it"
)


def result(state: str, **fields) -> ServerResult:
    return ServerResult("p1", fields.pop("server_id", "S1"), None, state=state, **fields)


# -- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (Outcome([result("collected")]), ExitCode.OK),
        (Outcome([result("collected"), result("failed")]), ExitCode.PARTIAL),
        (Outcome([result("collected")], unreachable="connection refused"), ExitCode.UNREACHABLE),
        (Outcome([result("pending")], unreachable="down", auth_failed=True), ExitCode.AUTH),
        (Outcome([result("pending")], auth_failed=True, signal=signal.SIGTERM), ExitCode.SIGTERM),
        (Outcome([result("pending")], unreachable="down", signal=signal.SIGINT), ExitCode.SIGINT),
        (Outcome([result("collected")], crash=RuntimeError("bug"), signal=signal.SIGINT, auth_failed=True),
         ExitCode.INTERNAL),
    ],
    ids=["all-collected", "some-failed", "unreachable", "auth-over-unreachable", "signal-over-auth",
         "signal-over-unreachable", "crash-over-everything"],
)
def test_exit_code_order(outcome, code):
    assert exit_code(outcome) is code


def test_errors_that_end_a_command_early_have_their_codes():
    assert error_exit_code(UsageError("bad")) is ExitCode.USAGE
    assert error_exit_code(KeyboardInterrupt()) is ExitCode.SIGINT
    assert error_exit_code(TypeError("a bug")) is ExitCode.INTERNAL


# -- what the person is told --------------------------------------------------------------------


def test_closing_lines_name_the_real_archive_folder_and_what_to_do():
    outcome = Outcome([result("pending")], output=Path("/srv/logs"), projects=("0f1e",),
                      report_path=Path("/srv/logs/report.json"), unreachable="connection refused")
    lines = closing_lines(outcome)
    assert "archives in /srv/logs/0f1e/, report in /srv/logs/report.json" in lines
    assert any("could not be reached (connection refused)" in line for line in lines)
    several = Outcome([result("collected")], output=Path("/srv/logs"), projects=("a", "b"))
    assert "archives in /srv/logs/ (a folder per project), no report written" in closing_lines(several)


def test_summary_counts_what_earlier_runs_had_collected():
    results = [result("collected", server_id=f"S{n}", bytes=10, collected_earlier=n < 3) for n in range(5)]
    lines = summary_lines(results, 1.0, requests=6, throttled=0)
    assert lines[0].startswith("5/5 servers collected")
    assert lines[1] == "3 of them collected by earlier runs into this folder"
    assert not any("earlier" in line for line in summary_lines(results[3:], 1.0, requests=6, throttled=0))


# -- the start of a run -------------------------------------------------------------------------


class Snapshot(logging.Handler):
    """Keeps each record with how many requests the simulator had received when it was logged."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(logging.DEBUG)
        self.sim = sim
        self.seen: list[tuple[logging.LogRecord, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record, self.sim.count()))


@pytest.mark.anyio
async def test_a_run_starts_with_one_line_before_any_request(tmp_path, fast_settings):
    async with Simulator(CONFIG) as sim:
        handler = Snapshot(sim)
        logger = logging.getLogger("collector")
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)  # (setLevel, not .level =: loggers cache what is enabled)
        try:
            await sweep(sim, tmp_path, fast_settings)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    [(start, requests_then)] = [(r, n) for r, n in handler.seen if getattr(r, "event", None) == "run_started"]
    assert requests_then == 0
    assert start.levelno == logging.INFO and start.name == "collector.summary"  # shown by default
    out = (tmp_path / "out").resolve()
    assert start.getMessage() == (
        f"collector {start.fields['version']}: 12 servers in 1 project at {sim.url}, into {out}, "
        f"starting at {fast_settings.rate:g} req/s"
    )
    cleartext = [r for r, _ in handler.seen if getattr(r, "event", None) == "cleartext_endpoint"]
    assert [r.levelno for r in cleartext] == [logging.WARNING]  # one endpoint, one warning
    assert "credentials travel in clear" in cleartext[0].getMessage()
    events = [getattr(r, "event", None) for r, _ in handler.seen]
    assert events.index("run_started") < events.index("cleartext_endpoint")


# -- a bug in the orchestrator ------------------------------------------------------------------


class BrokenListener:
    """A listener with a bug: after `after` servers are collected, every event raises."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.collected = 0

    def __call__(self, event: PhaseChanged) -> None:
        if self.collected >= self.after:
            raise RuntimeError("listener bug\nsecond line")
        if event.phase is Phase.COLLECTED:
            self.collected += 1


@pytest.mark.anyio
async def test_a_crash_still_writes_the_report_saves_the_traceback_and_ends_in_70(tmp_path, fast_settings):
    out = tmp_path / "out"
    spread = SimConfig(servers=40, export_seconds=(0.05, 2.0), archive_bytes=(4096, 16384), seed=32)
    async with Simulator(spread) as sim:
        outcome = await sweep(sim, tmp_path, fast_settings, listeners=[BrokenListener(after=3)])

        assert exit_code(outcome) is ExitCode.INTERNAL
        report = json.loads((out / "report.json").read_text())
        assert report["run"]["stopped"] == "internal error: RuntimeError"
        assert report["totals"]["servers"] == 40
        states = {s["server_id"]: s["state"] for s in report["servers"]}
        assert set(states.values()) <= {"collected", "pending"}
        collected = [sid for sid, state in states.items() if state == "collected"]
        assert len(collected) >= 3
        assert_exact(tmp_path, sim, collected)  # what the report calls collected is there, exact
        assert not partials(tmp_path)
        pending = [s for s in report["servers"] if s["state"] == "pending"]
        assert pending and all(s["error"] == "not collected: run stopped by an internal error" for s in pending)

        [saved] = (out / ".collector").glob("crash-*.txt")
        assert outcome.crash_file == saved
        assert re.fullmatch(r"crash-\d{8}T\d{6}Z\.txt", saved.name)
        assert saved.stat().st_mode & 0o777 == 0o600
        text = saved.read_text()
        assert "Traceback" in text and "RuntimeError: listener bug" in text
        assert "in __call__" in text and "test_runner.py" in text  # where the bug is

        line = crash.line(outcome.crash, outcome.crash_file)
        match = CRASH_LINE.fullmatch(line)
        assert match and match["type"] == "RuntimeError" and match["path"] == str(saved)
        assert match["message"] == "listener bug second line"  # one line, whatever the message

        # The journal kept up: the same command again finishes the job.
        again = await sweep(sim, tmp_path, fast_settings)
        assert exit_code(again) is ExitCode.OK
        assert_exact(tmp_path, sim, sim.server_ids)
