"""Fleet sweep benchmark: `collector run` against a simulated fleet, measured against a lower bound.

Each run starts a fresh simulator process (``collector simulate``), runs ``collector run`` as a
child process with default settings (plus ``--collector-args``), and measures:

- makespan: wall time of the collector process, start to exit;
- peak RSS and CPU seconds of that process (from ``os.wait4``'s rusage);
- from the simulator's ``GET /_sim/stats``: requests per server, the share answered 429,
  exports started per server, the peak of concurrently running exports;
- correctness: exit code 0, and every archive on disk has exactly the size and sha256 the
  simulator serves (regenerated here from the seed) and that report.json states.

The lower bound is the largest of (each term is printed with how it was computed):

- export: the slowest export in the fleet + one request round trip (measured);
- rate: (3 x servers - burst) / rate limit: one POST, one poll and one download per server
  is the minimum, and the gateway's bucket starts full with `burst` tokens (``--rate-burst``,
  by default a second's worth: max(1, rate));
- flow: the rate term's requests cannot all be sent early: a poll finds an export done only
  after its POST and its whole duration, so the exports' ends, and the polls and downloads
  after them, bunch up late (`collector.sweep.plan.flow_bound`: for 600 servers of 5-15 s
  at 100 req/s, burst 20, it is 18.76 s where the rate term says 17.8 s);
- export cap: sum of export durations / max concurrent exports, when there is a cap;
- bytes: total archive bytes / loopback bandwidth (one simulator process to curl, measured).

With ``--second-run``, each run is followed by a second ``collector run`` against the same
simulator into a new folder with the same state folder, so it starts from what the first
learned (`collector.run.learned`: the request rate and the export-time distribution); its
record says ``"pass": 2`` and counts only its own requests. The medians are per pass.

One JSON line per run, then a median line; with ``--peer`` also the official-SDK script
(`peer_sdk.py`) against a fresh simulator with the same settings, and a comparison line.
Exits 1 if any run's result was wrong (non-zero exit, missing or incorrect archives).

    python benchmarks/sweep.py --servers 2000 --export-seconds 5-15 --archive-bytes 256K-1M \\
        --rate-limit 100 --runs 3 --plot sweep.png --peer
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    SimProcess,
    api_requests,
    check_archives,
    code_version,
    collector_command,
    emit,
    load_report,
    loopback_bandwidth,
    median_record,
    note,
    parse_bytes_range,
    parse_range,
    round_floats,
    run_measured,
)

from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet
from collector.sweep.plan import flow_bound

MEDIAN_KEYS = (
    "makespan_s",
    "collector_duration_s",
    "ratio",
    "requests_per_server",
    "share_429",
    "peak_rss_mb",
    "cpu_s",
    "cpu_ms_per_server",
    "peak_running_exports",
    "exports_started_max_per_server",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--export-seconds", default="5-15", metavar="LO-HI")
    parser.add_argument("--archive-bytes", default="256K-1M", metavar="LO-HI")
    parser.add_argument("--rate-limit", type=float, default=100.0, help="API requests/s; 0 for none (default 100)")
    parser.add_argument(
        "--rate-burst",
        type=float,
        default=None,
        metavar="N",
        help="requests the API's bucket lets through at once (default: a second's worth of --rate-limit)",
    )
    parser.add_argument("--max-concurrent-exports", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--collector-args", default="", help='extra `collector run` flags, e.g. "--rate 100"')
    parser.add_argument("--plot", type=Path, help="PNG of in-flight exports, requests/s and 429s (last run)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="one extra, unmeasured run under py-spy: flame graph (.svg), speedscope (.json), collapsed stacks (.txt)",
    )
    parser.add_argument("--peer", action="store_true", help="also run the official-SDK script (peer_sdk.py)")
    parser.add_argument("--peer-workers", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a collector run may take")
    parser.add_argument("--workdir", type=Path, help="where runs write (default: a temporary folder, removed)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (under 30 s)")
    parser.add_argument(
        "--second-run",
        action="store_true",
        help="after each run, another into a new folder with the same state folder (what was learned kept)",
    )
    return parser


def sim_config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        servers=args.servers,
        seed=args.seed,
        export_seconds=parse_range(args.export_seconds),
        archive_bytes=parse_bytes_range(args.archive_bytes),
        rate_limit=args.rate_limit or None,
        rate_burst=args.rate_burst,
        max_concurrent_exports=args.max_concurrent_exports,
    )


def lower_bound(config: SimConfig, bandwidth: dict[str, Any], rtt_s: float) -> dict[str, Any]:
    fleet = Fleet(config)
    durations = [p.export_seconds for p in fleet.profiles]
    total_bytes = sum(p.archive_bytes for p in fleet.profiles)
    terms: dict[str, float] = {}
    how: dict[str, str] = {}
    terms["export_s"] = max(durations, default=0.0) + rtt_s
    how["export_s"] = (
        f"slowest export in the fleet profile ({max(durations, default=0.0):.3f} s) "
        f"+ one request round trip ({rtt_s * 1000:.2f} ms, median of 21 small requests)"
    )
    if config.rate_limit and config.burst is not None:
        burst = config.burst
        needed = 3 * config.servers
        terms["rate_s"] = max(0.0, needed - burst) / config.rate_limit
        how["rate_s"] = (
            f"(3 x {config.servers} requests - a full bucket of {burst:g}) / {config.rate_limit:g} req/s: "
            "one POST, one poll, one download per server is the minimum"
        )
        terms["flow_s"] = flow_bound(durations, config.rate_limit, burst)
        how["flow_s"] = (
            f"mean earliest export request + mean export time + ({config.servers} + 1 - {burst:g}) / "
            f"{config.rate_limit:g} req/s: every export's poll and download come after its end (flow_bound)"
        )
    if config.max_concurrent_exports:
        terms["export_cap_s"] = sum(durations) / config.max_concurrent_exports
        how["export_cap_s"] = f"sum of export durations / {config.max_concurrent_exports} concurrent exports"
    terms["bytes_s"] = total_bytes / bandwidth["bytes_per_s"]
    how["bytes_s"] = f"{total_bytes / MIB:.1f} MiB / {bandwidth['bytes_per_s'] / MIB:.0f} MiB/s ({bandwidth['how']})"
    bound = max(terms.values())
    return {
        "lower_bound_s": bound,
        "binding": max(terms, key=terms.get),
        "terms": terms,
        "how": how,
        "total_bytes": total_bytes,
        "max_export_s": max(durations, default=0.0),
    }


def sweep_metrics(config: SimConfig, stats: dict[str, Any]) -> dict[str, Any]:
    by_status = api_requests(stats)
    total = sum(by_status.values())
    return {
        "api_requests": total,
        "requests_per_server": total / max(1, config.servers),
        "requests_429": by_status.get("429", 0),
        "share_429": by_status.get("429", 0) / max(1, total),
        "requests_by_operation": {op: sum(v.values()) for op, v in stats["requests"].items()},
        "exports_started": stats["exports_started"],
        "exports_started_max_per_server": stats["exports_started_max_per_server"],
        "peak_running_exports": stats["peak_running_exports"],
    }


def run_once(
    kind: str,
    command: list[str],
    config: SimConfig,
    root: Path,
    index: int,
    *,
    timeout: float,
    rtt: list[float] | None = None,
    passes: int = 1,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One fresh simulator, `passes` measured client runs against it (each into a folder of
    its own, all with one state folder), the checks. Returns (record, stats) per pass; the
    stats of a pass after the first count only its own requests."""
    workdir = root / f"{kind}-{index}"
    workdir.mkdir(parents=True)
    results = []
    with SimProcess(config, workdir) as sim:
        if rtt is not None:
            rtt.append(sim.round_trip_s())
        before: dict[str, Any] | None = None
        for number in range(1, passes + 1):
            out_dir = workdir / ("out" if number == 1 else f"out-{number}")
            argv = [
                part.replace("{inventory}", str(sim.inventory)).replace("{out}", str(out_dir)).replace("{url}", sim.url)
                for part in command
            ]
            note(f"{kind} run {index}{f' pass {number}' if passes > 1 else ''}: {config.servers} servers ...")
            measured = run_measured(argv, timeout=timeout, state=workdir / "state" if passes > 1 else None)
            stats = sim.stats()
            results.append(_record(kind, config, index, measured, stats, before, out_dir, number, passes))
            before = stats
    # The archives stay until every run is done (the whole folder goes at the end): ext4
    # skips inodes freed in the last minute or more when it allocates new ones, so deleting
    # 10,000 archives right before the next run made that run's file creation several times
    # slower (perf: recently_deleted in __ext4_new_inode, about 11 % of the collector's CPU).
    return results


