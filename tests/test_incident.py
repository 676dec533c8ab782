"""Incident sweeps (issue 15): a time box (--deadline), suspects first (--first) and the run
without an inventory, each through the command line against the simulator over loopback."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from _listing import collector, collector_run

from collector.errors import ExitCode
from collector.simulator import SimConfig, Simulator
from collector.sweep.journal import Journal

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

SMALL = dict(archive_bytes=(4096, 8192))
QUIET = ["--no-progress"]


def report_of(out):
    return json.loads((out / "report.json").read_text())


def journal_exports(out) -> dict[str, str]:
    """Each server's last export id, as the journal recorded it."""
    journal = Journal.open(out)
    try:
        return {server_id: entry.export_id for (_, server_id), entry in journal.entries().items() if entry.export_id}
    finally:
        journal.shutdown()


# -- --deadline -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_deadline_ends_the_run_and_the_same_command_finishes_it_without_exporting_twice(tmp_path):
    """Exports of 0.1 to 12 s, a deadline of 4 s: the quick ones are collected, the slow ones
    pending with the reason `deadline`, exit 6; run again, every server is collected and none
    was exported twice."""
    config = SimConfig(servers=16, seed=21, export_seconds=(0.1, 12.0), **SMALL)
    async with Simulator(config) as sim:
        quick = {sid for sid in sim.server_ids if sim.server(sid).export_seconds < 1.0}
        slow = {sid for sid in sim.server_ids if sim.server(sid).export_seconds > 8.0}
        assert quick and slow  # the seed draws both
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        out = tmp_path / "out"
        code, _, stderr = await collector_run(inventory, out, "--deadline", "4s", *QUIET)
        assert code == ExitCode.DEADLINE, stderr
        report = report_of(out)
        states = {s["server_id"]: s for s in report["servers"]}
        assert report["run"]["stopped"] == "deadline"
        assert all(states[sid]["state"] == "collected" for sid in quick), stderr
        for sid in slow:
            assert states[sid]["state"] == "pending"
            assert states[sid]["error"] == "not collected: the deadline (4s) came first"
        assert re.search(r"\d+ x deadline", stderr), stderr
        # The slow servers' exports were asked for and are in the journal: the next run polls them.
        assert slow <= set(journal_exports(out))

        code, _, stderr = await collector_run(inventory, out, "--deadline", "60s", *QUIET)
        assert code == ExitCode.OK, stderr
        assert all(s["state"] == "collected" for s in report_of(out)["servers"])
        assert set(sim.exports_started) == set(sim.server_ids)
        assert max(sim.exports_started.values()) == 1, sim.exports_started


async def test_a_deadline_already_past_is_a_usage_error_before_any_request(tmp_path):
    async with Simulator(SimConfig(servers=2, seed=22, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--deadline", "2020-01-01T00:00Z", *QUIET)
        assert sim.count() == 0
    assert code == ExitCode.USAGE
    assert re.search(r"--deadline 2020-01-01T00:00Z: that time is past \(it is 20\d\d-", stderr), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out" / ".collector").exists()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("soon", "expected a duration like 15m or 90s, or a time like 2026-12-06T21:00Z, got 'soon'"),
        ("2026-12-06T21:00", "has no zone: add Z for UTC, or an offset like +08:00"),
        ("0s", "a deadline must be later than the start"),
    ],
)
async def test_a_deadline_that_is_not_one_is_one_line_and_exit_2(tmp_path, value, words):
    code, _, stderr = await collector(
        "run", "-i", str(tmp_path / "none.yaml"), "-o", str(tmp_path), "--deadline", value
    )
    assert code == ExitCode.USAGE
    assert words in stderr, stderr


async def test_the_inventory_may_set_the_deadline_and_a_bad_one_names_its_line(tmp_path):
    async with Simulator(SimConfig(servers=2, seed=23, stuck=1, export_seconds=(0.05, 0.1), **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        document = yaml.safe_load(inventory.read_text())
        document["collector"] = {"deadline": "3s"}
        inventory.write_text(yaml.safe_dump(document))
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--poll-interval", "0.2", *QUIET)
        assert code == ExitCode.DEADLINE, stderr
        (stuck,) = sim.fleet.stuck_ids
        states = {s["server_id"]: s for s in report_of(tmp_path / "out")["servers"]}
        assert states[stuck]["error"] == "not collected: the deadline (3s) came first"
        assert [s["state"] for sid, s in states.items() if sid != stuck] == ["collected"]

        document["collector"] = {"deadline": "tomorrow"}
        inventory.write_text(yaml.safe_dump(document))
        code, _, stderr = await collector_run(inventory, tmp_path / "out2", *QUIET)
    assert code == ExitCode.USAGE
    assert re.search(r"inventory\.yaml:\d+: collector\.deadline: expected a duration", stderr), stderr
