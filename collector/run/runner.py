"""One run, wired: the function every door calls (`collector run`, `collector demo`, the tests).

`run_sweep` takes a checked inventory and resolved settings and puts the rest together: the
output folder, the destination the archives go to (a local folder unless one is passed),
the journal earlier runs left (the state a re-run resumes from), the listeners of the
sweep's events (the progress display, the journal, any the caller adds), and the signal
handling. It returns an `Outcome`, from which `exit_code`, the one place exit codes are
decided, and `closing_lines` tell the scheduler and the person how it went.

A bug in the orchestrator itself does not escape as a traceback: the report is written with
the results there are (unfinished servers `pending`), the traceback is saved beside the
journal (`collector.observe.crash`), and the outcome carries it, to end in exit 70.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio

from collector import __version__
from collector.config.inventory import Inventory
from collector.config.select import Selection
from collector.config.settings import Settings
from collector.config.shards import Shard
from collector.destinations.base import Destination, archive_name
from collector.destinations.local import LocalDestination
from collector.destinations.location import S3Location
from collector.errors import ExitCode, StorageError, UsageError
from collector.log import ev
from collector.net import session as net_session
from collector.net.transport import auth_requests
from collector.observe import crash
from collector.observe.metrics import Metrics, push, write_textfile_every
from collector.observe.progress import Tally, show_progress
from collector.observe.report import (
    REPORT_NAME,
    build_report,
    emit_summary,
    summary_lines,
    summary_record,
    write_report,
)
from collector.run.prepare import Rejected, prepare
from collector.sweep.events import Listener, Phase, PhaseChanged
from collector.sweep.journal import Entry, Journal, JournalError, summarize
from collector.sweep.pipeline import Sweep
from collector.sweep.results import ServerResult

# The run's own records (its start, stops and end) show at the default level: see
# collector.cli.logs.configure_logging.
log = logging.getLogger("collector.run")


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
    - 0 if every server was collected, else 1.
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
    if all(r.state == Phase.COLLECTED.value for r in outcome.results):
        return ExitCode.OK
    return ExitCode.PARTIAL


def error_exit_code(exc: BaseException) -> ExitCode:
    """The exit code of a command that raised `exc` instead of returning an outcome."""
    if isinstance(exc, (UsageError, JournalError)):
        return ExitCode.USAGE  # nothing was sent (a journal that cannot be opened: before the run)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.SIGINT  # before the sweep's own signal handling is in place, or after
    return ExitCode.INTERNAL


def prepare_output(out_dir: Path) -> Path:
    """Create the output folder (0700) and prove we can write there, before any request."""
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UsageError(
            f"output folder {out_dir} is not writable: {exc.strerror or exc}",
            "choose another folder with -o, or fix its permissions",
        ) from None
    return out_dir.resolve()


async def run_sweep(
    inventory: Inventory,
    settings: Settings,
    output: Path | S3Location,
    *,
    fresh: bool = False,
    live: bool = False,
    destination: Destination | None = None,
    listeners: Sequence[Listener] = (),
    selection: Selection | None = None,
    shard: Shard | None = None,
) -> Outcome:
    """Collect every server of `inventory` (those `selection` picks, if given) into `output`,
    and write the report there.

    `output` is a folder, or a bucket and prefix (`collector.destinations.location`); the
    journal and lock of a bucket live in a local state folder (--state-dir). With `shard`, only
    that shard's servers are swept, from its share of the starting rate, with a journal and
    lock of its own and the report `report.shard-K-of-N.json` (`collector merge` joins
    them). `fresh` ignores
    what earlier runs recorded; `live` shows the rich display (else a progress line every
    10 s); `destination` overrides where archives go; `listeners` hear every event after the
    journal has. A user error (output not writable, folder in use, bucket refused) raises
    before anything is sent to the API.
    """
    if shard is not None:
        settings = replace(settings, rate=shard.rate(settings.rate))
    async with AsyncExitStack() as stack:
        if isinstance(output, S3Location):
            state = prepare_output(state_dir_for(output, settings.state_dir))
            if destination is None:
                destination = await _open_bucket(stack, output)
            shown: str | Path = output.url
        else:
            state = shown = prepare_output(output)
        metrics = (
            Metrics(shard=shard.label if shard else None) if settings.metrics_file or settings.pushgateway else None
        )
        # The credential sources' requests count too (see collector.net.transport), for this run only.
        observing = auth_requests.set(metrics.request if metrics is not None else None)
        stack.callback(auth_requests.reset, observing)
        session = await stack.enter_async_context(open_session(settings))
        # Before any task group: a user error here (no credentials, a selection of nothing)
        # must reach the caller as itself, not wrapped in an exception group.
        inventory, rejected = await prepare(inventory, settings, session, selection=selection, shard=shard)
        async with anyio.create_task_group() as exporters:
            if metrics is not None and settings.metrics_file:
                exporters.start_soon(write_textfile_every, settings.metrics_file, metrics)
            outcome = await _run(
                inventory,
                settings,
                state,
                shown,
                fresh=fresh,
                live=live,
                destination=destination or LocalDestination(state),
                listeners=listeners,
                metrics=metrics,
                session=session,
                rejected=rejected,
                shard=shard,
            )
            if metrics is not None:
                metrics.finish(int(exit_code(outcome)), outcome.duration_s)
            exporters.cancel_scope.cancel()  # the file's last write holds the exit code
        if metrics is not None and settings.pushgateway:
            await push(settings.pushgateway, metrics, job=settings.metrics_job)
        return outcome


def state_dir_for(location: S3Location, given: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """Where an object-storage output keeps its journal and lock: `given` (--state-dir), else a
    folder per destination under `$XDG_STATE_HOME/collector` (`~/.local/state/collector`)."""
    if given:
        return Path(given).expanduser()
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or (environ.get("HOME") and f"{environ['HOME']}/.local/state")
    if not base:
        raise UsageError(
            f"no folder for the journal of {location.url}: neither XDG_STATE_HOME nor HOME is set",
            "give --state-dir PATH (in a container: a writable volume)",
        )
    digest = hashlib.sha256(location.url.encode()).hexdigest()[:12]
    return Path(base) / "collector" / f"{location.bucket}-{digest}"


async def _open_bucket(stack: AsyncExitStack, location: S3Location) -> Destination:
    """The bucket as a destination, proven reachable with our credentials before any API call."""
    bucket = await stack.enter_async_context(location.open())
    try:
        await bucket.check_bucket()
    except StorageError as exc:
        raise UsageError(
            f"-o {location.url}: {exc}",
            "check the bucket, the endpoint and the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or profile) it needs",
        ) from None
    return bucket


async def _run(
    inventory: Inventory,
    settings: Settings,
    out_dir: Path,
    shown: str | Path,
    *,
    fresh: bool,
    live: bool,
    destination: Destination,
    listeners: Sequence[Listener],
    metrics: Metrics | None,
    session: aiohttp.ClientSession,
    rejected: list[Rejected],
    shard: Shard | None,
) -> Outcome:
    journal = Journal.open(out_dir, fresh=fresh, folder=shard.state_dir(out_dir) if shard else None)
    report_name = shard.report_name if shard else REPORT_NAME
    outcome = Outcome(results=[], output=shown)
    started = datetime.now(UTC)
    clock_start = anyio.current_time()
    sweep: Sweep | None = None
    ledger = _Ledger()
    results: list[ServerResult] | None = None
    try:
        prior = journal.entries()
        outcome.projects = tuple(dict.fromkeys(p.project_id for p in inventory.projects))
        _announce(inventory, settings, shown, prior)
        async with anyio.create_task_group() as journalling:
            journalling.start_soon(journal.writer)
            sweep = Sweep(
                inventory,
                settings,
                destination,
                session,
                prior=prior,
                fresh=fresh,
                observe=metrics.request if metrics is not None else None,
            )
            if metrics is not None:
                metrics.set_servers(inventory.server_count)
                metrics.observe_stats(sweep.stats)
                metrics.observe_limiters({client.endpoint: client.limiter for client in sweep.clients.values()})
                listeners = (*listeners, metrics.on_event)
            tally = Tally(inventory.server_count)
            # The display first: it need not wait for the disk.
            for listener in (tally, journal.record, ledger, *listeners):
                sweep.events.subscribe(listener)
            try:
                async with anyio.create_task_group() as helpers:
                    helpers.start_soon(functools.partial(show_progress, tally, sweep.stats, live=live))
                    helpers.start_soon(_watch_signals, sweep, outcome)
                    helpers.start_soon(_grace_after_stop, sweep, settings.grace)
                    results = await sweep.run()
                    helpers.cancel_scope.cancel()
            finally:
                journal.close()  # the writer commits what is left, then returns
    except Exception as exc:  # cancellation is a BaseException and passes
        outcome.crash = exc
    finally:
        journal.shutdown()
    outcome.results = results if results is not None else ledger.results(inventory)
    outcome.results += [_rejected_result(r) for r in rejected]
    finished = datetime.now(UTC)
    retries = 0
    if sweep is not None:
        outcome.auth_failed = sweep.auth_error is not None
        outcome.unreachable = sweep.unreachable
        outcome.too_many_failures = sweep.budget_spent
        outcome.requests, outcome.throttled = sweep.stats.requests, sweep.stats.throttled
        retries = sweep.stats.retries
    outcome.duration_s = anyio.current_time() - clock_start
    try:
        report = build_report(
            outcome.results,
            started_at=started,
            finished_at=finished,
            inventory=str(inventory.path),
            stopped=_stopped(outcome, sweep),
        )
        outcome.report_path = write_report(out_dir, report, report_name)
        if not isinstance(destination, LocalDestination) and hasattr(destination, "write_text"):
            await destination.write_text(report_name, json.dumps(report, indent=1))
    except Exception as exc:
        if outcome.crash is None:
            outcome.crash = exc
        else:
            log.error("the report could not be written either: %s: %s", type(exc).__name__, exc)
    if outcome.crash is not None:
        outcome.crash_file = crash.save(crash.folder_for(out_dir), outcome.crash)
    outcome.record = summary_record(
        outcome.results,
        duration_s=outcome.duration_s,
        requests=outcome.requests,
        throttled=outcome.throttled,
        retries=retries,
        exit_code=exit_code(outcome),
        stopped=_stopped(outcome, sweep),
        report_path=outcome.report_path,
    )
    outcome.summary = summary_lines(outcome.record)
    return outcome


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The run's one session (`collector.net.session`), its pool sized for the transfers plus
    the API calls the rate allows in flight."""
    api_connections = max(64, math.ceil(settings.rate * 2))
    return net_session.open_session(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        connections=settings.downloads + min(api_connections, settings.concurrency),
    )


