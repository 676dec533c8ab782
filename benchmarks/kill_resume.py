"""Kill a sweep mid-flight, run it again, and check nothing was lost, torn or asked for twice.

For each of SIGTERM and SIGKILL: a simulator in its own process (300 servers by default),
`collector run` with its default settings, the signal after `--after` seconds, then the same
command again. Prints one JSON line per signal:

- the first run's exit code (143 for SIGTERM; -9 for SIGKILL) and how many servers it had
  collected;
- `torn`: final-named archives after the kill that are not exactly what was served (must be 0);
- `exporting_at_kill`: servers the journal had in `exporting` when the first run died: their
  POST was queued or in flight, with no export id back yet (an upper bound on the POSTs in
  flight);
- the re-run's exit code (must be 0), whether every archive is exact, and
  `exported_twice`: exports asked for beyond one per server (must be 0 after SIGTERM, and at
  most `exporting_at_kill` after SIGKILL: only POSTs in flight at the kill may be repeated).

    python benchmarks/kill_resume.py [--servers 300] [--after 3]
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from _common import (
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    emit,
    expected_digest,
    file_digest,
    load_report,
    note,
    parse_bytes_range,
    parse_range,
)

from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet


def torn_archives(config: SimConfig, out: Path) -> int:
    """Final-named archives whose bytes are not the archive served."""
    sizes = {profile.id: profile.archive_bytes for profile in Fleet(config).profiles}
    torn = 0
    for path in (out / config.project_id).glob("*-dump.tar.gz"):
        server_id = path.name.removesuffix("-dump.tar.gz")
        size, sha = file_digest(path)
        if size != sizes[server_id] or sha != expected_digest(config, server_id, size):
            torn += 1
    return torn


def journal_phases(out: Path) -> dict[str, int]:
    with sqlite3.connect(out / ".collector" / "journal.db") as db:
        return dict(db.execute("SELECT phase, count(*) FROM servers GROUP BY phase"))


def trial(config: SimConfig, signum: signal.Signals, after: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as folder, SimProcess(config, Path(folder)) as sim:
        out = Path(folder) / "out"
        first = subprocess.Popen(collector_command(sim.inventory, out), stderr=subprocess.DEVNULL)
        time.sleep(after)
        first.send_signal(signum)
        first_code = first.wait()
        phases = journal_phases(out)
        torn = torn_archives(config, out)
        note(f"{signum.name}: first run exited {first_code}; journal {phases}")

        started = time.monotonic()
        rerun = subprocess.run(collector_command(sim.inventory, out), stderr=subprocess.DEVNULL)
        rerun_s = time.monotonic() - started
        check = check_archives(config, out, report=load_report(out))
        stats = sim.stats(timeline=False)
        return {
            "signal": signum.name,
            "servers": config.servers,
            "signal_after_s": after,
            "first_exit": first_code,
            "collected_before_signal": phases.get("collected", 0),
            "torn": torn,
            "exporting_at_kill": phases.get("exporting", 0),
            "rerun_exit": rerun.returncode,
            "rerun_s": round(rerun_s, 2),
            **check.summary(),
            "exports_started": stats["exports_started"],
            "exported_twice": stats["exports_started"] - config.servers,
            "max_exports_per_server": stats["exports_started_max_per_server"],
            **code_version(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--after", type=float, default=3.0, help="seconds before the signal (default 3)")
    parser.add_argument("--export-seconds", default="1-3")
    parser.add_argument("--archive-bytes", default="64K-1M")
    parser.add_argument("--rate-limit", type=float, default=100.0)
    args = parser.parse_args()
    config = SimConfig(
        servers=args.servers,
        export_seconds=parse_range(args.export_seconds),
        archive_bytes=parse_bytes_range(args.archive_bytes),
        rate_limit=args.rate_limit,
        seed=5,
    )
    ok = True
    for signum in (signal.SIGTERM, signal.SIGKILL):
        record = trial(config, signum, args.after)
        emit(record)
        allowed_twice = 0 if signum is signal.SIGTERM else record["exporting_at_kill"]
        ok &= (
            record["torn"] == 0
            and record["rerun_exit"] == 0
            and record["correct"]
            and record["exported_twice"] <= allowed_twice
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
