"""A few slow servers in a healthy fleet: issue 14 section 4's case, with default flags.

A fleet of `--servers` (50) in which `--slow` (3) servers answer every export POST one byte a
second (the simulator's ``trickle``), while the API answers every other request normally.
``collector run`` with its default settings (``--read-timeout 60``) in its own process; one
JSON line: wall and CPU seconds, the exit code, the servers collected, failed and pending,
the slow servers' states and reasons, and the export POSTs each slow server cost.

Before issue 14 the run ended after about 690 s with exit 4 ("API unreachable", the slow
servers pending): their timeouts, once nothing else was in flight, looked like an outage.
Now the slow servers fail on their own (reason ``timeout``, 3 POSTs each) and the run ends
with exit 1 in about three read timeouts.

The simulator runs in this process (a thread runs its event loop) so it can be scripted.
``--pythonpath DIR`` runs the collector from another source tree (an older build, to compare).

    python benchmarks/slow_server.py [--servers 50] [--slow 3] [--pythonpath DIR] [-- FLAGS...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import threading
from collections import Counter
from pathlib import Path

from _common import code_version, collector_command, emit, note, run_measured

from collector.simulator import Simulator
from collector.simulator.config import SimConfig

GROUP = re.compile(r"^\s+\d+ x ")  # the summary's lines of failed or pending servers, grouped by reason
TRICKLES = 20  # scripted trickles per slow server: more than any retry policy spends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--slow", type=int, default=3)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--pythonpath", help="run the collector from this source tree")
    parser.add_argument("flags", nargs="*", help="extra flags for collector run (after --)")
    args = parser.parse_args()
    config = SimConfig(servers=args.servers, seed=args.seed, export_seconds=(5.0, 15.0))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim = Simulator(config)
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result()
        ids = sim.server_ids
        slow = [ids[(index * len(ids)) // args.slow] for index in range(args.slow)]  # spread over the fleet
        for server_id in slow:
            sim.script(server_id, export=["trickle"] * TRICKLES)
        with tempfile.TemporaryDirectory(prefix="slow-server-") as work:
            root = Path(work)
            inventory = sim.write_inventory(root / "inventory.yaml")
            if args.pythonpath:
                os.environ["PYTHONPATH"] = args.pythonpath  # the child's only
            note(f"{args.servers} servers, {args.slow} trickling their export POST; collector run {args.flags}")
            measured = run_measured(collector_command(inventory, root / "out", args.flags), timeout=1800)
            report = json.loads((root / "out" / "report.json").read_text())
        posts = {server_id: sim.count("export", server_id=server_id) for server_id in slow}
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    states = Counter(entry["state"] for entry in report["servers"])
    by_id = {entry["server_id"]: entry for entry in report["servers"]}
    emit(
        {
            "servers": args.servers,
            "slow": args.slow,
            "flags": args.flags,
            "pythonpath": args.pythonpath,
            "exit_code": measured.exit_code,
            "wall_s": round(measured.wall_s, 1),
            "cpu_s": round(measured.cpu_s, 2),
            "collected": states["collected"],
            "failed": states["failed"],
            "pending": states["pending"],
            "slow_servers": [
                {"state": by_id[sid]["state"], "kind": by_id[sid].get("error_kind"), "posts": posts[sid]}
                for sid in slow
            ],
            "slow_error": by_id[slow[0]].get("error"),
            "summary_groups": [line.strip() for line in measured.stderr.splitlines() if GROUP.match(line)],
            **code_version(),
        }
    )


if __name__ == "__main__":
    main()
