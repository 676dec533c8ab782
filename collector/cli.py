"""The `collector` command: parse flags, load the inventory, run, and decide the exit code.

Data flows one way: flags and the inventory are read and checked here before the event loop
starts (a bad one costs no request), the sweep runs, the report is written from its results,
and `exit_code` turns the outcome into the one number the scheduler sees.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import signal
import sys
import tempfile
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import anyio

from collector import __version__
from collector.errors import ExitCode, UsageError
from collector.inventory import Inventory, load_inventory
from collector.logs import configure_logging
from collector.progress import Tally, show_progress
from collector.report import build_report, summary, write_report
from collector.sweep import ServerResult, Settings, Sweep
from collector.storage import LocalDestination
from collector.journal import Journal, JournalError, summarize
from collector.tuning import calm_garbage_collector, keep_heap_headroom

log = logging.getLogger("collector")

# Flags that may also be set in the inventory's `collector:` section (flags win).
SETTING_FLAGS = ("concurrency", "downloads", "rate", "max_rate", "poll_interval", "export_timeout", "read_timeout",
                 "grace", "max_archive_bytes")


# -- argument parsing -----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(*, allow_zero: bool):
    """An argparse type for a finite number above zero (or from zero, with `allow_zero`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if math.isinf(value) or not (value >= 0 if allow_zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'zero or more' if allow_zero else 'a positive number'}, got {text}")
        return value

    return parse


_positive_float = _number(allow_zero=False)
_non_negative_float = _number(allow_zero=True)


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _size(text: str) -> int:
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    try:
        value = int(float(cleaned[: len(cleaned) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 8G, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector",
        description="Collect diagnostic log bundles from Huawei Cloud CloudDC physical servers.",
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="collect the log bundles of every server in an inventory")
    run.add_argument("-i", "--inventory", required=True, type=Path, help="YAML fleet inventory")
    run.add_argument("-o", "--output", required=True, type=Path, help="folder for archives and report.json")
    run.add_argument("--fresh", action="store_true", help="ignore what earlier runs into this folder recorded")
    run.add_argument("--verify", action="store_true", help="rehash archives earlier runs collected before skipping them")
    _add_run_flags(run)

    validate = commands.add_parser("validate", help="check an inventory without sending any request")
    validate.add_argument("-i", "--inventory", required=True, type=Path)

    from collector.simulator import cli as simulator_cli

    simulate = commands.add_parser("simulate", help="serve a simulated CloudDC API on loopback")
    simulator_cli.add_arguments(simulate)

    demo = commands.add_parser("demo", help="sweep a built-in simulated fleet of 200 servers")
    demo.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="default: ./demo-output")
    demo.add_argument("--servers", type=_positive_int, default=200)
    _add_run_flags(demo)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    g = parser.add_argument_group("limits and timing (defaults may also come from the inventory's `collector:`)")
    g.add_argument("--concurrency", type=_positive_int, help=f"servers between export and download (default {d.concurrency})")
    g.add_argument("--downloads", type=_positive_int, help=f"archive transfers at a time (default {d.downloads})")
    g.add_argument("--rate", type=_positive_float,
                   help=f"starting requests per second per endpoint; adapts to the API's budget (default {d.rate:g})")
    g.add_argument("--max-rate", type=_positive_float, help="never more requests per second than this (default: no cap)")
    g.add_argument("--poll-interval", type=_positive_float, help=f"seconds before the first status poll (default {d.poll_interval:g})")
    g.add_argument("--export-timeout", type=_positive_float, help=f"seconds an export may take (default {d.export_timeout:g})")
    g.add_argument("--read-timeout", type=_positive_float, help=f"seconds without data before a transfer is retried (default {d.read_timeout:g})")
    g.add_argument("--grace", type=_non_negative_float, help=f"seconds running downloads get to finish after SIGINT/SIGTERM (default {d.grace:g})")
    g.add_argument("--max-archive-bytes", type=_size, help="largest archive accepted, e.g. 8G (default 8G)")
    out = parser.add_argument_group("output")
    out.add_argument("--no-progress", action="store_true", help="no live display, even on a terminal")
    out.add_argument("--log-format", choices=("text", "json"), help="format of log lines on stderr (default text)")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv for debug)")


def settings_from(args: argparse.Namespace, inventory: Inventory | None) -> Settings:
    """Defaults, then the inventory's `collector:` section, then flags."""
    chosen = dict(inventory.settings) if inventory is not None else {}
    for name in SETTING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            chosen[name] = value
    if getattr(args, "verify", False):
        chosen["verify"] = True
    known = {f.name for f in fields(Settings)}
    return replace(Settings(), **{k: v for k, v in chosen.items() if k in known})


# -- logging ----------------------------------------------------------------------------------


# -- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    results: list[ServerResult]
    signal: int | None = None
    auth_failed: bool = False
    unreachable: str | None = None  # why an endpoint was given up, if one was
    requests: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    report_path: Path | None = None
    summary: list[str] = field(default_factory=list)


def exit_code(outcome: Outcome) -> ExitCode:
    """The one place that turns a run into an exit code."""
    if outcome.signal == signal.SIGINT:
        return ExitCode.SIGINT
    if outcome.signal == signal.SIGTERM:
        return ExitCode.SIGTERM
    if outcome.auth_failed:
        return ExitCode.AUTH
    if outcome.unreachable:
        return ExitCode.UNREACHABLE
    if all(r.state == "collected" for r in outcome.results):
        return ExitCode.OK
    return ExitCode.PARTIAL


def prepare_output(out_dir: Path) -> Path:
    """Create the output folder (0700) and prove we can write there, before any request."""
    out_dir = out_dir.expanduser()
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


def _session(settings: Settings) -> aiohttp.ClientSession:
    # Enough connections for the transfers plus the API calls the rate allows in flight.
    api_connections = max(64, math.ceil(settings.rate * 2))
    connector = aiohttp.TCPConnector(
        limit=settings.downloads + min(api_connections, settings.concurrency),
        limit_per_host=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout),
        auto_decompress=False,  # the bytes on disk are the bytes served
        headers={"Accept-Encoding": "identity", "User-Agent": f"collector/{__version__}"},
    )


