"""The runner every door calls: how a run starts, how it ends, and what a crash leaves behind."""

from __future__ import annotations

import json
import logging
import re
import signal
from pathlib import Path

import pytest
from _fleet import assert_exact, sweep

from collector.config.inventory import load_inventory
from collector.config.settings import Settings
from collector.errors import ExitCode, UsageError
from collector.observe import crash
from collector.run.ledger import Ledger
from collector.run.outcome import Outcome, error_exit_code, exit_code
from collector.run.present import closing_lines
from collector.simulator import SimConfig, Simulator
from collector.sweep.events import Phase, PhaseChanged
from collector.sweep.results import ServerResult

CONFIG = SimConfig(servers=12, export_seconds=(0.05, 0.15), archive_bytes=(4096, 16384), seed=31)

CRASH_LINE = re.compile(
    r"collector: internal error: (?P<type>\w+): (?P<message>[^\n]*); details in (?P<path>\S+); please report it"
)


def result(state: str, **fields) -> ServerResult:
    return ServerResult(fields.pop("project", "p1"), fields.pop("server_id", "S1"), None, state=state, **fields)


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
        (
            Outcome([result("collected")], crash=RuntimeError("bug"), signal=signal.SIGINT, auth_failed=True),
            ExitCode.INTERNAL,
        ),
    ],
    ids=[
        "all-collected",
        "some-failed",
        "unreachable",
        "auth-over-unreachable",
        "signal-over-auth",
        "signal-over-unreachable",
        "crash-over-everything",
    ],
)
def test_exit_code_order(outcome, code):
    assert exit_code(outcome) is code


def test_errors_that_end_a_command_early_have_their_codes():
    assert error_exit_code(UsageError("bad")) is ExitCode.USAGE
    assert error_exit_code(KeyboardInterrupt()) is ExitCode.SIGINT
    assert error_exit_code(TypeError("a bug")) is ExitCode.INTERNAL


# -- what the person is told --------------------------------------------------------------------


def test_closing_lines_name_the_real_archive_folder_and_what_to_do():
    outcome = Outcome(
        [result("pending")], output=Path("/srv/logs"), projects=("0f1e",), unreachable="connection refused"
    )
    lines = closing_lines(outcome)
    assert lines[0] == "no archive collected"  # no folder named that does not exist (issue 16)
    assert "could not be reached (connection refused)" in lines[1]
    one = Outcome([result("collected", project="0f1e")], output=Path("/srv/logs"), projects=("0f1e", "2a3b"))
    assert closing_lines(one) == ["archives in /srv/logs/0f1e/"]
    several = Outcome(
        [result("collected", project="a"), result("collected", project="b")],
        output=Path("/srv/logs"),
        projects=("a", "b"),
    )
    assert closing_lines(several) == ["archives in /srv/logs/ (a folder per project)"]


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
    assert start.levelno == logging.INFO and start.name == "collector.run"  # shown by default
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


@pytest.mark.anyio
async def test_a_crash_still_writes_the_report_saves_the_traceback_and_ends_in_70(tmp_path, fast_settings):
    """Settings the sweep cannot work with reach the runner: a bug in whoever built them (the
    command line and the inventory refuse such values), and the sweep's constructor fails."""
    out = tmp_path / "out"
    impossible = Settings(**{**fast_settings.__dict__, "downloads": -1})
    async with Simulator(CONFIG) as sim:
        outcome = await sweep(sim, tmp_path, impossible)

        assert exit_code(outcome) is ExitCode.INTERNAL
        assert sim.count() == 0
        report = json.loads((out / "report.json").read_text())
        assert report["run"]["stopped"] == "internal error: ValueError"
        assert report["totals"] == {"servers": 12, "collected": 0, "failed": 0, "pending": 12, "bytes": 0}
        assert {s["error"] for s in report["servers"]} == {"not collected: run stopped (internal error)"}

        [saved] = (out / ".collector").glob("crash-*.txt")
        assert outcome.crash_file == saved
        assert re.fullmatch(r"crash-\d{8}T\d{6}Z\.txt", saved.name)
        assert saved.stat().st_mode & 0o777 == 0o600
        text = saved.read_text()
        assert "Traceback" in text and "ValueError" in text and "pipeline.py" in text  # where it broke

        match = CRASH_LINE.fullmatch(crash.line(outcome.crash, outcome.crash_file))
        assert match and match["type"] == "ValueError" and match["path"] == str(saved)
        assert (outcome.record["stopped"], outcome.record["exit_code"]) == ("internal error: ValueError", 70)

        # Nothing was lost: the same command with sound settings does the whole job.
        again = await sweep(sim, tmp_path, fast_settings)
        assert exit_code(again) is ExitCode.OK
        assert_exact(tmp_path, sim, sim.server_ids)


