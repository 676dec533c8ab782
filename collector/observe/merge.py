"""Put the reports of a sharded run together: `report.shard-K-of-N.json` files into one report.

Each pod of an Indexed Job writes its shard's report (`collector.config.shards`); once they are all
done, `collector merge OUT` reads them, from a folder (`merge_folder`) or through the object
store's own calls (`read_reports`), and `merge_reports` makes the report a single run would
have written: every server once, totals recomputed, the run's span from the earliest start
to the latest end. It also says what the shard files alone can prove went wrong:

- a shard of N with no report (its pod never finished, or wrote elsewhere): *missing*;
- reports for different N in one place (the leftovers of another run): *counts*;
- a server in two reports (two runs' reports, or pods that split the fleet differently):
  *overlapping*; the merged report keeps the entry that got furthest;
- a server in the report of a shard it does not hash to (pods, or this merge, running a
  version of collector with another `shard_of`): *misplaced*. Such a split may also have
  left servers in no report at all, which nothing here can see.

The merge ends in `ExitCode.OK` only if every shard of one N reported, nothing above went
wrong, and no server is failed or pending; else `ExitCode.PARTIAL`.

The shard files are input like any other: each is checked before it is used, and a file that
is not JSON or not a report is `ReportError`, one line naming the file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from collector import __version__
from collector.config.shards import Shard, parse_report_name, shard_of
from collector.destinations.location import S3Location
from collector.errors import ExitCode, UsageError
from collector.observe.report import REPORT_NAME, encoded_report, write_report
from collector.text import clean, kind_of

__all__ = [
    "MAX_REPORT_BYTES",
    "SHARD_REPORTS",
    "MergeResult",
    "Misplaced",
    "Overlap",
    "ReportError",
    "load_folder",
    "merge_folder",
    "merge_reports",
    "read_reports",
]

SHARD_REPORTS = "report.shard-*-of-*.json"  # what the readers pick up; names are then checked
MAX_REPORT_BYTES = 256 << 20  # a shard of a million servers is far less
STATES = ("collected", "failed", "pending")  # also the order of preference between duplicates
EXAMPLES = 3  # servers named in a problem's line; the report lists them all

_HINT = "a shard report is the report a `collector run --shard K/N` wrote; remove or replace this file"


class ReportError(UsageError):
    """A shard report cannot be used: unreadable, not JSON, not a report, or misnamed."""

    def __init__(self, name: str, message: str, *, hint: str = _HINT) -> None:
        super().__init__(f"{clean(name, 200)}: {message}", hint)
        self.name = name


@dataclass(frozen=True, slots=True)
class Overlap:
    """A server found in more than one report (their names, sorted)."""

    project_id: str
    server_id: str
    reports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Misplaced:
    """A server in `report`, which is not the report of `belongs`, the shard it hashes to."""

    project_id: str
    server_id: str
    report: str
    belongs: Shard


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged report and what the merge found; `path` once `merge_folder` wrote it."""

    report: dict[str, Any]
    found: tuple[Shard, ...]  # distinct, by (count, index)
    missing: tuple[Shard, ...]  # for each N found, the shards of N without a report
    counts: tuple[int, ...]  # the N of the reports found; more than one is a problem
    overlapping: tuple[Overlap, ...]
    misplaced: tuple[Misplaced, ...]
    exit_code: ExitCode
    path: Path | None = None

    @property
    def complete(self) -> bool:
        """Every shard of a single N reported, each server once and where it belongs."""
        return len(self.counts) == 1 and not (self.missing or self.overlapping or self.misplaced)

    def problems(self) -> list[str]:
        """One line for each kind of problem, for people; empty when the merge is complete."""
        lines = []
        if len(self.counts) > 1:
            per_count = Counter(shard.count for shard in self.found)
            seen = ", ".join(f"{n} ({per_count[n]} found)" for n in self.counts)
            lines.append(f"reports of runs with different numbers of shards: {seen}; keep only the reports of one run")
        if self.missing:
            names = ", ".join(shard.report_name for shard in self.missing[:10])
            more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
            lines.append(
                f"{len(self.missing)} shard(s) did not report: no {names}{more}; their servers are not in the report"
            )
        if self.overlapping:
            examples = "; ".join(
                f"{o.project_id}/{o.server_id} in {', '.join(o.reports)}" for o in self.overlapping[:EXAMPLES]
            )
            n = len(self.overlapping)
            lines.append(f"{n} server{'s' * (n != 1)} in more than one report, e.g. {examples}")
        if self.misplaced:
            examples = "; ".join(
                f"{m.project_id}/{m.server_id} in {m.report} belongs to {m.belongs.label}"
                for m in self.misplaced[:EXAMPLES]
            )
            lines.append(
                f"{len(self.misplaced)} server{'s' * (len(self.misplaced) != 1)} in the report of another shard, "
                f"e.g. {examples};"
                " did the pods run different versions of collector?"
            )
        return [clean(line, 1000) for line in lines]


