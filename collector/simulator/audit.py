"""What a collector run must have left in its output folder, checked against this simulator.

Issue 8's rules for a run against hostile replies (`collector.simulator.hostile`), shared by
tests/test_hostile.py and benchmarks/hostile.py, which run ``collector simulate --hostile``
and ``collector run`` as real processes and then call `audit_output`:

- ``report.json`` exists, lists every server of the fleet once, and its totals agree;
- every server it calls collected has its archive at ``<project>/<id>-dump.tar.gz`` with
  the size and sha256 it states; no other file there is named like an archive, and no
  ``.part`` file is left anywhere;
- every archive under its final name is one complete gzip stream with nothing after it,
  and is exactly the archive the simulator serves for that server.

What a run may not do elsewhere (write outside its folder) is for the caller to watch, with
`listing` before and after.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.simulator.archive import iter_archive, plan_archive
from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet

ARCHIVE_SUFFIX = "-dump.tar.gz"
TRACEBACK = "Traceback (most recent call last)"
_READ = 1024 * 1024


@dataclass
class Audit:
    """The rules an output folder broke (empty: none), and the report's states by count."""

    problems: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def has_traceback(text: str) -> bool:
    return TRACEBACK in text


def listing(root: Path, *, skip: Path | None = None) -> set[str]:
    """Every path under `root` (files and folders, relative), not looking inside `skip`."""
    found = set()
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        found.add(str(path.relative_to(root)))
    return found


def audit_output(out: Path, config: SimConfig) -> Audit:
    """Check `out`, where ``collector run`` wrote the fleet `config` describes."""
    audit = Audit()
    problems = audit.problems
    try:
        report = json.loads((out / "report.json").read_text())
        entries = report["servers"]
        totals = report["totals"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"report.json is missing or unreadable: {type(exc).__name__}: {exc}"[:300])
        entries, totals = [], None

    fleet = Fleet(config)
    listed = Counter(str(entry.get("server_id")) for entry in entries if isinstance(entry, dict))
    for sid in fleet.ids if totals is not None else ():
        if listed[sid] != 1:
            problems.append(f"{sid}: listed {listed[sid]} times in report.json")
    audit.states.update(str(entry.get("state")) for entry in entries if isinstance(entry, dict))
    if totals is not None:
        for state in ("collected", "failed", "pending"):
            if totals.get(state) != audit.states[state]:
                problems.append(f"report totals say {totals.get(state)} {state}, its servers {audit.states[state]}")

    reported: set[Path] = set()
    for entry in entries:
        if isinstance(entry, dict) and entry.get("state") == "collected":
            _check_collected(out, config, fleet, entry, reported, problems)
        elif isinstance(entry, dict) and entry.get("state") == "failed" and not entry.get("error"):
            problems.append(f"{entry.get('server_id')}: failed without an error")

    for path in sorted(out.rglob(f"*{ARCHIVE_SUFFIX}")):
        if path not in reported:
            problems.append(f"{path.relative_to(out)}: an archive report.json does not call collected")
            problems.extend(f"{path.relative_to(out)}: {p}" for p in _gzip_problems(path))
    problems.extend(f"{path.relative_to(out)}: partial file left" for path in sorted(out.rglob("*.part")))
    return audit


def _check_collected(
    out: Path, config: SimConfig, fleet: Fleet, entry: dict[str, Any], reported: set[Path], problems: list[str]
) -> None:
    sid = str(entry.get("server_id"))
    name = f"{config.project_id}/{sid}{ARCHIVE_SUFFIX}"
    if entry.get("file") != name:
        problems.append(f"{sid}: collected as {entry.get('file')!r}, not {name!r}")
    path = out / name
    reported.add(path)
    if not path.is_file():
        problems.append(f"{sid}: collected, but {name} is not there")
        return
    size, sha256 = _digest(path)
    if (size, sha256) != (entry.get("bytes"), entry.get("sha256")):
        problems.append(
            f"{sid}: {size} bytes, sha256 {sha256[:12]} on disk; report.json says "
            f"{entry.get('bytes')} bytes, {str(entry.get('sha256'))[:12]}"
        )
    problems.extend(f"{sid}: {problem}" for problem in _gzip_problems(path))
    profile = fleet.get(sid)
    if profile is not None and sha256 != _served_sha256(config, sid, profile.archive_bytes):
        problems.append(f"{sid}: the bytes on disk are not the archive served")


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_READ):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _served_sha256(config: SimConfig, server_id: str, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in iter_archive(plan_archive(server_id, size, config.seed)):
        digest.update(chunk)
    return digest.hexdigest()


def _gzip_problems(path: Path) -> list[str]:
    """Decompress the whole file: it must be one gzip stream that ends, with nothing after it."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        with path.open("rb") as file:
            while chunk := file.read(_READ):
                if inflater.eof:
                    return [f"{len(chunk) + len(inflater.unused_data)}+ bytes after the gzip stream"]
                while chunk:
                    inflater.decompress(chunk, _READ)
                    chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        return [f"not valid gzip: {exc}"]
    if not inflater.eof:
        return ["the gzip stream is cut short"]
    if inflater.unused_data:
        return [f"{len(inflater.unused_data)} bytes after the gzip stream"]
    return []
