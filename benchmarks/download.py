"""Download throughput: `collector run` against curl (one big archive) and aria2c (many archives).

The collector always exports and polls before it downloads, and its first poll comes seconds
after the export, so its whole wall time says little about transfers. What is measured here
is the *download phase*: from the moment the simulator received the (first) download request
to the moment the client process exited, with both ends on the same clock
(``time.monotonic()``: the simulator's event-loop clock, published as ``clock_t0`` by
``GET /_sim/stats``). Exports are instant (``--export-seconds 0``). For the reference tools
the harness starts the exports itself beforehand, so their phase is the same thing.

(a) one archive of ``--big-size`` (2 GiB): collector vs ``curl -s -o FILE URL`` with the
    X-Auth-Token header; throughput and the collector's peak RSS. The collector fsyncs every
    archive before renaming it; curl does not, so "curl+fsync" (curl, then an fsync of its file,
    timed) is also given, and the ratio against both.
(b) ``--count`` (200) archives of ``--each`` (8 MiB): collector aggregate throughput vs
    ``aria2c -j 16 -x 1`` over the same URLs (an input file with ``header=X-Auth-Token: ...``
    per URL).

``--writer aiofiles`` runs the collector with its archives written through aiofiles
(``benchmarks/aiofiles_writer.py``) instead of `collector.destinations.local`; ``--writer both`` runs
both in every run, one after the other, so they meet the same machine.

Every file is checked against the simulator's bytes (size and sha256, regenerated here).
Exits 1 if any collector result is wrong. Where the files go matters (fsync on a disk costs
what the disk costs); ``--workdir /dev/shm`` measures without the disk.

    python benchmarks/download.py                 # (a) 2 GiB and (b) 200 x 8 MiB, 3 runs each
    python benchmarks/download.py --quick         # 64 MiB and 20 x 8 MiB, one run
    python benchmarks/download.py --writer both   # collector.destinations.local against aiofiles
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    content_url,
    curl_get,
    emit,
    expected_digest,
    file_digest,
    load_report,
    note,
    round_floats,
    run_measured,
)

from collector.simulator.cli import parse_size
from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet

PHASE = (
    "download phase: from the simulator receiving the first download request to the client "
    "process exiting (file written; the collector also fsyncs and renames)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-size", type=parse_size, default=parse_size("2G"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--each", type=parse_size, default=parse_size("8M"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("big", "many"), help="run only (a) big or (b) many")
    parser.add_argument("--collector-args", default="", help='extra `collector run` flags, e.g. "--downloads 32"')
    parser.add_argument("--aria2-jobs", type=int, default=16)
    parser.add_argument("--workdir", type=Path, help="where files are written (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (under 30 s)")
    parser.add_argument(
        "--writer",
        choices=("local", "aiofiles", "both"),
        default="local",
        help="how the collector writes archives: collector.destinations.local, aiofiles, or both in turn",
    )
    return parser


AIOFILES_WRITER = Path(__file__).with_name("aiofiles_writer.py")


def writer_command(inventory: Path, out_dir: Path, extra: list[str], writer: str) -> list[str]:
    """`collector run`, or the same through the aiofiles writer's launcher."""
    command = collector_command(inventory, out_dir, extra)
    if writer == "aiofiles":
        command[1:3] = [str(AIOFILES_WRITER)]  # python -m collector ... -> python aiofiles_writer.py ...
    return command


def writers(args: argparse.Namespace) -> list[str]:
    return ["local", "aiofiles"] if args.writer == "both" else [args.writer]


