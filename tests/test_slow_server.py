"""A slow server is not a dead endpoint (issue 14, section 4), through the command line.

Three servers whose export POST trickled a byte a second, in a fleet of 50 the API answered,
ended the whole run after 690 s with exit 4 ("API unreachable", the three pending). Now those
three fail on their own after a few tries and the others are collected; an endpoint whose
every request times out is still an outage, ridden out and given up with exit 4. The read
timeout is shortened to keep the tests quick; `benchmarks/slow_server.py` measures the case
with default flags.
"""

from __future__ import annotations

import json

import anyio
import pytest
from _listing import collector_run

from collector.control.endpoint import OWN_TIMEOUTS
from collector.errors import ExitCode
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))
TRICKLES = 20  # more trickled answers than any retry policy would ask for


async def test_three_trickling_servers_in_fifty_fail_on_their_own_and_the_rest_is_collected(tmp_path):
    async with Simulator(SimConfig(servers=50, seed=14, **SMALL)) as sim:
        slow = [sim.server_ids[0], sim.server_ids[25], sim.server_ids[49]]
        for server_id in slow:
            sim.script(server_id, export=["trickle"] * TRICKLES)
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        out = tmp_path / "out"
        code, _, stderr = await collector_run(
            inventory, out, "--read-timeout", "2", "--poll-interval", "0.1", "--no-progress"
        )
        # A trickle the client left is recorded when the simulator notices (within a second):
        # wait for that, not for a time, before counting.
        with anyio.move_on_after(10):
            while (posts := [sim.count("export", server_id=s) for s in slow]) != [OWN_TIMEOUTS] * 3:
                await anyio.sleep(0.05)
    assert code == ExitCode.PARTIAL, stderr
    report = json.loads((out / "report.json").read_text())
    servers = {entry["server_id"]: entry for entry in report["servers"]}
    for server_id in slow:
        entry = servers.pop(server_id)
        assert entry["state"] == "failed" and entry["error_kind"] == "timeout", entry
        assert f"export request timed out {OWN_TIMEOUTS} times (no answer in 2 s)" in entry["error"]
    assert {entry["state"] for entry in servers.values()} == {"collected"} and len(servers) == 47
    assert "3 x timeout" in stderr and "API unreachable" not in stderr and "stopped answering" not in stderr
    assert posts == [OWN_TIMEOUTS] * 3  # a timed-out POST costs fewer tries than a refused one (8)


async def test_an_endpoint_whose_every_request_times_out_is_still_ridden_out_and_given_up(tmp_path):
    """Every export answered at once, then every poll of every server trickles: nothing
    answers anyone any more. That is an outage: paused, probed, given up with exit 4, every
    server pending, none failed as a slow server."""
    async with Simulator(SimConfig(servers=10, seed=15, **SMALL)) as sim:
        for server_id in sim.server_ids:
            sim.script(server_id, status=["trickle"] * TRICKLES)
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        out = tmp_path / "out"
        code, _, stderr = await collector_run(
            inventory,
            out,
            *("--rate", "1000", "--poll-interval", "1", "--read-timeout", "1", "--outage-timeout", "6"),
            "--no-progress",
        )
        exports = sim.count("export")
    assert code == ExitCode.UNREACHABLE, stderr
    assert exports == 10
    assert "stopped answering" in stderr and "no answer for 6 s (--outage-timeout)" in stderr
    report = json.loads((out / "report.json").read_text())
    assert {entry["state"] for entry in report["servers"]} == {"pending"}
    assert all("API unreachable" in entry["error"] for entry in report["servers"])
