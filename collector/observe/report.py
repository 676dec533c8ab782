"""What the run did: `OUT/report.json` for machines, a summary on stderr at the end.

The report is written atomically (temporary file, fsync, rename), so a reader never sees half
of one, even if the run is killed while writing it.

The summary is computed once, as a record (`summary_record`), and shown either as lines for
people (`summary_lines`) or as one `summary` JSON log line (`emit_summary` does either).
Failures are grouped by what the errors say in their structured fields (kind, HTTP status,
the API's error_code), never by matching message text; unfinished servers by why they stopped.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import fields
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

from collector import __version__
from collector.destinations.local import write_atomically
from collector.log import ev
from collector.sweep.results import ServerResult
from collector.text import clean, say

REPORT_NAME = "report.json"

# A server's entry: every field of its result but those left out of its repr (`reason`, the
# summary's grouping key; what its export took, kept for the next run), in field order. Read
# field by field: `asdict` deep-copies each value, which cost more than the rest of the report
# at 5,000 servers (benchmarks/cpu.py), and every value here is a scalar.
_REPORTED = tuple(f.name for f in fields(ServerResult) if f.repr)


def build_report(
    results: list[ServerResult],
    *,
    started_at: datetime,
    finished_at: datetime,
    inventory: str | None,
    stopped: str | None = None,
    discovery_failed: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    states = Counter(r.state for r in results)
    run: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "duration_s": round((finished_at - started_at).total_seconds(), 3),
        "inventory": inventory,
        "version": __version__,
    }
    if stopped:
        run["stopped"] = stopped
    if discovery_failed:
        run["discovery_failed"] = discovery_failed  # projects, not servers: not counted in totals
    totals = {
        "servers": len(results),
        "collected": states["collected"],
        "failed": states["failed"],
        "pending": states["pending"],
        "bytes": sum(r.bytes or 0 for r in results if r.state == "collected"),
    }
    servers = [{name: getattr(r, name) for name in _REPORTED} for r in results]
    return {"run": run, "totals": totals, "servers": servers}


def write_report(out_dir: Path, report: dict[str, Any] | bytes, name: str = REPORT_NAME) -> Path:
    """`report` (or its text, already encoded) as `out_dir/name`, atomically."""
    path = Path(out_dir) / name
    write_atomically(path, report if isinstance(report, bytes) else encoded_report(report))
    return path


_ENCODER = json.JSONEncoder(indent=1)  # as json.dumps(report, indent=1)


def encoded_report(report: dict[str, Any]) -> Iterator[bytes]:
    """The report's JSON text (as `json.dumps(report, indent=1)`), encoded, in pieces of a few
    thousand tokens as they are made.

    `json.dumps` lists every token of the text before joining them: ~18 MB at 5,000 servers,
    at the end of the run, when the process is at its largest (issue 14).
    """
    tokens = _ENCODER.iterencode(report)
    for first in tokens:
        yield "".join(chain((first,), islice(tokens, 8191))).encode()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if unit == "TiB" or round(abs(n), 1) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """`1:23`, or `1:01:23` from an hour on."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else human_duration(seconds)


# -- the summary ------------------------------------------------------------------------------

TOP_GROUPS = 10  # groups shown; the report has every server

# How a group of failures reads when its servers do not share one `reason` and there is no
# HTTP status.
KIND_LABELS = {
    "refused": "connection refused",
    "dns": "host name not found",
    "tls": "TLS handshake failed",
    "timeout": "timeout",
    "reset": "connection reset",
    "network": "network error",
    "protocol": "unusable answer from the API",
    "export": "export failed",
    "archive": "archive damaged",
    "too_large": "archive larger than --max-archive-bytes",
    "storage": "archive could not be stored",
    "internal": "internal error (a bug in collector)",
}


def _structured_label(result: ServerResult) -> str:
    if result.status is not None:
        return f"HTTP {result.status}" + (f" {result.error_code}" if result.error_code else "")
    if result.error_kind:
        return KIND_LABELS.get(result.error_kind, result.error_kind)
    return "unknown error"


def _failure_key(result: ServerResult) -> Hashable:
    return (result.error_kind, result.status, result.error_code)


def _failure_label(group: list[ServerResult]) -> str:
    """The sweep's reason when the whole group shares it (`archive damaged on the server`),
    else what the structured fields say (`HTTP 500 SVC.0001`, `timeout`)."""
    reasons = {r.reason for r in group}
    if len(reasons) == 1 and group[0].reason:
        return group[0].reason
    return _structured_label(group[0])


def _pending_key(result: ServerResult) -> Hashable:
    return _pending_label([result])


def _pending_label(group: list[ServerResult]) -> str:
    return group[0].reason or group[0].error or "run stopped before this server finished"


def _groups(
    results: list[ServerResult],
    key: Callable[[ServerResult], Hashable],
    label: Callable[[list[ServerResult]], str],
) -> list[dict[str, Any]]:
    """Groups, largest first; each with its count, a label and its first server as the example."""
    members: dict[Hashable, list[ServerResult]] = {}
    for result in results:
        members.setdefault(key(result), []).append(result)
    labelled = sorted(((label(group), group) for group in members.values()), key=lambda lg: (-len(lg[1]), lg[0]))
    return [
        {
            "count": len(group),
            "label": name,
            "kind": group[0].error_kind,
            "status": group[0].status,
            "error_code": group[0].error_code,
            "example": {
                "project_id": group[0].project_id,
                "server_id": group[0].server_id,
                "error": group[0].error,
                "request_id": group[0].request_id,
            },
        }
        for name, group in labelled
    ]