def in_turn(ours: dict[str, list[dict[str, Any]]], run: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """The writers of run `run`, the first one first every other run: neither always goes first."""
    order = list(ours.items())
    return order if run % 2 else order[::-1]


def instant_fleet(servers: int, size: int) -> SimConfig:
    return SimConfig(servers=servers, export_seconds=(0.0, 0.0), archive_bytes=(size, size))


def phase_start(stats: dict[str, Any]) -> float:
    """The monotonic time the simulator received the first download request."""
    first = min(t for t, op, _ in stats["timeline"] if op == "download")
    return stats["clock_t0"] + first


def run_collector(config: SimConfig, root: Path, extra: list[str], label: str, writer: str = "local") -> dict[str, Any]:
    workdir = root / f"collector-{label}-{writer}"
    out_dir = workdir / "out"
    workdir.mkdir(parents=True)
    with SimProcess(config, workdir) as sim:
        measured = run_measured(writer_command(sim.inventory, out_dir, extra, writer))
        stats = sim.stats()
    phase = measured.ended - phase_start(stats) if stats["requests"].get("download") else float("nan")
    total = config.servers * config.archive_bytes[0]
    check = check_archives(config, out_dir, report=load_report(out_dir))
    shutil.rmtree(workdir, ignore_errors=True)
    record = {
        "tool": "collector" if writer == "local" else f"collector ({writer} writer)",
        "writer": writer,
        "exit_code": measured.exit_code,
        **check.summary(),
        "bytes": total,
        "download_phase_s": phase,
        "MiB_per_s": total / MIB / phase,
        "makespan_s": measured.wall_s,
        "peak_rss_mb": measured.peak_rss_mb,
        "cpu_s": measured.cpu_s,
        "download_requests": sum(stats["requests"].get("download", {}).values()),
    }
    record["correct"] = check.ok and measured.exit_code == 0
    if not record["correct"]:
        record["stderr_tail"] = measured.stderr[-2000:]
    return record


def start_exports(sim: SimProcess, config: SimConfig) -> list[tuple[str, str]]:
    """(server id, content URL) for every server, exports started (and, being instant, done)."""
    urls = []
    for sid in Fleet(config).ids:
        export = sim.api("POST", sim.exports_url(sid))
        urls.append((sid, content_url(sim, sid, export["export_id"])))
    return urls


def fsync_file(path: Path) -> float:
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


def run_curl(config: SimConfig, root: Path, label: str) -> dict[str, Any]:
    workdir = root / f"curl-{label}"
    workdir.mkdir(parents=True)
    target = workdir / "archive.tar.gz"
    with SimProcess(config, workdir) as sim:
        ((sid, url),) = start_exports(sim, config)
        result = curl_get(url, config.token, out=str(target))
        stats = sim.stats()
    phase = result["ended"] - phase_start(stats)
    fsync_s = fsync_file(target)
    size, sha = file_digest(target)
    expected = config.archive_bytes[0]
    ok = result["http_code"] == 200 and size == expected and sha == expected_digest(config, sid, expected)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "tool": "curl",
        "correct": ok,
        "bytes": size,
        "download_phase_s": phase,
        "MiB_per_s": size / MIB / phase,
        "curl_time_total_s": result["curl_time_s"],
        "fsync_after_s": fsync_s,
        "MiB_per_s_with_fsync": size / MIB / (phase + fsync_s),
        "peak_rss_mb": result["peak_rss_mb"],
        "cpu_s": result["cpu_s"],
    }


def run_aria2(config: SimConfig, root: Path, label: str, jobs: int) -> dict[str, Any]:
    workdir = root / f"aria2-{label}"
    folder = workdir / "out" / config.project_id
    folder.mkdir(parents=True)
    with SimProcess(config, workdir) as sim:
        urls = start_exports(sim, config)
        lines = []
        for sid, url in urls:
            lines += [url, f"  header=X-Auth-Token: {config.token}", f"  out={sid}-dump.tar.gz"]
        (workdir / "urls.txt").write_text("\n".join(lines) + "\n")
        command = [
            "aria2c",
            "-i",
            str(workdir / "urls.txt"),
            "-d",
            str(folder),
            "-j",
            str(jobs),
            "-x",
            "1",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
        ]
        measured = run_measured(command)
        stats = sim.stats()
    phase = measured.ended - phase_start(stats)
    check = check_archives(config, workdir / "out")
    total = config.servers * config.archive_bytes[0]
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "tool": f"aria2c -j {jobs} -x 1",
        "exit_code": measured.exit_code,
        **check.summary(),
        "bytes": total,
        "download_phase_s": phase,
        "MiB_per_s": total / MIB / phase,
        "peak_rss_mb": measured.peak_rss_mb,
        "cpu_s": measured.cpu_s,
    }


