"""What a run did, and the one place that turns it into an exit code.

`Outcome` is what `run_sweep` returns; `exit_code` decides the process's exit code from it,
`error_exit_code` from an exception that ended a command instead, and `stopped_reason` says
for the report why the run ended early, in the same order.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.errors import ExitCode, UsageError
from collector.observe import crash
from collector.sweep.events import Phase
from collector.sweep.journal import JournalError
from collector.sweep.pipeline import Sweep
from collector.sweep.results import ServerResult


@dataclass
class Outcome:
    """What a run did, for the exit code, the summary and the tests."""

    results: list[ServerResult]
    output: Path | str | None = None  # the output folder, absolute, or the bucket's URL
    projects: tuple[str, ...] = ()  # project ids, each a folder of archives
    signal: int | None = None
    auth_failed: bool = False
    unreachable: str | None = None  # why the API could not be reached, if that stopped the run
    too_many_failures: bool = False  # the error budget (--max-failures) ran out
    cut_off: bool = False  # --deadline left servers pending
    discovery_failed: list[dict[str, str]] = field(default_factory=list)  # projects whose ListServers failed
    crash: BaseException | None = None  # a bug in the orchestrator ended the run
    crash_file: Path | None = None  # where its traceback is
    requests: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    report_path: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)  # report.summary_record
    summary: list[str] = field(default_factory=list)  # its lines


def exit_code(outcome: Outcome) -> ExitCode:
    """The one place that turns a run into an exit code.

    The first that applies wins:
    - 70, a crash: whatever else happened, the run did not end the way it was built to, the
      report may lack what the crash took with it, and there is a bug to report;
    - 130/143, a signal: the operator asked it to stop, which explains whatever followed;
    - 3, credentials rejected: the operator's to fix before anything else can work (and a
      401 proves the endpoint answers);
    - 4, the API could not be reached;
    - 5, more servers failed than --max-failures allows (the rest are pending);
    - 6, the deadline (--deadline) came first and left servers pending (they did not fail:
      the same command again finishes the sweep);
    - 0 if every server was collected (and every discovery answered), else 1.
    """
    if outcome.crash is not None:
        return ExitCode.INTERNAL
    if outcome.signal == signal.SIGINT:
        return ExitCode.SIGINT
    if outcome.signal == signal.SIGTERM:
        return ExitCode.SIGTERM
    if outcome.auth_failed:
        return ExitCode.AUTH
    if outcome.unreachable is not None:
        return ExitCode.UNREACHABLE
    if outcome.too_many_failures:
        return ExitCode.TOO_MANY_FAILURES
    if outcome.cut_off:
        return ExitCode.DEADLINE
    if not outcome.discovery_failed and all(r.state == Phase.COLLECTED.value for r in outcome.results):
        return ExitCode.OK  # a project whose discovery failed may have servers nobody saw
    return ExitCode.PARTIAL


def error_exit_code(exc: BaseException) -> ExitCode:
    """The exit code of a command that raised `exc` instead of returning an outcome."""
    if isinstance(exc, (UsageError, JournalError)):
        return ExitCode.USAGE  # nothing was sent (a journal that cannot be opened: before the run)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.SIGINT  # before the sweep's own signal handling is in place, or after
    return ExitCode.INTERNAL


def stopped_reason(outcome: Outcome, sweep: Sweep | None) -> str | None:
    """Why the run stopped early, for the report; a crash and a signal first, as in `exit_code`."""
    if outcome.crash is not None:
        return f"internal error: {type(crash.cause(outcome.crash)).__name__}"
    if outcome.signal:
        return signal.Signals(outcome.signal).name
    if sweep is not None:
        return sweep.stop_reason or sweep.unreachable
    return None
