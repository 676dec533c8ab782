"""`collector grep`: its flags, and how its findings are printed.

The search is `collector.grep`'s; this module turns flags into a `Query`, finds the archives
of each OUT, and prints what the workers send as it comes: ``PROJECT/SERVER:MEMBER:LINE:TEXT``
(through `say`, so nothing an archive holds reaches the terminal unescaped, and a long line
is cut with a marker), or one JSON object per line with ``--json``.

Exit codes are grep's: 0 a line was selected, 1 none, 2 nothing could be searched (a flag is
wrong, or no archive could be read). A damaged archive is a warning naming it; the search
goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from collector.config.select import GLOB_HINT, glob_problem, parse_selection
from collector.destinations.location import LocalLocation, parse_destination
from collector.errors import CollectorError, ExitCode, UsageError
from collector.text import clean_text, quoted, say

if TYPE_CHECKING:  # the search itself is imported where it runs: `collector run` never loads it
    from collector.grep.layout import Found
    from collector.grep.search import Query

MATCHED, NOTHING, TROUBLE = ExitCode(0), ExitCode(1), ExitCode(2)  # grep's, not a run's
CUT_SHOWN = 300  # characters shown of a line longer than a worker keeps

USAGE_HINT = "collector grep --help"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The `grep` subcommand, on the `collector` parser's subcommands."""
    grep: argparse.ArgumentParser = commands.add_parser(
        "grep",
        help="search every collected archive of OUT (nested archives too) without extracting them",
        description="Search the members of every collected archive of each OUT (a folder a run wrote, or "
        "s3://BUCKET/PREFIX), nested .gz, .tar, .tar.gz and .zip members included, without writing anything. "
        "Prints PROJECT/SERVER:MEMBER:LINE:TEXT; a nested member is shown as outer.tar.gz!inner/sel.log.",
        epilog="exit codes: 0 a line was selected, 1 none, 2 nothing could be searched "
        "(a damaged archive is a warning, and the search goes on)",
    )
    grep.add_argument("pattern", metavar="PATTERN", help="a Python regular expression (a fixed string with -F)")
    grep.add_argument("outputs", nargs="*", metavar="OUT", help="folders or s3://BUCKET/PREFIX (default: .)")
    grep.add_argument("-F", "--fixed-strings", action="store_true", help="PATTERN is a string, not a regex")
    grep.add_argument("-i", "--ignore-case", action="store_true", help="ignore ASCII case")
    grep.add_argument("-w", "--word-regexp", action="store_true", help="match whole words only")
    grep.add_argument("-v", "--invert-match", action="store_true", help="select the lines that do not match")
    grep.add_argument("-l", "--files-with-matches", action="store_true", help="list PROJECT/SERVER only")
    grep.add_argument("-c", "--count", action="store_true", help="count selected lines per server")
    grep.add_argument("-m", "--max-count", type=_count(0), metavar="N", help="stop an archive after N selected lines")
    grep.add_argument("--member", metavar="GLOB", help="only members whose path (or nested path) matches GLOB")
    grep.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="EXPR",
        help="only these servers, as run --select: id:GLOB, name:GLOB, project:GLOB, a bare GLOB, @FILE; "
        "',' or, '&' and, '!' not (names come from report.json)",
    )
    grep.add_argument("--json", action="store_true", help="one JSON object per line")
    grep.add_argument(
        "-j", "--jobs", type=_count(1), metavar="N", help="worker processes (default: the CPUs this process may use)"
    )
    grep.add_argument("--s3-endpoint", metavar="URL", help="object storage endpoint for s3:// or obs://")
    grep.error = _one_line_error(grep)  # type: ignore[method-assign]  # one line, not usage + error
    return grep


def _one_line_error(parser: argparse.ArgumentParser) -> Any:
    def error(message: str) -> NoReturn:
        say(f"{parser.prog}: error: {message} (see {USAGE_HINT})", file=sys.stderr)
        raise SystemExit(int(TROUBLE))

    return error