def median(records: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def bench_big(args: argparse.Namespace, root: Path, extra: list[str]) -> bool:
    config = instant_fleet(1, args.big_size)
    ours: dict[str, list[dict[str, Any]]] = {writer: [] for writer in writers(args)}
    curls = []
    for run in range(1, args.runs + 1):
        for writer, records in in_turn(ours, run):
            note(f"(a) one {args.big_size / MIB:.0f} MiB archive, run {run}: collector ({writer} writer) ...")
            record = run_collector(config, root, extra, f"big-{run}", writer)
            emit(round_floats({"bench": "download", "case": "one_big", "run": run, **record}))
            records.append(record)
        note(f"(a) run {run}: curl ...")
        record = run_curl(config, root, f"big-{run}")
        emit(round_floats({"bench": "download", "case": "one_big", "run": run, **record}))
        curls.append(record)
    summary = {
        "bench": "download",
        "case": "one_big",
        "kind": "median",
        "runs": args.runs,
        "code": code_version(),
        "archive_MiB": args.big_size / MIB,
        "measured": PHASE,
        "workdir": str(root),
        "curl_MiB_per_s": median(curls, "MiB_per_s"),
        "curl_with_fsync_MiB_per_s": median(curls, "MiB_per_s_with_fsync"),
        "all_correct": all(r["correct"] for records in ours.values() for r in records + curls),
    }
    for writer, records in ours.items():
        prefix = "collector" if writer == "local" else f"collector_{writer}"
        summary[f"{prefix}_MiB_per_s"] = median(records, "MiB_per_s")
        summary[f"{prefix}_peak_rss_mb"] = median(records, "peak_rss_mb")
        summary[f"{prefix}_cpu_s"] = median(records, "cpu_s")
        ratio = "ratio" if writer == "local" else f"{writer}_ratio"
        summary[f"{ratio}_vs_curl"] = summary[f"{prefix}_MiB_per_s"] / summary["curl_MiB_per_s"]
        summary[f"{ratio}_vs_curl_with_fsync"] = summary[f"{prefix}_MiB_per_s"] / summary["curl_with_fsync_MiB_per_s"]
    emit(round_floats(summary))
    return all(r["correct"] for records in ours.values() for r in records)


def bench_many(args: argparse.Namespace, root: Path, extra: list[str]) -> bool:
    config = instant_fleet(args.count, args.each)
    ours: dict[str, list[dict[str, Any]]] = {writer: [] for writer in writers(args)}
    arias = []
    for run in range(1, args.runs + 1):
        for writer, records in in_turn(ours, run):
            note(f"(b) {args.count} x {args.each / MIB:.0f} MiB, run {run}: collector ({writer} writer) ...")
            record = run_collector(config, root, extra, f"many-{run}", writer)
            emit(round_floats({"bench": "download", "case": "many", "run": run, **record}))
            records.append(record)
        note(f"(b) run {run}: aria2c ...")
        record = run_aria2(config, root, f"many-{run}", args.aria2_jobs)
        emit(round_floats({"bench": "download", "case": "many", "run": run, **record}))
        arias.append(record)
    summary = {
        "bench": "download",
        "case": "many",
        "kind": "median",
        "runs": args.runs,
        "code": code_version(),
        "archives": args.count,
        "archive_MiB": args.each / MIB,
        "measured": PHASE,
        "workdir": str(root),
        "aria2c_MiB_per_s": median(arias, "MiB_per_s"),
        "all_correct": all(r["correct"] for records in ours.values() for r in records + arias),
    }
    for writer, records in ours.items():
        prefix = "collector" if writer == "local" else f"collector_{writer}"
        summary[f"{prefix}_MiB_per_s"] = median(records, "MiB_per_s")
        summary[f"{prefix}_makespan_s"] = median(records, "makespan_s")
        summary[f"{prefix}_peak_rss_mb"] = median(records, "peak_rss_mb")
        summary[f"{prefix}_cpu_s"] = median(records, "cpu_s")
        ratio = "ratio" if writer == "local" else f"{writer}_ratio"
        summary[f"{ratio}_vs_aria2c"] = summary[f"{prefix}_MiB_per_s"] / summary["aria2c_MiB_per_s"]
    emit(round_floats(summary))
    return all(r["correct"] for records in ours.values() for r in records)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.big_size, args.count, args.runs = 64 * MIB, 20, 1
    for tool in ("curl", "aria2c"):
        if shutil.which(tool) is None:
            print(f"download.py: {tool} is not installed (apt-get install -y {tool.rstrip('c')})", file=sys.stderr)
            return 2
    extra = shlex.split(args.collector_args)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.workdir))
    ok = True
    try:
        if args.only in (None, "big"):
            ok &= bench_big(args, root, extra)
        if args.only in (None, "many"):
            ok &= bench_many(args, root, extra)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
