"""`collector demo`: a real sweep of a simulated fleet, to see what collector does in a minute.

Starts the simulator on loopback (200 servers, exports of a few seconds, a gateway limit below
collector's default rate so throttling shows, and a few 500s and cut-off downloads to retry),
writes an inventory for it, and calls the same runner `collector run` does, with the same
defaults.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import anyio

from collector.cli.logs import configure_logging
from collector.config.inventory import load_inventory
from collector.config.settings import Settings, given, resolve
from collector.errors import ExitCode
from collector.run.outcome import Outcome
from collector.run.paths import prepare_output
from collector.run.present import finish
from collector.run.runner import run_sweep
from collector.simulator import SimConfig, Simulator
from collector.text import say

DEMO_RATE_LIMIT = 15.0  # requests/s the simulated gateway allows: below our default 20


async def _demo(servers: int, settings: Settings, output: Path, live: bool) -> Outcome:
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
            say(
                f"demo: simulated CloudDC at {sim.url}: {servers} servers, gateway limit "
                f"{DEMO_RATE_LIMIT:g} requests/s, a few injected faults",
                file=sys.stderr,
            )
            # A new simulator each time: nothing to resume.
            return await run_sweep(inventory, settings, output, fresh=True, live=live)


def run_demo(args: argparse.Namespace) -> ExitCode:
    prepare_output(args.output)  # a folder we cannot write to is said before the simulator starts
    settings = resolve(given(args))
    configure_logging(settings.log_format, args.verbose or 0)
    live = settings.progress and sys.stderr.isatty()
    outcome = anyio.run(functools.partial(_demo, args.servers, settings, args.output, live))
    code = finish(outcome, settings.log_format)
    say(f"demo finished with exit code {int(code)} ({code.name})", file=sys.stderr)
    return code
