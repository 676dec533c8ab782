"""Running the same command again resumes: skip what is collected, poll what was exported."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import aiohttp
import anyio
import pytest
from _fleet import sweep

from collector.config.inventory import load_inventory
from collector.destinations.local import LocalDestination
from collector.errors import ExitCode
from collector.run.outcome import exit_code
from collector.simulator import SimConfig, Simulator
from collector.sweep.events import Events, Phase
from collector.sweep.journal import Journal, JournalError
from collector.sweep.pipeline import Sweep

pytestmark = pytest.mark.anyio

CONFIG = SimConfig(servers=12, export_seconds=(0.05, 0.15), archive_bytes=(4096, 16384), seed=11)


def journal_rows(tmp_path):
    with sqlite3.connect(tmp_path / "out" / ".collector" / "journal.db") as db:
        return {
            sid: (phase, export_id)
            for sid, phase, export_id in db.execute("SELECT server_id, phase, export_id FROM servers")
        }


async def test_rerun_skips_collected_servers_and_sends_nothing(tmp_path, fast_settings, out_dir):
    async with Simulator(CONFIG) as sim:
        await sweep(sim, tmp_path, fast_settings)
        requests_after_first = sum(sim.stats.values())
        second = await sweep(sim, tmp_path, fast_settings)
        assert sum(sim.stats.values()) == requests_after_first
    assert exit_code(second) is ExitCode.OK
    assert all(r.state == "collected" and r.attempts == 0 for r in second.results)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["totals"]["collected"] == 12
    assert all(s["sha256"] and s["bytes"] for s in report["servers"])


async def test_rerun_collects_again_an_archive_that_was_deleted(tmp_path, fast_settings, out_dir):
    async with Simulator(CONFIG) as sim:
        await sweep(sim, tmp_path, fast_settings)
        victim = sim.server_ids[3]
        path = out_dir / sim.project_id / f"{victim}-dump.tar.gz"
        path.unlink()
        second = await sweep(sim, tmp_path, fast_settings)
        assert path.read_bytes() == sim.expected_archive(victim)
        assert sim.exports_started[victim] == 2
        assert sum(sim.exports_started.values()) == 13
    assert exit_code(second) is ExitCode.OK


async def test_verify_rehashes_and_replaces_a_changed_archive(tmp_path, fast_settings, out_dir):
    async with Simulator(CONFIG) as sim:
        await sweep(sim, tmp_path, fast_settings)
        victim = sim.server_ids[5]
        path = out_dir / sim.project_id / f"{victim}-dump.tar.gz"
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF  # same size, different bytes
        path.write_bytes(bytes(data))
        await sweep(sim, tmp_path, fast_settings)  # size matches: skipped without --verify
        assert sim.exports_started[victim] == 1
        await sweep(sim, tmp_path, dataclasses.replace(fast_settings, verify=True))
        assert sim.exports_started[victim] == 2
        assert path.read_bytes() == sim.expected_archive(victim)


async def test_failed_servers_are_tried_again(tmp_path, fast_settings):
    async with Simulator(CONFIG) as sim:
        victim = sim.server_ids[0]
        sim.script(victim, download=["not_gzip"] * 5)  # every attempt of the first run
        first = await sweep(sim, tmp_path, fast_settings)
        assert exit_code(first) is ExitCode.PARTIAL
        second = await sweep(sim, tmp_path, fast_settings)
        assert exit_code(second) is ExitCode.OK
        assert sim.exports_started[victim] == 2
        assert sum(sim.exports_started.values()) == 13


async def test_fresh_ignores_the_journal(tmp_path, fast_settings):
    async with Simulator(CONFIG) as sim:
        await sweep(sim, tmp_path, fast_settings)
        await sweep(sim, tmp_path, fast_settings, fresh=True)
        assert all(count == 2 for count in sim.exports_started.values())


async def test_export_id_is_journalled_before_the_first_poll(tmp_path, fast_settings, out_dir):
    """By the time a server enters polling, its export id is in the journal on disk."""
    seen = {}

    def check(event):
        if event.phase is Phase.POLLING:
            seen[event.server_id] = journal_rows(tmp_path).get(event.server_id)

    async with Simulator(CONFIG) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        journal = Journal.open(out_dir)
        events = Events()
        events.subscribe(journal.record)
        events.subscribe(check)  # runs after the journal's listener has returned
        async with anyio.create_task_group() as tasks, aiohttp.ClientSession() as session:
            tasks.start_soon(journal.writer)
            results = await Sweep(inventory, fast_settings, LocalDestination(out_dir), session, events).run()
            journal.close()
        journal.shutdown()
    assert all(r.state == "collected" for r in results)
    assert len(seen) == 12
    for sid, row in seen.items():
        assert row is not None and row[0] == "polling" and row[1] == results[sim.server_ids.index(sid)].export_id


async def test_rejected_token_keeps_the_journal_and_a_rerun_resumes(tmp_path, fast_settings, out_dir):
    settings = dataclasses.replace(fast_settings, concurrency=2)
    async with Simulator(CONFIG) as sim:
        late = sim.server_ids[8]
        sim.script(late, export=["401"])
        first = await sweep(sim, tmp_path, settings)
        assert exit_code(first) is ExitCode.AUTH
        collected_first = {r.server_id for r in first.results if r.state == "collected"}
        assert 0 < len(collected_first) < 12
        assert sim.count(status=401) == 1
        second = await sweep(sim, tmp_path, settings)
        assert exit_code(second) is ExitCode.OK
        for sid in collected_first:
            assert sim.exports_started[sid] == 1, sid


def test_a_second_run_into_the_same_folder_is_refused(out_dir):
    """Two runs would race for every .part file; the second one is told, not let in."""
    first = Journal.open(out_dir)
    try:
        with pytest.raises(JournalError, match=r"in use by another collector run \(pid \d+\)"):
            Journal.open(out_dir)
    finally:
        first.shutdown()
    Journal.open(out_dir).shutdown()  # free again once the first has finished
