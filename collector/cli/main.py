"""The `collector` command: parse flags, load the inventory, call the runner, print.

Data flows one way: flags and the inventory are read and checked here before the event loop
starts (a bad one costs no request), `collector.run.runner.run_sweep` does the run, and
`collector.run.outcome.exit_code` turns its outcome into the one number the scheduler sees. The
settings' flags come from their declarations in `collector.config.settings`.

`collector run` never imports the simulator: `simulate`'s own flags are parsed only when that
command is chosen, and `demo` is imported only when it is.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio

from collector import __version__
from collector.auth.chain import found_locally
from collector.cli.check import (
    DEFAULT_TIMEOUT,
    Discovery,
    ProjectCheck,
    check_inventory,
    describe_filter,
    discover_inventory,
    patient_for,
)
from collector.cli.check import exit_code as check_exit_code
from collector.cli.grep import add_parser as add_grep_parser
from collector.cli.grep import command_grep
from collector.cli.logs import configure_logging
from collector.cli.tuning import calm_garbage_collector, keep_heap_headroom
from collector.config.flags import FleetFlags, inventory_from_flags
from collector.config.inventory import Inventory, load_inventory
from collector.config.select import parse_selection, unmatched_line
from collector.config.settings import add_flags, given, parse_count, parse_positive, resolve
from collector.config.shards import parse_shard
from collector.destinations.location import LocalLocation, parse_destination
from collector.errors import ExitCode, InventoryErrors, UsageError
from collector.observe import crash
from collector.observe.merge import merge_bucket, merge_folder
from collector.run.outcome import error_exit_code
from collector.run.present import finish
from collector.run.runner import open_session, run_sweep
from collector.sweep.journal import JournalError
from collector.text import MESSAGE_LIMIT, Writable, clean, say

__all__ = ["build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """argparse, but what it prints goes through the one escaping: its errors repeat what was
    typed (an unknown option, a bad value), and that may hold anything."""

    def _print_message(self, message: str, file: Writable | None = None) -> None:
        if message:
            say(*message.rstrip("\n").split("\n"), file=file if file is not None else sys.stderr)


def command_merge(args: argparse.Namespace) -> ExitCode:
    location = parse_destination(args.output, endpoint_url=args.s3_endpoint)
    if isinstance(location, LocalLocation):
        result, where = merge_folder(location.path), str(location.path)
    else:
        result, where = anyio.run(merge_bucket, location), location.url
    for line in result.problems():
        say(f"collector: {line}", file=sys.stderr)
    totals = result.report["totals"]
    say(
        f"{totals['servers']} servers from {len(result.found)} shard report(s): {totals['collected']} collected, "
        f"{totals['failed']} failed, {totals['pending']} pending; report in {result.path or where}",
        file=sys.stderr,
    )
    return result.exit_code


def _add_select(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="EXPR",
        help="only these servers: id:GLOB, name:GLOB, tag:KEY=GLOB, project:GLOB or a bare GLOB; "
        "',' for or, '&' and, '!' not; @FILE for a list (repeatable)",
    )


INVENTORY_HELP = "the YAML fleet inventory (see configs/example-inventory.yaml)"
DEFAULT_OUTPUT = "collector-{datetime}"

EXIT_CODES = """exit codes:
  0    every server collected
  1    the run finished; some servers failed (report.json says which and why)
  2    a mistake in the flags, the inventory or the output; nothing was sent
  3    the API rejected the credentials; run again once they are fixed, to resume
  4    the API could not be reached; run again once it answers, to resume
  5    more servers failed than --max-failures allows; the rest are pending
  6    the deadline (--deadline) came first; the rest are pending: run again to finish
  70   a bug in collector (the report is still written; a crash file says where)
  130  SIGINT, 143 SIGTERM: stopped; run again to resume"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="collector",
        description="Collect diagnostic log bundles from Huawei Cloud CloudDC physical servers.",
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="collect the log bundles of every server in an inventory",
        description="Collect the log bundles of the inventory's servers (those --select picks) into OUT, "
        "resuming what an earlier run into OUT left; report.json says what was collected, what failed and why.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-i", "--inventory", type=Path, help=INVENTORY_HELP + "; or the fleet's flags below")
    run.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="OUT",
        help="folder for archives and report.json, or s3://BUCKET/PREFIX (obs:// too); "
        f"{{date}} and {{datetime}} become today's UTC date and time (default: ./{DEFAULT_OUTPUT})",
    )
    fleet = run.add_argument_group("the fleet without an inventory (the incident one-liner)")
    fleet.add_argument("--region", metavar="REGION", help="the region's ID, like cn-north-4: its CloudDC endpoint")
    fleet.add_argument("--project", action="append", default=[], metavar="ID", help="a project's ID (repeatable)")
    fleet.add_argument("--discover", action="store_true", help="every server ListServers lists (--select narrows)")
    fleet.add_argument(
        "--server", action="extend", nargs="+", default=[], metavar="ID", help="these servers of the one --project"
    )
    fleet.add_argument("--endpoint", metavar="URL", help="the API's base URL, instead of the region's endpoint")
    _add_select(run)
    run.add_argument(
        "--first",
        action="append",
        default=[],
        metavar="EXPR",
        help="these servers first: their exports are asked for, and their archives downloaded, before any "
        "other's (the language of --select; repeatable); one that matches nothing is a warning",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        help="only shard K of N (0 <= K < N, as a Kubernetes Indexed Job's "
        "JOB_COMPLETION_INDEX counts): the servers whose sha256 of project_id/server_id "
        "mod N is K; starts at --rate/N; writes report.shard-K-of-N.json",
    )
    add_flags(run)

    validate = commands.add_parser("validate", help="check an inventory without sending any request")
    validate.add_argument("-i", "--inventory", required=True, type=Path, help=INVENTORY_HELP)
    _add_select(validate)
    validate.add_argument(
        "--discover",
        action="store_true",
        help="also list the servers of projects with discover: (sends ListServers, nothing else)",
    )

    check = commands.add_parser(
        "check", help="ask each project's API once: reachable, credentials accepted, servers visible"
    )
    check.add_argument("-i", "--inventory", required=True, type=Path, help=INVENTORY_HELP)
    check.add_argument(
        "--timeout",
        type=parse_positive,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds an endpoint may take to answer at all (default {DEFAULT_TIMEOUT:g})",
    )
    check.add_argument("-v", "--verbose", action="count", default=0, help="retries and more (-vv for debug)")

    # Its flags belong to the simulator, parsed by `_simulate` only when this command is chosen.
    commands.add_parser("simulate", help="serve a simulated CloudDC API on loopback (simulate --help)", add_help=False)

    merge = commands.add_parser("merge", help="join the shards' reports of a run into report.json")
    merge.add_argument("output", metavar="OUT", help="the folder or s3://BUCKET/PREFIX the shards wrote to")
    merge.add_argument("--s3-endpoint", metavar="URL", help="object storage endpoint for s3:// or obs://")

    add_grep_parser(commands)

    demo = commands.add_parser("demo", help="sweep a built-in simulated fleet of 200 servers")
    demo.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="default: ./demo-output")
    demo.add_argument(
        "--servers", type=parse_count, default=200, metavar="N", help="how many simulated servers (default 200)"
    )
    add_flags(demo, demo=True)
    return parser


