"""One run, wired: the function every door calls (`collector run`, `collector demo`, the tests).

`run_sweep` takes a checked inventory and resolved settings and puts the rest together: the
output folder (`collector.run.paths`), the destination the archives go to (a local folder
unless one is passed), the journal earlier runs left (the state a re-run resumes from), the
listeners of the sweep's events (the progress display, the journal, any the caller adds), and
the signal handling (`collector.run.signals`). It returns an `Outcome`
(`collector.run.outcome`, where exit codes are decided); `collector.run.present` tells the
person how it went.

A bug in the orchestrator itself does not escape as a traceback: the report is written with
the results there are (unfinished servers `pending`, from `collector.run.ledger`), the
traceback is saved beside the journal (`collector.observe.crash`), and the outcome carries
it, to end in exit 70.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import anyio

from collector.clouddc.gateway import Gateways
from collector.config.inventory import Inventory
from collector.config.select import Selection
from collector.config.settings import JOURNAL_DIR, Settings
from collector.config.shards import Shard
from collector.control.throttle import monotonic
from collector.destinations.base import Destination
from collector.destinations.local import LocalDestination
from collector.destinations.location import S3Location
from collector.errors import AuthError, StorageError, UsageError
from collector.net import session as net_session
from collector.net.transport import auth_requests
from collector.observe import crash
from collector.observe.progress import Tally, Watched, show_progress
from collector.observe.report import (
    REPORT_NAME,
    build_report,
    encoded_report,
    summary_lines,
    summary_record,
    write_report,
)
from collector.run.learned import (
    remember,
    server_export_times,
    starting_durations,
    starting_rates,
)
from collector.run.ledger import Ledger, rejected_result
from collector.run.outcome import Outcome, exit_code, stopped_reason
from collector.run.paths import prepare_output, state_dir_for, state_root
from collector.run.prepare import DiscoveryFailed, Rejected, prepare, warn_unmatched
from collector.run.present import announce
from collector.run.signals import grace_after_stop, watch_signals
from collector.sweep.events import Listener
from collector.sweep.journal import Journal
from collector.sweep.pipeline import Sweep
from collector.sweep.polling import ExportDurations, OwnTime
from collector.sweep.results import ServerResult
from collector.sweep.timebox import TimeBox

if TYPE_CHECKING:
    from collector.observe.metrics import Metrics

# The run's own records (its start, stops and end) show at the default level: see
# collector.cli.logs.configure_logging.
log = logging.getLogger("collector.run")


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
    first: Selection | None = None,
    shard: Shard | None = None,
    learn: bool = False,
) -> Outcome:
    """Collect every server of `inventory` (those `selection` picks, if given) into `output`,
    and write the report there.

    With `learn`, each endpoint starts at the rate an earlier run learned and this run's is
    kept for the next (`collector.run.learned`); the command line asks for it unless a rate
    was given.

    `first` (--first) picks the servers whose exports are asked for, and archives downloaded,
    before any other's.

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
    timebox = time_box(settings)  # before anything: a deadline already past is a usage error
    # A folder this run makes is removed again, if empty, when the run ends in a usage error.
    new_folder = not isinstance(output, S3Location) and not Path(output).expanduser().exists()  # noqa: ASYNC240 -- before any task runs, as prepare_output below
    async with AsyncExitStack() as stack:
        if isinstance(output, S3Location):
            state = prepare_output(state_dir_for(output, settings.state_dir))
            if destination is None:
                destination = await _open_bucket(stack, output, settings)
            shown: str | Path = output.url
        else:
            state = shown = prepare_output(output)
        if destination is None:
            destination = await stack.enter_async_context(LocalDestination(state))
        # The folder's lock before any request: a folder in use by another run is a user error
        # (exit 2) that must not cost ListServers calls, nor be wrapped by a task group.
        journal_folder = shard.state_dir(state) if shard else state / JOURNAL_DIR
        made_here = not journal_folder.exists()
        journal = Journal.open(state, fresh=fresh, folder=journal_folder)
        stack.callback(journal.shutdown)
        metrics: Metrics | None = None
        if settings.metrics_file or settings.pushgateway:  # only these runs load prometheus_client
            from collector.observe.metrics import Metrics

            metrics = Metrics(shard=shard.label if shard else None)
        # The credential sources' requests count too (see collector.net.transport), for this run only.
        observing = auth_requests.set(metrics.request if metrics is not None else None)
        stack.callback(auth_requests.reset, observing)
        session = await stack.enter_async_context(open_session(settings))
        # Before any task group: a user error here (no credentials, a selection of nothing)
        # must reach the caller as itself, not wrapped in an exception group.
        learned_in = state_root(settings.state_dir) if learn else None
        rates = starting_rates(learned_in)
        endpoints = {p.endpoint for p in inventory.projects}
        durations = ExportDurations(prior=starting_durations(learned_in, endpoints))
        known = server_export_times(learned_in, endpoints)
        observe = metrics.request if metrics is not None else None
        gateways = Gateways(session, settings, observe=observe, rates=rates)
        try:
            inventory, rejected, discovery_failed = await prepare(
                inventory, settings, session, selection=selection, shard=shard, gateways=gateways
            )
        except UsageError:
            if made_here:  # a run that ends in exit 2 leaves the output as it found it
                journal.shutdown()
                shutil.rmtree(journal_folder, ignore_errors=True)
                if new_folder:  # the folder too, if this run made it and left it empty
                    with contextlib.suppress(OSError):
                        state.rmdir()
            raise
        if first is not None:
            warn_unmatched(first, inventory, flag="--first")
        async with anyio.create_task_group() as exporters:
            if metrics is not None and settings.metrics_file:
                from collector.observe.metrics import write_textfile_every  # as Metrics above

                exporters.start_soon(write_textfile_every, settings.metrics_file, metrics)
            outcome = await _run(
                inventory,
                settings,
                state,
                shown,
                journal=journal,
                fresh=fresh,
                live=live,
                destination=destination,
                listeners=listeners,
                metrics=metrics,
                session=session,
                gateways=gateways,
                rejected=rejected,
                discovery_failed=discovery_failed,
                shard=shard,
                learned=rates,
                timebox=timebox,
                first=first,
                durations=durations,
                known=known,
            )
            if metrics is not None:
                metrics.finish(int(exit_code(outcome)), outcome.duration_s)
            exporters.cancel_scope.cancel()  # the file's last write holds the exit code
        if learn and outcome.requests:
            learned = {gateway.endpoint: gateway.learned for gateway in gateways}
            servers = _export_times(outcome.results, inventory)
            remember(learned_in, learned, durations=durations.summary(), servers=servers)
        if metrics is not None and settings.pushgateway:
            from collector.observe.metrics import push  # as Metrics above

            await push(settings.pushgateway, metrics, job=settings.metrics_job)
        return outcome


