"""An incident sweep against a time box (issue 15): `--deadline` on a fleet whose exports take
longer than the box, then the same command again; and `--first` on the same fleet.

Deadline trial: a simulator in its own process (300 servers, exports 5-60 s by default),
`collector run --deadline 40s`, then the same command without a deadline. Prints one JSON line:

- `first_exit` (6 when the deadline cut servers off), `first_wall_s` (must be within the
  deadline plus 5 s), and `collected` against `ready_5s_before`: the exports the simulator had
  finished at least 5 s before the deadline (the deadline placed on the simulator's clock from
  the run's first request, so a little late: this errs towards counting more);
- `pending_deadline`: servers pending with the deadline's error;
- the re-run's exit code, whether every archive is exact, and `exported_twice` (must be 0).

First trial: `--first @suspects.txt` naming `--suspects` servers spread over the inventory; the
first export requests the simulator saw (its `exports_by_server`, in the order of each
server's first export) against the suspects: `first_exports_are_suspects` must be true.

    python benchmarks/incident.py [--servers 300] [--deadline 40] [--export-seconds 5-60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import (
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    emit,
    load_report,
    note,
    parse_bytes_range,
    parse_range,
    run_measured,
)

from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet


def deadline_trial(config: SimConfig, deadline: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-deadline-") as folder, SimProcess(config, Path(folder)) as sim:
        out = Path(folder) / "out"
        state = Path(folder) / "state"
        first = run_measured(collector_command(sim.inventory, out, ["--deadline", f"{deadline:g}s"]), state=state)
        stats = sim.stats()
        report = load_report(out) or {"servers": []}
        began = min(t for t, _, _ in stats["timeline"])
        ready = sum(1 for _, end in stats["export_spans"] if end <= began + deadline - 5)
        states = [s["state"] for s in report["servers"]]
        cut = sum(1 for s in report["servers"] if "deadline" in (s.get("error") or ""))
        note(f"deadline run: exit {first.exit_code} in {first.wall_s:.1f} s; {states.count('collected')} collected")

        started = time.monotonic()
        rerun = run_measured(collector_command(sim.inventory, out), state=state)
        check = check_archives(config, out, report=load_report(out))
        after = sim.stats(timeline=False)
        return {
            "trial": "deadline",
            "servers": config.servers,
            "export_seconds": list(config.export_seconds),
            "deadline_s": deadline,
            "first_exit": first.exit_code,
            "first_wall_s": round(first.wall_s, 2),
            "collected": states.count("collected"),
            "ready_5s_before": ready,
            "pending_deadline": cut,
            "rerun_exit": rerun.exit_code,
            "rerun_s": round(time.monotonic() - started, 2),
            **check.summary(),
            "exported_twice": after["exports_started"] - after["servers_exported"],
            **code_version(),
        }


def first_trial(config: SimConfig, suspects: int) -> dict:
    ids = [profile.id for profile in Fleet(config).profiles]
    chosen = ids[:: max(1, len(ids) // suspects)][:suspects]
    with tempfile.TemporaryDirectory(prefix="bench-first-") as folder, SimProcess(config, Path(folder)) as sim:
        listed = Path(folder) / "suspects.txt"
        listed.write_text("\n".join(chosen) + "\n")
        out = Path(folder) / "out"
        run = run_measured(collector_command(sim.inventory, out, ["--first", f"@{listed}"]))
        order = [server_id for server_id, _ in sim.stats()["exports_by_server"]]
        return {
            "trial": "first",
            "servers": config.servers,
            "suspects": len(chosen),
            "exit": run.exit_code,
            "wall_s": round(run.wall_s, 2),
            "first_exports_are_suspects": set(order[: len(chosen)]) == set(chosen),
            "suspects_among_first_exports": len(set(order[: len(chosen)]) & set(chosen)),
            **code_version(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--deadline", type=float, default=40.0, help="seconds (default 40)")
    parser.add_argument("--suspects", type=int, default=30)
    parser.add_argument("--export-seconds", default="5-60")
    parser.add_argument("--archive-bytes", default="256K-1M")
    parser.add_argument("--rate-limit", type=float, default=100.0)
    args = parser.parse_args()
    config = SimConfig(
        servers=args.servers,
        export_seconds=parse_range(args.export_seconds),
        archive_bytes=parse_bytes_range(args.archive_bytes),
        rate_limit=args.rate_limit,
        seed=15,
    )
    deadline = deadline_trial(config, args.deadline)
    emit(deadline)
    first = first_trial(config, args.suspects)
    emit(first)
    ok = (
        deadline["first_wall_s"] <= args.deadline + 5
        and deadline["collected"] >= deadline["ready_5s_before"]
        and deadline["rerun_exit"] == 0
        and deadline["correct"]
        and deadline["exported_twice"] == 0
        and first["first_exports_are_suspects"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