def command_run(args: argparse.Namespace) -> ExitCode:
    shard = parse_shard(args.shard) if args.shard else None  # the flags first, then the files
    fleet = FleetFlags(args.region, args.endpoint, tuple(args.project), tuple(args.server), args.discover)
    if args.inventory is None:
        inventory = inventory_from_flags(fleet)
    elif fleet.given:
        raise UsageError(
            f"-i and {' '.join(fleet.given)}: the fleet comes from the inventory or from these flags, not both",
            "drop -i for the one-liner, or put the projects and servers in the inventory",
        )
    else:
        # A shard keeps only its own servers from the start, unless --select is to judge the whole fleet.
        inventory = load_inventory(args.inventory, keep=shard.owns if shard is not None and not args.select else None)
    settings = resolve(inventory.settings, given(args))
    args.log_format = settings.log_format  # the inventory's, too: a usage error after this is told in it
    configure_logging(settings.log_format, args.verbose or 0)
    live = settings.progress and sys.stderr.isatty()
    calm_garbage_collector()  # the inventory is loaded: see collector.cli.tuning
    location = parse_destination(args.output, endpoint_url=settings.s3_endpoint)
    # Every output is checked before the first request, as -o is: not a warning at the end.
    if settings.pushgateway:
        from collector.observe.metrics import pushgateway_url  # prometheus_client only when metrics are asked for

        pushgateway_url(settings.pushgateway)
    if settings.metrics_file:
        from collector.observe.metrics.textfile import check_textfile  # as above

        check_textfile(settings.metrics_file)
    output = location.path if isinstance(location, LocalLocation) else location
    selection = parse_selection(args.select)
    first = parse_selection(args.first) if args.first else None
    outcome = anyio.run(
        functools.partial(
            run_sweep,
            inventory,
            settings,
            output,
            fresh=bool(args.fresh),
            live=live,
            selection=selection,
            first=first,
            shard=shard,
            # Learn the API's budget across runs unless a rate was chosen; a shard sees a share.
            learn=shard is None and "rate" not in given(args) and "rate" not in inventory.settings,
        )
    )
    code = finish(outcome, settings.log_format)
    if args.output == DEFAULT_OUTPUT and code is not ExitCode.OK:
        # "the same command again" would write a new dated folder: name the one to resume.
        say(f"no -o was given: to resume, run the same command with -o {output}", file=sys.stderr)
    return code