async def sweep_fleet(
    inventory: Inventory, settings: Settings, out_dir: Path, *, live: bool, fresh: bool = False
) -> Outcome:
    started = datetime.now(timezone.utc)
    clock_start = anyio.current_time()
    outcome = Outcome(results=[])
    journal = Journal.open(out_dir, fresh=fresh)
    prior = journal.entries()
    if prior:
        log.info("resuming from %s: %s", journal.path, summarize(prior))
    try:
        async with anyio.create_task_group() as journalling, _session(settings) as session:
            journalling.start_soon(journal.writer)
            sweep = Sweep(inventory, settings, LocalDestination(out_dir), session, prior=prior)
            tally = Tally(inventory.server_count)
            sweep.events.subscribe(tally)  # first: the display need not wait for the disk
            sweep.events.subscribe(journal.record)
            try:
                async with anyio.create_task_group() as helpers:
                    helpers.start_soon(functools.partial(show_progress, tally, sweep.stats, live=live))
                    helpers.start_soon(_watch_signals, sweep, settings.grace, outcome)
                    outcome.results = await sweep.run()
                    helpers.cancel_scope.cancel()
            finally:
                journal.close()  # the writer commits what is left, then returns
    finally:
        journal.shutdown()
    finished = datetime.now(timezone.utc)
    outcome.auth_failed = sweep.auth_error is not None
    outcome.unreachable = sweep.unreachable
    outcome.requests, outcome.throttled = sweep.stats.requests, sweep.stats.throttled
    outcome.duration_s = anyio.current_time() - clock_start
    stopped = signal.Signals(outcome.signal).name if outcome.signal else (sweep.stop_reason or sweep.unreachable)
    report = build_report(outcome.results, started_at=started, finished_at=finished,
                          inventory=str(inventory.path), stopped=stopped)
    outcome.report_path = write_report(out_dir, report)
    outcome.summary = summary(outcome.results, outcome.duration_s, requests=outcome.requests, throttled=outcome.throttled)
    return outcome