def _rejected_result(rejected: Rejected) -> ServerResult:
    """A discovered server we cannot collect: failed, with why, and nothing written for it."""
    why = "discovery failed" if rejected.server_id == "(discovery)" else "listed with an unusable id"
    result = ServerResult(rejected.project_id, rejected.server_id, rejected.name)
    result.failed_as(rejected.reason, why, kind=rejected.kind)
    return result


class _Ledger:
    """Each server's latest event: the results to report when a crash took the sweep's own."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], PhaseChanged] = {}

    def __call__(self, event: PhaseChanged) -> None:
        self.last[event.project_id, event.server_id] = event

    def results(self, inventory: Inventory) -> list[ServerResult]:
        results = []
        for project, server in inventory.targets():
            result = ServerResult(project.project_id, server.id, server.name)
            event = self.last.get((project.project_id, server.id))
            if event is not None:
                result.polling(event.export_id)
                if event.phase is Phase.COLLECTED:
                    result.collected(archive_name(project.project_id, server.id), event.size, event.sha256)
                elif event.phase is Phase.FAILED:
                    result.failed_as(event.error, event.reason or event.error)
            result.stopped("internal error")
            results.append(result)
        return results


def _stopped(outcome: Outcome, sweep: Sweep | None) -> str | None:
    """Why the run stopped early, for the report; a crash and a signal first, as in `exit_code`."""
    if outcome.crash is not None:
        return f"internal error: {type(crash.cause(outcome.crash)).__name__}"
    if outcome.signal:
        return signal.Signals(outcome.signal).name
    if sweep is not None:
        return sweep.stop_reason or sweep.unreachable
    return None


# -- what the person sees ---------------------------------------------------------------------


def start_line(inventory: Inventory, settings: Settings, out_dir: Path | str) -> str:
    """``collector 0.1.0: 200 servers in 1 project at https://..., into /abs/out, starting at 20 req/s``"""
    endpoints = list(dict.fromkeys(p.endpoint for p in inventory.projects))
    servers, projects = inventory.server_count, len(inventory.projects)
    at = ", ".join(endpoints[:3]) + (f" and {len(endpoints) - 3} more" if len(endpoints) > 3 else "")
    rate = f"{settings.rate:g} req/s" + (" per endpoint" if len(endpoints) > 1 else "")
    if settings.max_rate is not None:
        rate += f" (at most {settings.max_rate:g})"
    return (
        f"collector {__version__}: {servers} server{'s' * (servers != 1)} in {projects} "
        f"project{'s' * (projects != 1)} at {at}, into {out_dir}, starting at {rate}"
    )