def _export_times(results: Iterable[ServerResult], inventory: Inventory) -> dict[str, dict[tuple[str, str], OwnTime]]:
    """What each server's export took in this run, by the endpoint of its project."""
    endpoint = {p.project_id: p.endpoint for p in reversed(inventory.projects)}  # the first entry wins
    seen: dict[str, dict[tuple[str, str], OwnTime]] = {}
    for result in results:
        if result.export_s is not None and result.project_id in endpoint:
            own = OwnTime(result.export_s, result.export_exact)
            seen.setdefault(endpoint[result.project_id], {})[(result.project_id, result.server_id)] = own
    return seen


async def _open_bucket(stack: AsyncExitStack, location: S3Location, settings: Settings) -> Destination:
    """The bucket as a destination, proven reachable with our credentials before any API call.
    Its client waits as long as the run's other HTTP clients (--connect-timeout, --read-timeout)."""
    bucket = await stack.enter_async_context(
        location.open(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            buffer_size=settings.s3_buffer,
        )
    )
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
    journal: Journal,
    fresh: bool,
    live: bool,
    destination: Destination,
    listeners: Sequence[Listener],
    metrics: Metrics | None,
    session: aiohttp.ClientSession,
    gateways: Gateways,
    rejected: list[Rejected],
    discovery_failed: list[DiscoveryFailed],
    learned: Mapping[str, float],
    shard: Shard | None,
    timebox: TimeBox | None,
    first: Selection | None,
    durations: ExportDurations | None = None,
    known: Mapping[tuple[str, str], OwnTime] | None = None,
) -> Outcome:
    report_name = shard.report_name if shard else REPORT_NAME
    outcome = Outcome(results=[], output=shown)
    started = datetime.now(UTC)
    clock_start = anyio.current_time()
    sweep: Sweep | None = None
    ledger = Ledger()
    results: list[ServerResult] | None = None
    try:
        prior = journal.entries()
        outcome.projects = tuple(dict.fromkeys(p.project_id for p in inventory.projects))
        announce(inventory, settings, shown, prior, shard, learned)
        async with anyio.create_task_group() as journalling:
            journalling.start_soon(journal.writer)
            sweep = Sweep(
                inventory,
                settings,
                destination,
                session,
                prior=prior,
                fresh=fresh,
                gateways=gateways,
                timebox=timebox,
                first=None if first is None else (lambda t: first.matches(t.project.project_id, t.server)),
                durations=durations,
                known=known,
            )
            # Discovery's credentials were refused, even fresh ones: the sweep would only be
            # refused again, server after server. One verdict for the run (exit 3).
            for failure in discovery_failed:
                if isinstance(failure.exc, AuthError):
                    sweep.credentials_rejected(failure.exc, failure.project_id, failure.endpoint)
                    break
            if metrics is not None:
                metrics.set_servers(inventory.server_count)
                metrics.observe_stats(sweep.stats)
                metrics.observe_limiters({client.endpoint: client.limiter for client in sweep.clients.values()})
                listeners = (*listeners, metrics.on_event)
            tally = Tally(inventory.server_count, export_timeout=settings.export_timeout)
            # The display first: it need not wait for the disk.
            subscribers: list[Listener] = [tally, journal.record, ledger, *listeners]
            for listener in subscribers:
                sweep.events.subscribe(listener)
            try:
                async with anyio.create_task_group() as helpers:
                    watched = Watched(sweep.waits, tuple(sweep.health.values()), timebox)
                    helpers.start_soon(functools.partial(show_progress, tally, sweep.stats, live=live, watched=watched))
                    helpers.start_soon(watch_signals, sweep, outcome)
                    helpers.start_soon(grace_after_stop, sweep, settings.grace)
                    results = await sweep.run()
                    helpers.cancel_scope.cancel()
            finally:
                journal.close()  # the writer commits what is left, then returns
    except Exception as exc:  # noqa: BLE001 - a crash of the orchestrator is reported; cancellation passes
        outcome.crash = exc
    outcome.results = results if results is not None else ledger.results(inventory)
    outcome.results += [rejected_result(r) for r in rejected]
    outcome.discovery_failed = [failure.as_dict() for failure in discovery_failed]
    finished = datetime.now(UTC)
    retries = 0
    if sweep is not None:
        outcome.auth_failed = sweep.auth_error is not None
        outcome.unreachable = sweep.unreachable
        outcome.too_many_failures = sweep.budget_spent
        outcome.cut_off = sweep.cut_off
        outcome.requests, outcome.throttled = sweep.stats.requests, sweep.stats.throttled
        retries = sweep.stats.retries
    outcome.duration_s = anyio.current_time() - clock_start
    try:
        report = build_report(
            outcome.results,
            started_at=started,
            finished_at=finished,
            inventory=None if inventory.path is None else str(inventory.path),
            stopped=stopped_reason(outcome, sweep),
            discovery_failed=outcome.discovery_failed,
        )
        if isinstance(destination, LocalDestination):  # written as it is encoded, in its folder
            outcome.report_path = write_report(out_dir, report, report_name)
        else:  # encoded once, kept beside the journal and stored; joined from its pieces, as
            # `json.dumps` lists every token first (~6 x the text)
            encoded = b"".join(encoded_report(report))
            outcome.report_path = write_report(out_dir, encoded, report_name)
            await destination.write_document(report_name, encoded)
    except Exception as exc:  # noqa: BLE001 - the report's failure is the crash if there was none
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
        stopped=stopped_reason(outcome, sweep),
        report_path=outcome.report_path,
        discovery_failed=outcome.discovery_failed,
    )
    outcome.summary = summary_lines(outcome.record)
    return outcome


def time_box(settings: Settings) -> TimeBox | None:
    """--deadline on the sweep's clock, measured from now; a time already past is a user error."""
    if settings.deadline is None:
        return None
    now = datetime.now(UTC)
    left = settings.deadline.seconds_left(now)
    if left <= 0:
        raise UsageError(
            f"--deadline {settings.deadline}: that time is past (it is {now:%Y-%m-%dT%H:%M:%SZ})",
            "give a later time with its zone, or a duration like 15m",
        )
    return TimeBox(monotonic() + left, str(settings.deadline))


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The run's one session (`collector.net.session`), its pool sized for the transfers plus
    the API calls the rate allows in flight."""
    api_connections = max(64, math.ceil(settings.rate * 2))
    return net_session.open_session(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        connections=settings.downloads + min(api_connections, settings.concurrency),
    )