def summary_record(
    results: list[ServerResult],
    *,
    duration_s: float,
    requests: int = 0,
    throttled: int = 0,
    retries: int = 0,
    exit_code: int | None = None,
    stopped: str | None = None,
    report_path: Path | str | None = None,
    discovery_failed: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The end of a run in numbers, with failures and unfinished servers grouped.

    `bytes` counts every archive in the folder (as report.json's totals do); `bytes_this_run`
    only what this run downloaded. The text of examples is as the server sent it: the log
    formatter and `summary_lines` escape it.
    """
    states = Counter(r.state for r in results)
    collected = [r for r in results if r.state == "collected"]
    failed = [r for r in results if r.state == "failed"]
    pending = [r for r in results if r.state == "pending"]
    failures = _groups(failed, _failure_key, _failure_label)
    waiting = _groups(pending, _pending_key, _pending_label)
    record: dict[str, Any] = {
        "servers": len(results),
        "collected": states["collected"],
        "collected_earlier": sum(1 for r in collected if r.collected_earlier),
        "failed": states["failed"],
        "pending": states["pending"],
        "bytes": sum(r.bytes or 0 for r in collected),
        "bytes_this_run": sum(r.bytes or 0 for r in collected if not r.collected_earlier),
        "duration_s": round(duration_s, 3),
        "requests": requests,
        "throttled": throttled,
        "retries": retries,
    }
    if exit_code is not None:
        record["exit_code"] = int(exit_code)
    if stopped:
        record["stopped"] = stopped
    if report_path is not None:
        record["report"] = str(report_path)
    if discovery_failed:
        record["discovery_failed"] = discovery_failed
    record["failures"] = failures[:TOP_GROUPS]
    record["failure_groups"] = len(failures)
    record["pending_reasons"] = waiting[:TOP_GROUPS]
    record["pending_groups"] = len(waiting)
    return record


def _example(group: dict[str, Any], *, with_error: bool) -> str:
    example = group["example"]
    where = f"{example['project_id']}/{example['server_id']}"
    if with_error and example.get("error"):
        return f"{where}: {example['error']}"
    return where


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The summary for people: totals, then each group with one example server.

    Labels and errors came from servers: each line is escaped and bounded here, since these
    lines are printed, not logged.
    """
    traffic = (
        f"{human_bytes(record['bytes_this_run'])} in {_seconds(record['duration_s'])} "
        f"({record['requests']} requests, {record['throttled']} throttled, {record['retries']} retries)"
    )
    head = f"{record['collected']}/{record['servers']} servers collected"
    earlier = record["collected_earlier"]
    if earlier:
        lines = [
            f"{head}, {earlier} of them by earlier runs into this folder",
            f"this run: {record['collected'] - earlier} collected, {traffic}",
        ]
    else:
        lines = [f"{head}, {traffic}"]
    for failure in record.get("discovery_failed", ()):
        lines.append(f"discovery failed for project {failure['project_id']}: {failure['error']}")
    if record["failed"]:
        lines.append(f"{record['failed']} failed:")
        for group in record["failures"]:
            lines.append(f"  {group['count']:>5} x {group['label']}  (e.g. {_example(group, with_error=True)})")
        if record["failure_groups"] > len(record["failures"]):
            lines.append(
                f"  ... and {record['failure_groups'] - len(record['failures'])} other kinds of failure; see the report"
            )
    if record["pending"]:
        lines.append(f"{record['pending']} not finished:")
        for group in record["pending_reasons"]:
            lines.append(f"  {group['count']:>5} x {group['label']}  (e.g. {_example(group, with_error=False)})")
        if record["pending_groups"] > len(record["pending_reasons"]):
            lines.append(
                f"  ... and {record['pending_groups'] - len(record['pending_reasons'])} other reasons; see the report"
            )
        lines.append("run the same command again to resume")
    if record.get("report"):
        lines.append(f"report: {record['report']}")
    return [clean(line, 1000) for line in lines]


def emit_summary(record: dict[str, Any], log_format: str, *, stream: TextIO | None = None) -> None:
    """Show the summary: lines on stderr for people, or one `summary` log record in JSON mode
    (its message is the first line, its fields the record), so stderr stays all JSON."""
    lines = summary_lines(record)
    if log_format == "json":
        logging.getLogger("collector.summary").info(lines[0], extra=ev("summary", **record))
        return
    stream = stream if stream is not None else sys.stderr
    for line in lines:
        say(line, file=stream)


def summary(
    results: list[ServerResult], duration_s: float, *, requests: int, throttled: int, retries: int = 0
) -> list[str]:
    """The summary's lines from the results alone (what `collector.cli.main` calls today)."""
    record = summary_record(results, duration_s=duration_s, requests=requests, throttled=throttled, retries=retries)
    return summary_lines(record)