@dataclass(frozen=True, slots=True)
class _Parsed:
    """One shard report, checked."""

    name: str
    shard: Shard
    started_at: datetime
    finished_at: datetime
    inventory: str | None
    version: str | None
    stopped: str | None
    servers: list[dict[str, Any]]
    discovery_failed: list[dict[str, str]]


def merge_reports(reports: Mapping[str, Any]) -> MergeResult:
    """Merge shard reports, each given by its name (a file name, a path or an object key
    ending in ``report.shard-K-of-N.json``) and its parsed JSON.

    Raises `ReportError` for the first report that is misnamed or not a report, and
    `UsageError` when there is none.
    """
    if not reports:
        raise UsageError("no shard reports to merge", hint="give the folder the shards wrote their reports to")
    parsed = sorted(
        (_parse(name, data) for name, data in reports.items()),
        key=lambda p: (p.shard.count, p.shard.index, p.name),
    )
    found = tuple(sorted({p.shard for p in parsed}, key=lambda s: (s.count, s.index)))
    counts = tuple(sorted({s.count for s in found}))
    missing = tuple(Shard(k, n) for n in counts for k in range(n) if Shard(k, n) not in found)

    listed: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    misplaced = []
    for p in parsed:
        for entry in p.servers:
            key = (entry["project_id"], entry["server_id"])
            listed.setdefault(key, []).append((p.name, entry))
            home = shard_of(*key, p.shard.count)
            if home != p.shard.index:
                misplaced.append(Misplaced(*key, p.name, Shard(home, p.shard.count)))
    overlapping = tuple(
        Overlap(*key, tuple(sorted(name for name, _ in entries)))
        for key, entries in sorted(listed.items())
        if len(entries) > 1
    )
    # One entry per server: the one that got furthest; between equals, the first report's.
    servers = [
        dict(min(entries, key=lambda e: STATES.index(e[1]["state"]))[1]) for _, entries in sorted(listed.items())
    ]
    totals = _totals(servers)
    result = MergeResult(
        report={},
        found=found,
        missing=missing,
        counts=counts,
        overlapping=overlapping,
        misplaced=tuple(sorted(misplaced, key=lambda m: (m.project_id, m.server_id, m.report))),
        exit_code=ExitCode.PARTIAL,
    )
    run = _run(parsed, result)
    ok = result.complete and totals["failed"] == 0 and totals["pending"] == 0 and "discovery_failed" not in run
    report = {"run": run, "totals": totals, "servers": servers}
    return dataclasses.replace(result, report=report, exit_code=ExitCode.OK if ok else ExitCode.PARTIAL)


def load_folder(folder: Path | str) -> dict[str, Any]:
    """The shard reports in `folder`, by path, parsed as JSON (not yet checked as reports)."""
    folder = Path(folder)
    try:
        paths = sorted(p for p in folder.iterdir() if fnmatch.fnmatchcase(p.name, SHARD_REPORTS))
    except OSError as exc:
        raise UsageError(
            f"{folder}: cannot list the folder: {exc.strerror or exc}",
            hint="give the folder the shards wrote their reports to",
        ) from exc
    if not paths:
        raise UsageError(
            f"{folder}: no shard reports ({SHARD_REPORTS}) in this folder",
            hint="give the folder the shards wrote their reports to (their -o)",
        )
    return {str(path): _decode(str(path), _read_bounded(path)) for path in paths}