def _announce(inventory: Inventory, settings: Settings, out_dir: Path | str, prior: Mapping[Any, Entry]) -> None:
    """The start line, at once and before any request; a warning for each plain-http endpoint."""
    endpoints = list(dict.fromkeys(p.endpoint for p in inventory.projects))
    earlier = sum(1 for entry in prior.values() if entry.phase is Phase.COLLECTED)
    log.info(
        start_line(inventory, settings, out_dir),
        extra=ev(
            "run_started",
            servers=inventory.server_count,
            projects=len(inventory.projects),
            endpoints=endpoints,
            collected_earlier=earlier,
            output=str(out_dir),
            resumed=bool(prior),
            concurrency=settings.concurrency,
            downloads=settings.downloads,
            rate=settings.rate,
            version=__version__,
        ),
    )
    if prior:
        log.debug("resuming from the journal: %s", summarize(prior))
    for endpoint in endpoints:
        if urlsplit(endpoint).scheme.lower() == "http":
            log.warning(
                "%s is plain http: credentials travel in clear text",
                endpoint,
                extra=ev("cleartext_endpoint", endpoint=endpoint),
            )
    for endpoint in dict.fromkeys(p.endpoint for p in inventory.projects if not p.tls_verify):
        log.warning(
            "%s: certificates are not verified (tls: {verify: false}): anyone on the way can "
            "read the credentials; give tls: {ca_bundle: PATH} instead",
            endpoint,
            extra=ev("tls_unverified", endpoint=endpoint),
        )


