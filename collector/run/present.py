"""What the person sees of a run: the start line (and the warnings about the endpoints), and
at the end the summary, where the archives are, what to do next, and a crash's one line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector import __version__
from collector.config.inventory import Inventory
from collector.config.settings import Settings
from collector.config.shards import Shard
from collector.errors import ExitCode
from collector.log import ev
from collector.observe import crash
from collector.observe.report import emit_summary
from collector.run.outcome import Outcome, exit_code
from collector.sweep.events import Phase
from collector.sweep.journal import Entry, summarize
from collector.text import say

# The run's own records (its start, stops and end) show at the default level: see
# collector.cli.logs.configure_logging.
log = logging.getLogger("collector.run")


def start_line(inventory: Inventory, settings: Settings, out_dir: Path | str, shard: Shard | None = None) -> str:
    """``collector 0.1.0: 200 servers in 1 project at https://..., into /abs/out, starting at 20 req/s``"""
    endpoints = list(dict.fromkeys(p.endpoint for p in inventory.projects))
    servers, projects = inventory.server_count, len(inventory.projects)
    at = ", ".join(endpoints[:3]) + (f" and {len(endpoints) - 3} more" if len(endpoints) > 3 else "")
    rate = f"{settings.rate:g} req/s" + (" per endpoint" if len(endpoints) > 1 else "")
    if settings.max_rate is not None:
        rate += f" (at most {settings.max_rate:g})"
    line = (
        f"collector {__version__}: {servers} server{'s' * (servers != 1)} in {projects} "
        f"project{'s' * (projects != 1)} at {at}, into {out_dir}, starting at {rate}"
    )
    if shard is not None:  # numbered from 0, as JOB_COMPLETION_INDEX is: say which half this is
        line += f"; shard {shard.index}/{shard.count} (of 0/{shard.count} to {shard.count - 1}/{shard.count})"
    return line


def announce(
    inventory: Inventory,
    settings: Settings,
    out_dir: Path | str,
    prior: Mapping[Any, Entry],
    shard: Shard | None = None,
    learned: Mapping[str, float] | None = None,
) -> None:
    """The start line, at once and before any request; a warning for each plain-http endpoint."""
    endpoints = list(dict.fromkeys(p.endpoint for p in inventory.projects))
    earlier = sum(1 for entry in prior.values() if entry.phase is Phase.COLLECTED)
    log.info(
        start_line(inventory, settings, out_dir, shard),
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
    for endpoint, rate in (learned or {}).items():
        if endpoint in endpoints:
            log.info(
                "%s: starting at %.3g req/s, the budget an earlier run learned (--rate to choose)",
                endpoint,
                rate,
                extra=ev("rate_learned", endpoint=endpoint, rate=rate),
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
    holding = {r.project_id for r in outcome.results if r.state == "collected"}
    if not holding:
        lines = ["no archive collected"]  # and no folder of them to point at
    elif len(holding) == 1:
        lines = [f"archives in {out}/{next(iter(holding))}/"]
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
            say(line, file=sys.stderr)
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
        say(line, file=sys.stderr)