def merge_folder(folder: Path | str) -> MergeResult:
    """Merge the shard reports in `folder` and write the result there as report.json
    (atomically: a reader sees the old report or the new one)."""
    result = merge_reports(load_folder(folder))
    return dataclasses.replace(result, path=write_report(Path(folder), result.report))


async def read_reports(
    lister: Callable[[], Awaitable[Iterable[str]]],
    reader: Callable[[str], Awaitable[bytes]],
) -> dict[str, Any]:
    """The shard reports an object store holds, by key, parsed as JSON.

    `lister()` gives every key under the run's prefix; those whose last part matches
    `SHARD_REPORTS` are read with `reader(key)`, one at a time (a run has tens of shards,
    not thousands), so that the first error, the store's or `ReportError`, is raised as it
    is. `reader` should read at most `MAX_REPORT_BYTES` + 1 bytes.
    """
    keys = sorted(key for key in await lister() if fnmatch.fnmatchcase(_base(key), SHARD_REPORTS))
    if not keys:
        raise UsageError(
            f"no shard reports ({SHARD_REPORTS}) found", hint="give the prefix the shards wrote their reports to"
        )
    return {key: _decode(key, await reader(key)) for key in keys}


# -- checking one report ------------------------------------------------------------------


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        message = f"cannot read it: {exc.strerror or exc}"
        raise ReportError(str(path), message, hint="check that it is a file this user can read") from exc


