"""`collector demo`: a real sweep of a simulated fleet, to see what collector does in a minute.

Starts the simulator on loopback (200 servers, exports of a few seconds, a gateway limit below
collector's default rate so throttling shows, and a few 500s and cut-off downloads to retry), writes an inventory for it, and runs the same
sweep `collector run` does, with the same defaults.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import anyio

from collector.cli import _print_summary, exit_code, prepare_output, settings_from, sweep_fleet
from collector.logs import configure_logging
from collector.errors import ExitCode
from collector.inventory import load_inventory
from collector.simulator import SimConfig, Simulator

DEMO_RATE_LIMIT = 15.0  # requests/s the simulated gateway allows: below our default 20


async def _demo(servers: int, args: argparse.Namespace, out_dir: Path, live: bool):
    config = SimConfig(
        servers=servers,
        export_seconds=(1.0, 6.0),
        archive_bytes=(64 * 1024, 512 * 1024),
        rate_limit=DEMO_RATE_LIMIT,
        fault_500=0.02,  # a few 500s and cut-off downloads, retried: the demo should still end in 0
        fault_truncate=0.02,
        seed=7,
    )
    async with Simulator(config) as sim:
        with tempfile.TemporaryDirectory(prefix="collector-demo-") as folder:
            inventory_path = Path(folder) / "inventory.yaml"
            sim.write_inventory(inventory_path)
            inventory = load_inventory(inventory_path)
            print(
                f"demo: simulated CloudDC at {sim.url}: {servers} servers, gateway limit "
                f"{DEMO_RATE_LIMIT:g} requests/s, a few injected faults",
                file=sys.stderr,
            )
            # A new simulator each time: nothing to resume.
            return await sweep_fleet(inventory, settings_from(args, inventory), out_dir, live=live, fresh=True)


def run_demo(args: argparse.Namespace) -> ExitCode:
    out_dir = prepare_output(args.output)
    configure_logging(args.log_format or "text", args.verbose)
    live = not args.no_progress and sys.stderr.isatty()
    outcome = anyio.run(functools.partial(_demo, args.servers, args, out_dir, live))
    _print_summary(outcome, out_dir)
    code = exit_code(outcome)
    print(f"demo finished with exit code {int(code)} ({code.name})", file=sys.stderr)
    return code
