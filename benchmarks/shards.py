"""Scale-out benchmark: N `collector run --shard K/N` processes against one rate-limited API.

One simulator (``collector simulate``, its own process) stands for one CloudDC gateway: one
token bucket (``--rate-limit``, 400 requests/s) over every API call of every shard. N shard
processes start together, each the real command line::

    collector run -i INVENTORY -o OUT --no-progress --shard K/N

all writing into the same folder OUT, then ``collector merge OUT`` joins their reports. The
same fleet is then collected by one process (``collector run`` without ``--shard``) against a
fresh simulator with the same settings, for comparison (``--no-single`` skips it).

What is measured and checked:

- coverage, from the shard reports alone: each ``report.shard-K-of-N.json`` holds exactly the
  servers whose sha256 of ``project_id/server_id`` mod N is K (computed here, independently of
  collector's code), no server is in two reports, together they are the whole fleet; and the
  merged report.json lists every server exactly once, collected; ``collector merge`` exits 0;
- every archive on disk has the size and sha256 the simulator serves (regenerated here);
- makespan: from the first shard's start to the last shard's exit (and with the merge),
  against the lower bound of benchmarks/sweep.py (the slowest export plus a round trip;
  (3 x servers - burst) / rate limit; bytes / loopback bandwidth);
- the share of API requests answered 429, requests per server, and where the makespan went
  (startup, seconds at and below the gateway's limit; see `makespan_split`), from the
  simulator's ``/_sim/stats``; each process's peak RSS (``VmHWM``) and CPU seconds.

JSON lines on stdout: a setup line with the bound, one line per shard, the sharded run's
summary, the merge, the one-process run, a comparison. Exits 1 if coverage or any archive is
wrong, or a process failed.

    python benchmarks/shards.py                                  # 8 x 5,000 servers, 16 KiB, 1-3 s
    python benchmarks/shards.py --shards 4 --servers 2000 --no-single
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    PYTHON,
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    emit,
    load_report,
    loopback_bandwidth,
    note,
    parse_bytes_range,
    parse_range,
    round_floats,
    run_measured,
)
from sweep import lower_bound, sweep_metrics

from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8, help="shard processes run at once (default 8)")
    parser.add_argument("--servers", type=int, default=40_000, help="the whole fleet, over all shards (default 40000)")
    parser.add_argument("--export-seconds", default="1-3", metavar="LO-HI")
    parser.add_argument("--archive-bytes", default="16K-16K", metavar="LO-HI")
    parser.add_argument(
        "--rate-limit", type=float, default=400.0, help="the one gateway's API requests/s (default 400)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collector-args", default="", help="extra `collector run` flags for every process")
    parser.add_argument("--no-single", action="store_true", help="skip the one-process run of the same fleet")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds a collector process may take before it is killed (default 900)",
    )
    parser.add_argument("--workdir", type=Path, help="where runs write (default: a temporary folder, removed)")
    return parser


def shard_of(project_id: str, server_id: str, count: int) -> int:
    """The README's rule, restated here so the check does not trust the code it checks."""
    return int.from_bytes(hashlib.sha256(f"{project_id}/{server_id}".encode()).digest(), "big") % count


