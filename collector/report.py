"""What the run did: `OUT/report.json` for machines, a short summary on stderr for people.

The report is written atomically (temporary file, fsync, rename), so a reader never sees half
of one, even if the run is killed while writing it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from collector import __version__
from collector.storage import write_all
from collector.sweep import ServerResult

REPORT_NAME = "report.json"


def build_report(
    results: list[ServerResult],
    *,
    started_at: datetime,
    finished_at: datetime,
    inventory: str,
    stopped: str | None = None,
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
    totals = {
        "servers": len(results),
        "collected": states["collected"],
        "failed": states["failed"],
        "pending": states["pending"],
        "bytes": sum(r.bytes or 0 for r in results if r.state == "collected"),
    }
    servers = []
    for r in results:
        entry = asdict(r)
        entry.pop("reason")
        servers.append(entry)
    return {"run": run, "totals": totals, "servers": servers}


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    path = Path(out_dir) / REPORT_NAME
    tmp = path.with_name(f".{REPORT_NAME}.tmp")
    data = json.dumps(report, indent=1).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, [data])  # a single os.write may stop short
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summary(results: list[ServerResult], duration_s: float, *, requests: int, throttled: int) -> list[str]:
    """A few lines for a person: counts, bytes, time, and failures grouped by reason."""
    states = Counter(r.state for r in results)
    size = sum(r.bytes or 0 for r in results if r.state == "collected")
    line = (
        f"{states['collected']}/{len(results)} servers collected, {human_bytes(size)} in {duration_s:.1f} s"
        f" ({requests} requests, {throttled} throttled)"
    )
    lines = [line]
    if states["failed"]:
        lines.append(f"{states['failed']} failed:")
        reasons = Counter(r.reason or r.error or "unknown" for r in results if r.state == "failed")
        for reason, count in reasons.most_common(10):
            example = next(r for r in results if r.state == "failed" and (r.reason or r.error or "unknown") == reason)
            lines.append(f"  {count:>5} x {reason}  (e.g. {example.project_id}/{example.server_id}: {example.error})")
        if len(reasons) > 10:
            lines.append(f"  ... and {len(reasons) - 10} other reasons; see the report")
    if states["pending"]:
        lines.append(f"{states['pending']} not finished (run stopped); run the same command again to resume")
    return lines