def test_the_crash_line_is_one_line_whatever_the_message():
    line = crash.line(RuntimeError("first\nsecond\r\nthird"), Path("/o/.collector/crash-1.txt"))
    assert line == (
        "collector: internal error: RuntimeError: first second third; "
        "details in /o/.collector/crash-1.txt; please report it"
    )
    wrapped = ExceptionGroup("unhandled errors in a TaskGroup", [KeyError("k")])
    assert crash.line(wrapped, None).startswith("collector: internal error: KeyError: 'k'; the details could not")


def test_after_a_crash_each_server_reports_its_last_known_state(tmp_path):
    """The ledger is what the report holds when a crash took the sweep's own results."""
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "endpoint: https://api.example.com\nproject_id: p1\nauth: {token_env: T}\nservers: [S1, S2, S3, S4]\n"
    )
    inventory = load_inventory(path, {"T": "t"})
    ledger = Ledger()
    ledger(PhaseChanged("p1", "S1", Phase.COLLECTED, Phase.DOWNLOADING, export_id="e1", size=10, sha256="ab"))
    ledger(
        PhaseChanged("p1", "S2", Phase.FAILED, Phase.POLLING, export_id="e2", error="export failed", reason="export")
    )
    ledger(PhaseChanged("p1", "S3", Phase.POLLING, Phase.EXPORTING, export_id="e3"))
    s1, s2, s3, s4 = ledger.results(inventory)
    assert (s1.state, s1.file, s1.bytes, s1.sha256, s1.export_id) == ("collected", "p1/S1-dump.tar.gz", 10, "ab", "e1")
    assert (s2.state, s2.error, s2.reason) == ("failed", "export failed", "export")
    assert (s3.state, s3.export_id, s3.error) == ("pending", "e3", "not collected: run stopped (internal error)")
    assert (s4.state, s4.export_id) == ("pending", None)


@pytest.mark.anyio
async def test_the_summary_of_a_rerun_says_what_earlier_runs_had_collected(tmp_path, fast_settings):
    async with Simulator(CONFIG) as sim:
        await sweep(sim, tmp_path, fast_settings)
        again = await sweep(sim, tmp_path, fast_settings)
    assert again.summary[0] == "12/12 servers collected, 12 of them by earlier runs into this folder"
    assert again.record["collected_earlier"] == 12


@pytest.mark.anyio
async def test_an_unverified_tls_project_draws_a_warning_on_every_run(tmp_path, fast_settings, caplog):
    import logging
    from dataclasses import replace as _replace

    from collector.config.inventory import load_inventory
    from collector.run.runner import run_sweep
    from collector.simulator import SimConfig, Simulator

    async with Simulator(SimConfig(servers=2, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        inventory = _replace(
            inventory, projects=tuple(_replace(p, tls_verify=False, ssl=False) for p in inventory.projects)
        )
        with caplog.at_level(logging.WARNING, logger="collector.run"):
            await run_sweep(inventory, fast_settings, tmp_path / "out")
    assert any("certificates are not verified" in r.getMessage() for r in caplog.records)