def _record(
    kind: str,
    config: SimConfig,
    index: int,
    measured: Any,
    stats: dict[str, Any],
    before: dict[str, Any] | None,
    out_dir: Path,
    number: int,
    passes: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    own = _since(stats, before)
    report = load_report(out_dir) if kind != "peer_sdk" else None
    check = check_archives(config, out_dir, report=report)
    record: dict[str, Any] = {
        "bench": "sweep",
        "tool": kind,
        "run": index,
        **({"pass": number} if passes > 1 else {}),
        "servers": config.servers,
        "exit_code": measured.exit_code,
        **check.summary(),
        "makespan_s": measured.wall_s,
        "peak_rss_mb": measured.peak_rss_mb,
        "cpu_s": measured.cpu_s,
        "cpu_ms_per_server": measured.cpu_s * 1000 / max(1, config.servers),
        **sweep_metrics(config, own),
    }
    if report is not None:
        record["collector_duration_s"] = report.get("run", {}).get("duration_s")
    if kind == "peer_sdk" and measured.stdout.strip():
        record["peer_summary"] = _last_json(measured.stdout)
    record["correct"] = check.ok and measured.exit_code == 0
    if not record["correct"]:
        record["stderr_tail"] = measured.stderr[-2000:]
    stats["_client_start_on_sim_clock"] = measured.started - stats["clock_t0"]
    stats["_client_end_on_sim_clock"] = measured.ended - stats["clock_t0"]
    return round_floats(record), stats


def _since(stats: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """The simulator's counts of requests made after `before` (a pass's own)."""
    if before is None:
        return stats
    requests = {
        operation: {status: n - before["requests"].get(operation, {}).get(status, 0) for status, n in by_status.items()}
        for operation, by_status in stats["requests"].items()
    }
    return {**stats, "requests": requests, "exports_started": stats["exports_started"] - before["exports_started"]}


def _last_json(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1 and (args.peer or args.plot):
        parser.error("--peer and --plot need at least one collector run (--runs 1 or more)")
    if args.quick:
        args.servers, args.export_seconds, args.archive_bytes = 60, "0.5-1.5", "16K-64K"
        args.runs = 1
    config = sim_config(args)
    extra = shlex.split(args.collector_args)
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-", dir=args.workdir))
    failed = False
    try:
        note("measuring loopback bandwidth ...")
        bandwidth = loopback_bandwidth(root / "probe", size=(64 if args.quick else 256) * MIB)
        rtt: list[float] = []
        records: list[dict[str, Any]] = []
        stats = first_stats = None
        bound = None
        passes = 2 if args.second_run else 1
        for index in range(1, args.runs + 1):
            command = collector_command(Path("{inventory}"), Path("{out}"), extra)
            ran = run_once(
                "collector",
                command,
                config,
                root,
                index,
                timeout=args.timeout,
                rtt=rtt if index == 1 else None,
                passes=passes,
            )
            stats = ran[-1][1]
            first_stats = ran[0][1] if passes > 1 else None
            for record, _ in ran:
                if bound is None:
                    bound = lower_bound(config, bandwidth, rtt[0])
                    emit(
                        {
                            "bench": "sweep",
                            "kind": "setup",
                            "code": code_version(),
                            "sim": _sim_summary(config),
                            "collector_args": extra,
                            "loopback_MiB_per_s": round(bandwidth["bytes_per_s"] / MIB, 1),
                            "rtt_ms": round(rtt[0] * 1000, 3),
                            **round_floats(bound),
                        }
                    )
                record["lower_bound_s"] = round(bound["lower_bound_s"], 4)
                record["ratio"] = round(record["makespan_s"] / bound["lower_bound_s"], 4)
                emit(record)
                records.append(record)
                failed |= not record["correct"]
        ours = None
        for number in range(1, passes + 1):
            mine = [r for r in records if r.get("pass", 1) == number]
            if not mine:  # --runs 0: only the profile, or only the peer
                continue
            median = {
                "bench": "sweep",
                "tool": "collector",
                "kind": "median",
                **({"pass": number} if passes > 1 else {}),
                "runs": len(mine),
                "servers": config.servers,
                "collector_args": extra,
                "lower_bound_s": round(bound["lower_bound_s"], 4),
                "all_correct": all(r["correct"] for r in mine),
                **median_record(mine, MEDIAN_KEYS),
            }
            emit(median)
            ours = ours or median
        if args.plot and stats is not None:
            _plot(stats, args.plot, f"collector {' '.join(extra) or '(defaults)'}", config, bound)
            if first_stats is not None:  # the first pass too: its start-up is another story
                _plot(first_stats, args.plot, "collector, first pass", config, bound, suffix="-pass1")
        if args.profile:
            profile(args.profile, config, root, extra, timeout=args.timeout)
        if args.peer:
            failed |= not run_peer(args, config, root, bound, ours)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def profile(path: Path, config: SimConfig, root: Path, extra: list[str], *, timeout: float) -> None:
    """The collector once more, sampled by py-spy (100 Hz, all threads, on-CPU samples only)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output_format = {".json": "speedscope", ".txt": "raw"}.get(path.suffix, "flamegraph")
    command = [
        py_spy,
        "record",
        "--rate",
        "100",
        "--format",
        output_format,
        "--output",
        str(path.resolve()),
        "--",
        *collector_command(Path("{inventory}"), Path("{out}"), extra),
    ]
    ((record, _),) = run_once("profiled", command, config, root, 1, timeout=timeout * 2)
    emit(
        {
            "bench": "sweep",
            "kind": "profile",
            "path": str(path),
            "correct": record["correct"],
            "makespan_s_under_py_spy": record["makespan_s"],
            "note": "not a measurement: py-spy slows the process and its RSS/CPU are not the collector's",
        }
    )


def run_peer(
    args: argparse.Namespace, config: SimConfig, root: Path, bound: dict[str, Any], ours: dict[str, Any]
) -> bool:
    from peer_sdk import peer_command

    command = peer_command("{url}", config, Path("{inventory}"), Path("{out}"), workers=args.peer_workers)
    ((record, stats),) = run_once("peer_sdk", command, config, root, 1, timeout=args.timeout * 4)
    record["lower_bound_s"] = round(bound["lower_bound_s"], 4)
    record["ratio"] = round(record["makespan_s"] / bound["lower_bound_s"], 4)
    emit(record)
    if args.plot:
        _plot(stats, args.plot, f"peer_sdk.py ({args.peer_workers} threads)", config, bound, suffix="-peer")
    compare = {
        "bench": "sweep",
        "kind": "compare",
        "servers": config.servers,
        "collector_makespan_s": ours.get("makespan_s"),
        "peer_sdk_makespan_s": record["makespan_s"],
        "speedup": round(record["makespan_s"] / ours["makespan_s"], 2),
        "note": "collector: median of its runs; peer_sdk: one run",
    }
    for key in ("requests_per_server", "share_429", "peak_rss_mb", "cpu_ms_per_server"):
        compare[f"collector_{key}"] = ours.get(key)
        compare[f"peer_sdk_{key}"] = record.get(key)
    emit(compare)
    return record["correct"]


def _plot(
    stats: dict[str, Any], path: Path, who: str, config: SimConfig, bound: dict[str, Any], *, suffix: str = ""
) -> None:
    """The run's plot (`plot.plot_sweep`) at `path`, its name ending in `suffix`."""
    from plot import plot_sweep

    path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
    plot_sweep(stats, path, title=f"{who}: {_sim_title(config)}", lower_bound=bound["lower_bound_s"])
    note(f"plot written to {path}")


def _sim_summary(config: SimConfig) -> dict[str, Any]:
    return {
        "servers": config.servers,
        "export_seconds": list(config.export_seconds),
        "archive_bytes": list(config.archive_bytes),
        "rate_limit": config.rate_limit,
        "rate_burst": config.rate_burst,
        "max_concurrent_exports": config.max_concurrent_exports,
        "seed": config.seed,
    }


def _sim_title(config: SimConfig) -> str:
    lo, hi = config.export_seconds
    blo, bhi = config.archive_bytes
    limit = f"{config.rate_limit:g} req/s" if config.rate_limit else "no limit"
    if config.rate_limit and config.rate_burst is not None:
        limit += f" (burst {config.rate_burst:g})"
    return f"{config.servers} servers, exports {lo:g}-{hi:g} s, archives {blo // 1024}-{bhi // 1024} KiB, {limit}"


if __name__ == "__main__":
    sys.exit(main())