def command_validate(args: argparse.Namespace) -> ExitCode:
    inventory = load_inventory(args.inventory)
    selection = parse_selection(args.select)
    found: dict[tuple[str, str], Discovery] = {}
    # The names the inventory gives its servers win over the API's (as they do in a run).
    own_names = {(p.project_id, s.id): s.name for p in inventory.projects for s in p.servers if s.name}
    if args.discover and any(project.discover is not None for project in inventory.projects):
        _quiet_machinery(0)
        inventory, discoveries = anyio.run(_discover, inventory)
        found = {(d.project.project_id, d.project.endpoint): d for d in discoveries}
        code = check_exit_code(d.verdict for d in discoveries)
        if code is not ExitCode.OK:
            for failed in discoveries:
                say(failed.line())
            failed_count = sum(d.error is not None for d in discoveries)
            say(f"{args.inventory}: discovery failed for {_count(failed_count, 'project')}")
            return code
    elif args.discover:
        say("--discover: no project has discover:, so nothing was sent")
    if not selection.everything:
        try:
            chosen = selection.apply(inventory.targets())  # nothing at all: exit 2, no warning
        except UsageError as exc:
            if args.discover or not any(project.discover is not None for project in inventory.projects):
                raise
            # The servers discover: would add are not known without asking the API.
            raise UsageError(
                exc.message,
                "the servers discover: finds are not listed without --discover: "
                "collector validate --discover --select ... asks ListServers and counts them too",
            ) from None
        unmatched = selection.unmatched(inventory.targets())
        if unmatched:
            say(f"collector: warning: {unmatched_line(unmatched)}", file=sys.stderr)
        say(selection.describe(len(chosen), inventory.server_count))
        for project, listed in chosen[:SHOWN]:
            say(f"  {project.project_id}/{listed.id}" + (f"  {listed.name}" if listed.name else ""))
        if len(chosen) > SHOWN:
            say(f"  ... and {len(chosen) - SHOWN:,} more")
    lookup = _lookup_said(inventory)
    for project in inventory.projects:
        discovery = found.get((project.project_id, project.endpoint))
        if discovery is None:
            later = f" + what {describe_filter(project.discover)} finds (--discover)" if project.discover else ""
            say(
                f"{project.project_id}  {project.endpoint}  {_count(len(project.servers), 'server')}{later}  "
                f"({project.describe_credentials() if project.credentials is not None else lookup})"
            )
            continue
        say(discovery.line())
        for server in discovery.chosen[:FIRST]:
            name = own_names.get((project.project_id, server.id), server.name)
            say(f"  {server.id}" + (f"  {name}" if name else ""))
        if len(discovery.chosen) > FIRST:
            say(f"  ... and {len(discovery.chosen) - FIRST:,} more")
        for server in discovery.unusable:
            say(f"  unusable: {server.id or '(no id)'}: {server.problem}")
    servers, projects = _count(inventory.server_count, "server"), _count(len(inventory.projects), "project")
    say(f"{args.inventory}: OK, {servers} in {projects}")
    return ExitCode.OK


async def _discover(inventory: Inventory) -> tuple[Inventory, list[Discovery]]:
    settings = patient_for(resolve(inventory.settings))
    async with open_session(settings) as session:
        return await discover_inventory(inventory, settings, session, environ=os.environ)