def _decode(name: str, data: bytes) -> Any:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(name, f"larger than {MAX_REPORT_BYTES >> 20} MiB, too large for a shard report")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ReportError(name, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(name, "not JSON: not UTF-8 text") from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number; [[[[... nested too deep
        raise ReportError(name, "not JSON that can be read") from exc


def _parse(name: str, data: Any) -> _Parsed:
    shard = parse_report_name(_base(name))
    if shard is None:
        raise ReportError(
            name, "not the name of a shard report", hint="shard reports are named report.shard-K-of-N.json, 0 <= K < N"
        )
    run = _field(name, data, "run", dict, "")
    servers = _field(name, data, "servers", list, "")
    checked = [_server(name, entry, f"servers[{i}]") for i, entry in enumerate(servers)]
    return _Parsed(
        name=name,
        shard=shard,
        started_at=_timestamp(name, run, "started_at"),
        finished_at=_timestamp(name, run, "finished_at"),
        inventory=_optional_str(name, run, "inventory", "run."),
        version=_optional_str(name, run, "version", "run."),
        stopped=_optional_str(name, run, "stopped", "run."),
        servers=checked,
        discovery_failed=_discovery_failed(name, run),
    )


def _discovery_failed(name: str, run: dict[str, Any]) -> list[dict[str, str]]:
    """`run.discovery_failed`: the projects whose ListServers failed, each an object of strings."""
    entries = run.get("discovery_failed", [])
    if not isinstance(entries, list):
        raise ReportError(name, f"run.discovery_failed: expected a list, got {kind_of(entries, numbers=True)}")
    checked = []
    for i, entry in enumerate(entries):
        key = f"run.discovery_failed[{i}]"
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise ReportError(name, f"{key}: expected an object of strings")
        if not isinstance(entry.get("project_id"), str):
            raise ReportError(name, f"{key}.project_id: expected a string")
        checked.append(entry)
    return checked


def _server(name: str, entry: Any, key: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ReportError(name, f"{key}: expected an object, got {kind_of(entry, numbers=True)}")
    for field in ("project_id", "server_id"):
        value = _field(name, entry, field, str, f"{key}.")
        if not value:
            raise ReportError(name, f"{key}.{field}: empty")
    state = _field(name, entry, "state", str, f"{key}.")
    if state not in STATES:
        raise ReportError(name, f"{key}.state: expected one of {', '.join(STATES)}, got {clean(state, 40)!r}")
    size = entry.get("bytes")
    if size is not None and (type(size) is not int or size < 0):
        raise ReportError(name, f"{key}.bytes: expected a whole number of bytes, got {kind_of(size, numbers=True)}")
    return entry


def _field(name: str, parent: Any, field: str, kind: type, where: str) -> Any:
    if not isinstance(parent, dict):
        raise ReportError(name, f"expected a JSON object, got {kind_of(parent, numbers=True)}")
    if field not in parent:
        raise ReportError(name, f"{where}{field}: missing")
    value = parent[field]
    if not isinstance(value, kind):
        expected = kind_of(kind())  # "an object" for dict, as a value of the kind is named
        raise ReportError(name, f"{where}{field}: expected {expected}, got {kind_of(value, numbers=True)}")
    return value


def _optional_str(name: str, parent: dict[str, Any], field: str, where: str) -> str | None:
    value = parent.get(field)
    if value is not None and not isinstance(value, str):
        raise ReportError(name, f"{where}{field}: expected a string, got {kind_of(value, numbers=True)}")
    return value


def _timestamp(name: str, run: dict[str, Any], field: str) -> datetime:
    text = _field(name, run, field, str, "run.")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ReportError(
            name,
            f"run.{field}: expected a time with its offset, like 2026-11-27T03:00:00+00:00, got {clean(text, 40)!r}",
        )
    return value


def _base(name: str) -> str:
    """The last part of a path or an object key."""
    return name.replace(os.sep, "/").rsplit("/", 1)[-1]


# -- the merged report ----------------------------------------------------------------------


def _totals(servers: list[dict[str, Any]]) -> dict[str, int]:
    """As `collector.observe.report.build_report` counts them: bytes are the collected archives'."""
    states = Counter(entry["state"] for entry in servers)
    return {
        "servers": len(servers),
        "collected": states["collected"],
        "failed": states["failed"],
        "pending": states["pending"],
        "bytes": sum(entry.get("bytes") or 0 for entry in servers if entry["state"] == "collected"),
    }


def _run(parsed: list[_Parsed], result: MergeResult) -> dict[str, Any]:
    started = min(p.started_at for p in parsed)
    finished = max(p.finished_at for p in parsed)
    inventories = sorted({p.inventory for p in parsed if p.inventory is not None})
    run: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 3),
        # The shards' inventory, as report.json has it; a list only if they disagree.
        "inventory": (inventories[0] if inventories else None) if len(inventories) <= 1 else inventories,
        "version": __version__,
    }
    stopped = [f"{p.shard.label}: {p.stopped}" for p in parsed if p.stopped]
    if stopped:
        run["stopped"] = "; ".join(stopped)
    # Every shard discovers the whole fleet: the same project may have failed in each.
    failed = {entry["project_id"]: entry for p in parsed for entry in p.discovery_failed}
    if failed:
        run["discovery_failed"] = [failed[project] for project in sorted(failed)]
    run["shards"] = {
        "count": result.counts[0] if len(result.counts) == 1 else None,
        "counts": list(result.counts),
        "found": [shard.label for shard in result.found],
        "missing": [shard.label for shard in result.missing],
        "reports": [
            {
                "name": p.name,
                "shard": p.shard.label,
                "started_at": p.started_at.isoformat(timespec="seconds"),
                "finished_at": p.finished_at.isoformat(timespec="seconds"),
                "servers": len(p.servers),
                "version": p.version,
                **({"stopped": p.stopped} if p.stopped else {}),
            }
            for p in parsed
        ],
        "overlapping": [
            {"project_id": o.project_id, "server_id": o.server_id, "reports": list(o.reports)}
            for o in result.overlapping
        ],
        "misplaced": [
            {"project_id": m.project_id, "server_id": m.server_id, "report": m.report, "belongs": m.belongs.label}
            for m in result.misplaced
        ],
    }
    return run


async def merge_bucket(location: S3Location) -> MergeResult:
    """Merge the shard reports under an object-storage prefix; write report.json there."""
    async with location.open() as bucket:
        result = merge_reports(await read_reports(bucket.list_names, bucket.read_bytes))
        # Joined from its pieces: `json.dumps` lists every token first (~6 x the text).
        await bucket.write_document(REPORT_NAME, b"".join(encoded_report(result.report)))
    return result