async def _watch_signals(sweep: Sweep, grace: float, outcome: Outcome) -> None:
    """First SIGINT/SIGTERM: start nothing new, give transfers `grace` s. Second: stop now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if outcome.signal is not None:
                log.warning("second signal: stopping now")
                sweep.cancel()
                return
            outcome.signal = signum
            name = signal.Signals(signum).name
            log.warning("%s: starting nothing new; running downloads get %g s to finish", name, grace)
            sweep.stop(name)
            async with anyio.create_task_group() as timer:
                timer.start_soon(_cancel_after, sweep, grace)
                async for _ in signals:
                    log.warning("second signal: stopping now")
                    sweep.cancel()
                    return


async def _cancel_after(sweep: Sweep, grace: float) -> None:
    await anyio.sleep(grace)
    log.warning("grace period over: stopping running downloads")
    sweep.cancel()


def _print_summary(outcome: Outcome, out_dir: Path, log_format: str = "text") -> None:
    lines = [*outcome.summary, f"archives in {out_dir}/<project_id>/, report in {outcome.report_path}"]
    if exit_code(outcome) is ExitCode.AUTH:
        lines.append("credentials were rejected (HTTP 401/403): refresh the token and run the same "
                     "command again to resume")
    _tell(lines, log_format)


def _tell(lines: list[str], log_format: str) -> None:
    """Lines for the person at the end of a run: plain text, or log records when logs are JSON
    (so a log shipper reading stderr sees nothing but JSON)."""
    for line in lines:
        if log_format == "json":
            logging.getLogger("collector.summary").info(line)
        else:
            print(line, file=sys.stderr)


def command_run(args: argparse.Namespace) -> ExitCode:
    inventory = load_inventory(args.inventory)
    return _run(args, inventory, prepare_output(args.output))


def _run(args: argparse.Namespace, inventory: Inventory, out_dir: Path) -> ExitCode:
    settings = settings_from(args, inventory)
    log_format = args.log_format or inventory.settings.get("log_format", "text")
    configure_logging(log_format, args.verbose)
    live = not args.no_progress and inventory.settings.get("progress", True) and sys.stderr.isatty()
    calm_garbage_collector()  # the inventory is loaded: see collector.tuning
    outcome = anyio.run(functools.partial(sweep_fleet, inventory, settings, out_dir, live=live, fresh=args.fresh))
    _print_summary(outcome, out_dir, log_format)
    return exit_code(outcome)


def command_validate(args: argparse.Namespace) -> ExitCode:
    inventory = load_inventory(args.inventory)
    for project in inventory.projects:
        print(f"{project.project_id}  {project.endpoint}  {len(project.servers)} servers  "
              f"({project.credentials.describe()})")
    print(f"{args.inventory}: OK, {inventory.server_count} servers in {len(inventory.projects)} project(s)")
    return ExitCode.OK


def command_demo(args: argparse.Namespace) -> ExitCode:
    from collector.demo import run_demo

    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "demo"):
        keep_heap_headroom()  # streaming archives churns the heap; see collector.tuning
    try:
        if args.command == "run":
            return int(command_run(args))
        if args.command == "validate":
            return int(command_validate(args))
        if args.command == "demo":
            return int(command_demo(args))
        from collector.simulator import cli as simulator_cli

        return int(simulator_cli.main(args))
    except (UsageError, JournalError) as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        # Before the sweep's own signal handling is in place (or after it is gone).
        return int(ExitCode.SIGINT)