def command_check(args: argparse.Namespace) -> ExitCode:
    inventory = load_inventory(args.inventory)
    _quiet_machinery(args.verbose)
    checks = anyio.run(_check, inventory, args.timeout)
    for result in checks:
        say(result.line())
    return check_exit_code(result.verdict for result in checks)


async def _check(inventory: Inventory, patience: float) -> list[ProjectCheck]:
    """`collector check`; `patience` (--timeout) is how long an endpoint may stay silent."""
    settings = patient_for(resolve(inventory.settings), patience)
    async with open_session(settings) as session:
        return await check_inventory(inventory, settings, session, environ=os.environ)


def _quiet_machinery(verbose: int) -> None:
    """A check's own lines say how each endpoint answered; without -v, the run's records of
    the same (an endpoint probed, then given up with "its servers stay pending") stay out."""
    configure_logging("text", verbose)
    if not verbose:
        for name in ("collector.control.endpoint", "collector.run"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def command_demo(args: argparse.Namespace) -> ExitCode:
    from collector.cli.demo import run_demo

    return run_demo(args)


def _simulate(extra: list[str]) -> int:
    from collector.simulator import cli as simulator_cli

    parser = Parser(prog="collector simulate", description="Serve a simulated CloudDC API on loopback.")
    simulator_cli.add_arguments(parser)
    return int(simulator_cli.main(parser.parse_args(extra)))


def _lookup_said(inventory: Inventory) -> str:
    """For projects without `auth`: which credentials the SDK's lookup would find, from what
    needs no request (the metadata service, the last place it looks, does)."""
    if all(project.credentials is not None for project in inventory.projects):
        return ""
    credentials, _ = found_locally(os.environ)
    if credentials is not None:
        return f"no auth: the SDK's lookup finds {credentials.describe()}"
    return (
        "no auth, and none in the environment, the credentials file or pod identity: "
        "a run asks the ECS metadata service last, or fails saying what it tried"
    )


def _count(n: int, noun: str) -> str:
    """``1 server``, ``2 servers``, ``1,200 servers``."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _error_record(line: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "level": "error",
        "event": "usage_error",
        "message": clean(line, MESSAGE_LIMIT),
    }


SHOWN = 10  # servers `validate --select` lists

FIRST = 5  # servers `validate --discover` lists per project

_COMMANDS = {
    "merge": command_merge,
    "run": command_run,
    "validate": command_validate,
    "check": command_check,
    "demo": command_demo,
    "grep": command_grep,
}


def _unrecognized(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> None:
    """Exit 2 with the subcommand's usage and, for a misspelt option, the one meant (for an
    inventory given bare, the option it needs)."""
    sub = _subparsers(parser).get(command, parser)
    known = [option for action in sub._actions for option in action.option_strings if option.startswith("--")]
    hints = []
    for word in extra:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
            if close:
                hints.append(f"{word}: did you mean {close[0]}?")
        elif "--inventory" in known and word.endswith((".yaml", ".yml")):
            hints.append(f"{word}: an inventory is given as -i {word}")
    message = f"unrecognized arguments: {' '.join(extra)}"
    sub.error("; ".join([message, *hints]))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "simulate":
        return _simulate(extra)
    if args.command == "grep" and extra and not any(word.startswith("-") for word in extra):
        # `grep PATTERN --member GLOB OUT`: OUTs after an option are OUTs, as grep takes them.
        args.outputs, extra = [*args.outputs, *extra], []
    if extra:
        _unrecognized(parser, args.command, extra)
    if args.command in ("run", "demo", "grep"):
        keep_heap_headroom()  # streaming archives churns the heap; see collector.cli.tuning
    try:
        return int(_COMMANDS[args.command](args))
    except (UsageError, JournalError) as exc:
        lines = exc.lines() if isinstance(exc, InventoryErrors) else [str(exc)]
        if getattr(args, "log_format", None) == "json":  # stderr stays all JSON: one object per problem
            for line in lines:  # json.dumps escapes every control and non-ASCII character
                sys.stderr.write(json.dumps(_error_record(line)) + "\n")
        else:
            for line in lines:
                say(f"collector: error: {line}", file=sys.stderr)
        return int(error_exit_code(exc))
    except KeyboardInterrupt as exc:
        return int(error_exit_code(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback for a maintainer
        path = crash.save(crash.folder_for(getattr(args, "output", None)), exc)
        say(crash.line(exc, path), file=sys.stderr)
        return int(error_exit_code(exc))