def check_coverage(config: SimConfig, out: Path, shards: int) -> dict[str, Any]:
    """Shards disjoint and complete, each holding its own servers; the merged report whole."""
    fleet_ids = set(Fleet(config).ids)
    problems: list[str] = []
    seen: Counter[str] = Counter()
    per_shard: list[int] = []
    for index in range(shards):
        path = out / f"report.shard-{index}-of-{shards}.json"
        report = load_report_file(path)
        if report is None:
            problems.append(f"{path.name}: missing or unreadable")
            per_shard.append(0)
            continue
        ids = [entry["server_id"] for entry in report["servers"]]
        per_shard.append(len(ids))
        seen.update(ids)
        wrong = [i for i in ids if i not in fleet_ids or shard_of(config.project_id, i, shards) != index]
        if wrong:
            problems.append(f"{path.name}: {len(wrong)} servers of another shard or of no fleet, e.g. {wrong[0]}")
        expected = sum(1 for i in fleet_ids if shard_of(config.project_id, i, shards) == index)
        if len(set(ids)) != expected:
            problems.append(f"{path.name}: {len(set(ids))} servers, its shard has {expected}")
    twice = [i for i, n in seen.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} servers in more than one shard report (or twice in one), e.g. {twice[0]}")
    never = fleet_ids - set(seen)
    if never:
        problems.append(f"{len(never)} servers in no shard report, e.g. {min(never)}")

    merged = load_report(out)
    merged_ids: Counter[str] = Counter()
    if merged is None:
        problems.append("report.json: missing or unreadable after the merge")
    else:
        merged_ids.update(entry["server_id"] for entry in merged["servers"])
        if set(merged_ids) != fleet_ids or any(n != 1 for n in merged_ids.values()):
            problems.append(
                f"report.json: {len(merged_ids)} distinct servers in {sum(merged_ids.values())} entries, "
                f"the fleet has {len(fleet_ids)}"
            )
        collected = sum(1 for entry in merged["servers"] if entry["state"] == "collected")
        if collected != len(fleet_ids) or merged["totals"].get("servers") != len(fleet_ids):
            problems.append(f"report.json: {collected} collected, totals say {merged['totals']}")
    return {
        "coverage_ok": not problems,
        "servers_per_shard": per_shard,
        "merged_servers": sum(merged_ids.values()),
        "merged_distinct": len(merged_ids),
        "coverage_problems": problems[:5],
    }


