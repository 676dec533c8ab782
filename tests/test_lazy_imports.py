"""What a plain `collector run` to a folder does not use, it does not import (issue 14: every
MB of a run's baseline counts toward the memory targets). Through a real run, in its own
process: the live display's rich, the metrics' prometheus_client, S3's aiobotocore and
`collector grep`'s search stay out."""

from __future__ import annotations

import json
import sys

import anyio
import pytest

from collector.simulator.config import SimConfig
from collector.simulator.server import Simulator

# The run, as `python -m collector` runs it, then the heavy modules it left out of sys.modules.
PROBE = """
import json, runpy, sys
sys.argv = ["collector", *sys.argv[1:]]
try:
    runpy.run_module("collector", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
heavy = ("rich", "prometheus_client", "aiobotocore", "botocore", "collector.grep.search")
print(json.dumps({"code": code, "loaded": [name for name in heavy if name in sys.modules]}))
"""


@pytest.mark.anyio
async def test_a_run_to_a_folder_without_a_terminal_loads_no_display_metrics_s3_or_grep(tmp_path):
    async with Simulator(SimConfig(servers=3, seed=1, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        done = await anyio.run_process(
            [sys.executable, "-c", PROBE, "run", "-i", str(inventory), "-o", str(tmp_path / "out"), "--no-progress"],
            check=False,
        )
    outcome = json.loads(done.stdout.decode().splitlines()[-1])
    assert outcome == {"code": 0, "loaded": []}, done.stderr.decode()[-2000:]