def closing_lines(outcome: Outcome) -> list[str]:
    """What a person needs after the summary: where the archives are, what to do next."""
    out = outcome.output
    if len(outcome.projects) == 1:
        lines = [f"archives in {out}/{outcome.projects[0]}/"]
    else:
        lines = [f"archives in {out}/ (a folder per project)"]
    code = exit_code(outcome)
    if code is ExitCode.AUTH:
        lines.append(
            "credentials were rejected (HTTP 401/403): refresh the token and run the same command again to resume"
        )
    elif code is ExitCode.UNREACHABLE:
        lines.append(
            f"the API could not be reached ({outcome.unreachable}): run the same command "
            "again to resume once it answers"
        )
    return lines


def finish(outcome: Outcome, log_format: str) -> ExitCode:
    """Tell how the run ended, and return its exit code.

    Text: the summary, then `closing_lines`, then a crash's one line. JSON: the summary
    record, and a crash's record (so stderr stays all JSON).
    """
    emit_summary(outcome.record, log_format)
    if log_format != "json":
        for line in closing_lines(outcome):
            print(line, file=sys.stderr)
    if outcome.crash is not None:
        tell_crash(outcome.crash, outcome.crash_file, log_format)
    return exit_code(outcome)


def tell_crash(exc: BaseException, crash_file: Path | None, log_format: str) -> None:
    """The one line of an internal error; in JSON, an error record naming the crash file."""
    line = crash.line(exc, crash_file)
    if log_format == "json":
        log.error(
            line,
            extra=ev(
                "run_crashed",
                error=f"{type(crash.cause(exc)).__name__}: {crash.cause(exc)}",
                crash_file=str(crash_file) if crash_file else None,
            ),
        )
    else:
        print(line, file=sys.stderr)


# -- signals ----------------------------------------------------------------------------------


async def _watch_signals(sweep: Sweep, outcome: Outcome) -> None:
    """First SIGINT/SIGTERM: start nothing new (`_grace_after_stop` bounds the rest). Second:
    stop now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if outcome.signal is not None:
                log.warning("second signal: stopping now", extra=ev("run_cancelled", reason="second signal"))
                sweep.cancel()
                return
            outcome.signal = signum
            name = signal.Signals(signum).name
            log.warning(
                "%s: starting nothing new; running downloads get %g s to finish",
                name,
                sweep.settings.grace,
                extra=ev("run_stopping", reason=name, wait_s=sweep.settings.grace),
            )
            sweep.stop(name)


async def _grace_after_stop(sweep: Sweep, grace: float) -> None:
    """Whatever stopped the run (a signal, the error budget), running downloads get `grace` s."""
    await sweep.stopped.wait()
    await anyio.sleep(grace)
    log.warning("grace period over: stopping running downloads", extra=ev("run_cancelled", reason="grace over"))
    sweep.cancel()