def load_report_file(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def makespan_split(stats: dict[str, Any], started: float, ended: float, rate_limit: float | None) -> dict[str, Any]:
    """Where the makespan went, from the simulator's timeline of API requests.

    `started` and `ended` are the clients' first start and last exit on time.monotonic(),
    the simulator's clock too (see `SimProcess.stats`). The makespan is startup (until the
    first API request: loading the inventory, opening the journal) + seconds at the limit
    (1 s windows in which the gateway accepted at least 90 % of its limit) + seconds below it
    (the ramp, lulls, and the end: the last exports, their polls and downloads). Also: the
    ramp (until the first 5 s at 90 % of the limit), the time from the last accepted export
    to the end, and accepted requests per second, over the run and in 10 s windows (all, and
    by operation).
    """
    t0 = started - stats["clock_t0"]
    end = ended - stats["clock_t0"]
    timeline = [(t, op, status) for t, op, status in stats["timeline"] if op != "storage"]
    accepted = [t for t, _, status in timeline if status != 429]
    if not accepted:
        return {}
    first = min(t for t, _, _ in timeline)
    last_export = max((t for t, op, status in timeline if op == "export" and status == 202), default=first)

    def per_window(width: float) -> dict[int, int]:
        counts: dict[int, int] = {}
        for t in accepted:
            counts[int((t - first) // width)] = counts.get(int((t - first) // width), 0) + 1
        return counts

    tens = per_window(10)
    split: dict[str, Any] = {"startup_s": first - t0}
    if rate_limit:
        seconds, fives = per_window(1), per_window(5)
        at_limit = sum(1 for n in seconds.values() if n >= 0.9 * rate_limit)
        split.update(
            {
                "at_limit_s": float(at_limit),
                "below_limit_s": end - first - at_limit,
                "ramp_s": next((i * 5.0 for i in sorted(fives) if fives[i] / 5 >= 0.9 * rate_limit), None),
            }
        )
    by_op: dict[str, list[float]] = {}
    for t, op, status in timeline:
        if status != 429:
            row = by_op.setdefault(op, [0.0] * (max(tens) + 1))
            row[int((t - first) // 10)] += 0.1
    split.update(
        {
            "after_last_export_s": end - last_export,
            "accepted_per_s": len(accepted) / max(1e-9, max(accepted) - first),
            "accepted_per_s_by_10s": [round(tens.get(i, 0) / 10, 1) for i in range(max(tens) + 1)],
            "accepted_per_s_by_10s_by_op": {op: [round(x, 1) for x in row] for op, row in sorted(by_op.items())},
        }
    )
    return split


def archive_summary(check: Any) -> dict[str, Any]:
    return {
        "archives_correct": check.ok,
        "archives_checked": check.checked,
        "archive_problems": check.problems[:5],
        "archive_problem_count": len(check.problems),
    }


def shown(command: list[str], root: Path) -> str:
    """`command` as typed, with this run's temporary folder written ROOT."""
    return shlex.join(["python" if part == PYTHON else part for part in command]).replace(str(root), "ROOT")


def run_sharded(
    config: SimConfig, args: argparse.Namespace, root: Path, extra: list[str], bandwidth: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    workdir = root / "sharded"
    out = workdir / "out"
    workdir.mkdir(parents=True)
    with SimProcess(config, workdir) as sim:
        rtt = sim.round_trip_s()
        bound = lower_bound(config, bandwidth, rtt)
        commands = [
            collector_command(sim.inventory, out, ["--shard", f"{k}/{args.shards}", *extra]) for k in range(args.shards)
        ]
        note(
            f"{args.shards} shards x ~{config.servers // args.shards} servers, one gateway at "
            f"{config.rate_limit or 0:g} req/s ..."
        )
        with ThreadPoolExecutor(max_workers=args.shards) as pool:
            runs = list(pool.map(lambda command: run_measured(command, timeout=args.timeout), commands))
        stats = sim.stats()
    records: list[dict[str, Any]] = [
        {
            "bench": "shards",
            "kind": "setup",
            "code": code_version(),
            "servers": config.servers,
            "shards": args.shards,
            "export_seconds": list(config.export_seconds),
            "archive_bytes": list(config.archive_bytes),
            "rate_limit": config.rate_limit,
            "seed": config.seed,
            "collector_args": extra,
            "loopback_MiB_per_s": round(bandwidth["bytes_per_s"] / MIB, 1),
            "rtt_ms": round(rtt * 1000, 3),
            "command": shown(commands[0], root).replace("--shard 0/", "--shard K/"),
            **round_floats(bound),
        }
    ]
    for index, run in enumerate(runs):
        shard_report = load_report_file(out / f"report.shard-{index}-of-{args.shards}.json") or {}
        record = {
            "bench": "shards",
            "kind": "shard",
            "shard": f"{index}/{args.shards}",
            "exit_code": run.exit_code,
            "wall_s": run.wall_s,
            "started_after_s": run.started - runs[0].started,
            "peak_rss_mb": run.peak_rss_mb,
            "cpu_s": run.cpu_s,
            "totals": shard_report.get("totals"),
            "killed_at_timeout": run.wall_s >= args.timeout,
        }
        if run.exit_code != 0:
            record["stderr_tail"] = run.stderr[-2000:]
        records.append(round_floats(record))

    note("collector merge ...")
    merge_command = [PYTHON, "-m", "collector", "merge", str(out)]
    merge = run_measured(merge_command, timeout=args.timeout)
    note("checking coverage and every archive ...")
    coverage = check_coverage(config, out, args.shards)
    archives = check_archives(config, out, report=load_report(out))
    makespan = max(r.ended for r in runs) - min(r.started for r in runs)
    ok = coverage["coverage_ok"] and archives.ok and merge.exit_code == 0 and all(r.exit_code == 0 for r in runs)
    merge_record = {
        "bench": "shards",
        "kind": "merge",
        "command": shown(merge_command, root),
        "exit_code": merge.exit_code,
        "wall_s": merge.wall_s,
        "peak_rss_mb": merge.peak_rss_mb,
        "cpu_s": merge.cpu_s,
        "output_tail": (merge.stdout + merge.stderr)[-600:],
    }
    records.append(round_floats(merge_record))
    metrics = sweep_metrics(config, stats)
    summary = {
        "bench": "shards",
        "kind": "sharded",
        "servers": config.servers,
        "shards": args.shards,
        "correct": ok,
        **coverage,
        **archive_summary(archives),
        "makespan_s": makespan,
        "makespan_with_merge_s": merge.ended - min(r.started for r in runs),
        "lower_bound_s": bound["lower_bound_s"],
        "binding": bound["binding"],
        "ratio": makespan / bound["lower_bound_s"],
        "slowest_shard_s": max(r.wall_s for r in runs),
        "fastest_shard_s": min(r.wall_s for r in runs),
        "peak_rss_mb_max": max(r.peak_rss_mb for r in runs),
        "peak_rss_mb_sum": sum(r.peak_rss_mb for r in runs),
        "cpu_s_sum": sum(r.cpu_s for r in runs),
        "cpu_ms_per_server": sum(r.cpu_s for r in runs) * 1000 / max(1, config.servers),
        **metrics,
        "target_429_le_5pct": metrics["share_429"] <= 0.05,
        **makespan_split(stats, min(r.started for r in runs), max(r.ended for r in runs), config.rate_limit),
    }
    records.append(round_floats(summary))
    return records, ok


def run_single(
    config: SimConfig, args: argparse.Namespace, root: Path, extra: list[str], bound_s: float
) -> tuple[dict[str, Any], bool]:
    workdir = root / "single"
    out = workdir / "out"
    workdir.mkdir(parents=True)
    with SimProcess(config, workdir) as sim:
        command = collector_command(sim.inventory, out, extra)
        note(f"one process, {config.servers} servers, same gateway limit ...")
        run = run_measured(command, timeout=args.timeout)
        stats = sim.stats()
    note("checking every archive ...")
    report = load_report(out)
    archives = check_archives(config, out, report=report)
    ids = Counter(entry["server_id"] for entry in (report or {}).get("servers", []))
    coverage_ok = set(ids) == set(Fleet(config).ids) and all(n == 1 for n in ids.values())
    ok = run.exit_code == 0 and archives.ok and coverage_ok
    record = {
        "bench": "shards",
        "kind": "single",
        "command": shown(command, root),
        "servers": config.servers,
        "exit_code": run.exit_code,
        "correct": ok,
        "coverage_ok": coverage_ok,
        **archive_summary(archives),
        "makespan_s": run.wall_s,
        "lower_bound_s": bound_s,
        "ratio": run.wall_s / bound_s,
        "peak_rss_mb": run.peak_rss_mb,
        "cpu_s": run.cpu_s,
        "cpu_ms_per_server": run.cpu_s * 1000 / max(1, config.servers),
        **sweep_metrics(config, stats),
        **makespan_split(stats, run.started, run.ended, config.rate_limit),
    }
    if run.exit_code != 0:
        record["stderr_tail"] = run.stderr[-2000:]
    return round_floats(record), ok


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SimConfig(
        servers=args.servers,
        seed=args.seed,
        export_seconds=parse_range(args.export_seconds),
        archive_bytes=parse_bytes_range(args.archive_bytes),
        rate_limit=args.rate_limit or None,
    )
    extra = shlex.split(args.collector_args)
    root = Path(tempfile.mkdtemp(prefix="bench-shards-", dir=args.workdir))
    load_before = _load()
    try:
        note("measuring loopback bandwidth ...")
        bandwidth = loopback_bandwidth(root / "probe")
        records, ok = run_sharded(config, args, root, extra, bandwidth)
        records[0]["load_before"] = load_before
        for record in records:
            emit(record)
        sharded = records[-1]
        if not args.no_single:
            single, single_ok = run_single(config, args, root, extra, sharded["lower_bound_s"])
            emit(single)
            ok &= single_ok
            emit(
                {
                    "bench": "shards",
                    "kind": "compare",
                    "servers": config.servers,
                    "shards": args.shards,
                    "sharded_makespan_s": sharded["makespan_s"],
                    "single_makespan_s": single["makespan_s"],
                    "speedup": round(single["makespan_s"] / sharded["makespan_s"], 3),
                    "sharded_share_429": sharded["share_429"],
                    "single_share_429": single["share_429"],
                    "sharded_requests_per_server": sharded["requests_per_server"],
                    "single_requests_per_server": single["requests_per_server"],
                    "sharded_peak_rss_mb_max": sharded["peak_rss_mb_max"],
                    "sharded_peak_rss_mb_sum": sharded["peak_rss_mb_sum"],
                    "single_peak_rss_mb": single["peak_rss_mb"],
                    "sharded_cpu_ms_per_server": sharded["cpu_ms_per_server"],
                    "single_cpu_ms_per_server": single["cpu_ms_per_server"],
                    **{
                        f"{kind}_{key}": record.get(key)
                        for kind, record in (("sharded", sharded), ("single", single))
                        for key in ("startup_s", "ramp_s", "at_limit_s", "below_limit_s", "accepted_per_s")
                    },
                }
            )
        emit({"bench": "shards", "kind": "load", "before": load_before, "after": _load()})
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine disturbs a run."""
    with open("/proc/loadavg") as file:
        return [float(x) for x in file.read().split()[:3]]


if __name__ == "__main__":
    sys.exit(main())