def _count(least: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {quoted(text)}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a number of at least {least}, got {value}")
        return value

    return parse


def query_of(args: argparse.Namespace) -> Query:
    from collector.grep.search import Query  # see TYPE_CHECKING above

    if args.member is not None and (problem := glob_problem(args.member)):
        raise UsageError(f"--member {quoted(args.member)}: {problem}", GLOB_HINT)
    mode = "list" if args.files_with_matches else "count" if args.count else "lines"
    query = Query(
        pattern=os.fsencode(args.pattern),
        fixed=args.fixed_strings,
        ignore_case=args.ignore_case,
        word=args.word_regexp,
        invert=args.invert_match,
        max_count=args.max_count,
        mode=mode,
        member=args.member,
    )
    problem = query.check()
    if problem is not None:
        raise UsageError(
            f"PATTERN {quoted(args.pattern, 60)} is not a valid regular expression: {clean_text(problem, 120)}",
            "give -F to search for the string as it is",
        )
    return query


def find_archives(outputs: list[str], endpoint: str | None) -> tuple[list[Found], int]:
    """The archives of every OUT, and how many OUTs could not be listed (each one said)."""
    from collector.grep.layout import bucket_archives, local_archives  # see TYPE_CHECKING above

    found: list[Found] = []
    failed = 0
    for output in outputs:
        location = parse_destination(output, endpoint_url=endpoint if "://" in output else None)
        try:
            if isinstance(location, LocalLocation):
                listed = local_archives(location.path)
            else:
                listed = anyio.run(bucket_archives, location)
        except OSError as exc:
            say(f"collector grep: {output}: cannot be read: {exc.strerror or exc}", file=sys.stderr)
            failed += 1
            continue
        except CollectorError as exc:
            say(f"collector grep: {output}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not listed:
            say(f"collector grep: warning: {output}: no collected archives in it", file=sys.stderr)
        found += listed
    return found, failed


def command_grep(args: argparse.Namespace) -> ExitCode:
    from collector.grep.workers import search_all  # see TYPE_CHECKING above

    query = query_of(args)
    selection = parse_selection(args.select)
    if query.max_count == 0:
        return NOTHING  # as grep -m 0: nothing is read
    found, _failed = find_archives(args.outputs or ["."], args.s3_endpoint)
    if not found:
        say("collector grep: error: no collected archive to search", file=sys.stderr)
        return TROUBLE
    if not selection.everything:
        total = len(found)
        found = [f for f in found if selection.matches(f.project, f.server)]
        selection.require_match(len(found), total)
    workers = args.jobs or len(os.sched_getaffinity(0))
    printer = _Printer(found, query, as_json=args.json)
    try:
        with contextlib.closing(search_all(found, query, workers)) as messages:
            for message in messages:
                printer.take(message)
            printer.finish()
    except BrokenPipeError:
        # The reader went away (| head): as grep, stop quietly; nothing more can be said.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return MATCHED if printer.selected else NOTHING
    if printer.searched == 0:
        say("collector grep: error: no archive could be searched", file=sys.stderr)
        return TROUBLE
    return MATCHED if printer.selected else NOTHING


class _Printer:
    """Prints the workers' messages as they come; counts and lists by server."""

    def __init__(self, found: list[Found], query: Query, *, as_json: bool) -> None:
        self.found = found
        self.query = query
        self.as_json = as_json
        self.searched = 0
        self.selected = 0
        self.counts: Counter[tuple[str, str]] = Counter()
        self.listed: set[tuple[str, str]] = set()
        self.out = sys.stdout

    def take(self, message: tuple[Any, ...]) -> None:
        kind, index = message[0], message[1]
        archive = self.found[index]
        if kind == "lines":
            for member, number, text, length in message[2]:
                self.selected += 1
                self._line(archive, member, number, text, length)
        elif kind == "count":
            self.selected += message[2]
            whose = (archive.project, archive.server.id)
            self.counts[whose] += message[2]
            if self.query.mode == "list" and message[2] and whose not in self.listed:
                self.listed.add(whose)
                self._server(whose)
        elif kind == "warn":
            say(f"collector grep: warning: {archive.where}: {message[2]}", file=sys.stderr)
        elif kind == "done":
            self.searched += bool(message[2])
            if self.query.mode == "count":
                self.counts[(archive.project, archive.server.id)] += 0

    def _line(self, archive: Found, member: str, number: int, text: bytes, length: int) -> None:
        decoded = text.decode("utf-8", "replace")
        cut = length > len(text)
        if self.as_json:
            record: dict[str, Any] = {
                "project": archive.project,
                "server": archive.server.id,
                "archive": archive.where,
                "member": member,
                "line": number,
                "text": decoded,
            }
            if cut:
                record["cut"] = True
                record["length"] = length
            self.out.write(json.dumps(record) + "\n")  # ensure_ascii: every control character escaped
            return
        if cut:
            decoded = f"{clean_text(decoded, CUT_SHOWN)} [a line of {length:,} bytes, cut]"
        say(f"{archive.project}/{archive.server.id}:{member}:{number}:{decoded}", file=self.out)

    def _server(self, whose: tuple[str, str], count: int | None = None) -> None:
        if self.as_json:
            record: dict[str, Any] = {"project": whose[0], "server": whose[1]}
            if count is not None:
                record["count"] = count
            self.out.write(json.dumps(record) + "\n")
        else:
            say(f"{whose[0]}/{whose[1]}" + (f":{count}" if count is not None else ""), file=self.out)

    def finish(self) -> None:
        if self.query.mode == "count":
            for whose in sorted(self.counts):
                self._server(whose, self.counts[whose])
        self.out.flush()
