"""Incident sweeps (issue 15): a time box (--deadline), suspects first (--first) and the run
without an inventory, each through the command line against the simulator over loopback."""

from __future__ import annotations

import json
import os
import re
import sys

import anyio
import pytest
import yaml
from _listing import collector, collector_run

from collector.errors import ExitCode
from collector.simulator import SimConfig, Simulator
from collector.sweep.journal import Journal
from collector.sweep.pipeline import Places

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


# -- --first --------------------------------------------------------------------------------


async def test_the_suspects_exports_are_the_first_the_api_sees(tmp_path):
    """`--first @suspects.txt`, 12 of 60 servers spread over the inventory: the first 12
    export requests the simulator receives are theirs; the rest follow, every server collected."""
    async with Simulator(SimConfig(servers=60, seed=24, export_seconds=(0.05, 0.2), **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        suspects = sim.server_ids[3::5]
        listed = tmp_path / "suspects.txt"
        listed.write_text("# INC-4242\n" + "\n".join(suspects) + "\n")
        code, _, stderr = await collector_run(
            inventory, tmp_path / "out", "--first", f"@{listed}", "--rate", "5", "--poll-interval", "0.2", *QUIET
        )
        assert code == ExitCode.OK, stderr
        order = list(sim.exports_started)
    assert set(order[: len(suspects)]) == set(suspects), order[: len(suspects)]
    assert len(order) == 60
    # The report keeps the inventory's order.
    assert [s["server_id"] for s in report_of(tmp_path / "out")["servers"]] == sim.server_ids
    assert "--first" not in stderr  # nothing to warn about


async def test_a_first_that_matches_nothing_is_a_warning_and_the_run_goes_on(tmp_path):
    async with Simulator(SimConfig(servers=3, seed=25, export_seconds=(0.05, 0.1), **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(
            inventory, tmp_path / "out", "--first", "name:db-*", "--poll-interval", "0.1", *QUIET
        )
    assert code == ExitCode.OK, stderr
    assert "--first: 1 term matches no server: 'name:db-*'" in stderr, stderr


async def test_a_first_that_is_not_an_expression_is_one_line_and_exit_2(tmp_path):
    async with Simulator(SimConfig(servers=2, seed=26, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--first", "@missing.txt", *QUIET)
        assert sim.count() == 0
    assert code == ExitCode.USAGE
    assert len(stderr.strip().splitlines()) == 1 and "missing.txt" in stderr, stderr


async def test_a_download_place_goes_to_a_first_server_before_any_other_waiting():
    """The `downloads` places: in turn, but a --first server goes before every other that
    waits; a waiter cancelled before its turn loses its place in line, one cancelled as it was
    handed a place passes it on."""
    places = Places(1)
    await places.acquire()
    order: list[str] = []

    async def take(name: str, first: bool) -> None:
        await places.acquire(first)
        order.append(name)
        places.release()

    async with anyio.create_task_group() as tasks:
        for name, first in [("a", False), ("b", False), ("s1", True), ("c", False), ("s2", True)]:
            tasks.start_soon(take, name, first)
            await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as gone:
            gone.cancel()
            await places.acquire(True)  # cancelled at once: takes nothing, queues nothing
        places.release()
    assert order == ["s1", "s2", "a", "b", "c"]
    await places.acquire()  # the one place is free again

    async with anyio.create_task_group() as tasks:
        cancelled = anyio.CancelScope()

        async def wait_then_cancelled() -> None:
            with cancelled:
                await places.acquire(True)
                order.append("never")

        tasks.start_soon(wait_then_cancelled)
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(take, "d", False)
        await anyio.wait_all_tasks_blocked()
        cancelled.cancel()
        await anyio.wait_all_tasks_blocked()
        places.release()
    assert order[-1] == "d" and "never" not in order

    # Cancelled, then handed the place before it could run: the place goes on to the next.
    await places.acquire()
    with anyio.fail_after(5):  # not forever, if the place were lost
        async with anyio.create_task_group() as tasks:
            handed = anyio.CancelScope()

            async def handed_then_cancelled() -> None:
                with handed:
                    await places.acquire(True)
                    order.append("never")
                    places.release()

            tasks.start_soon(handed_then_cancelled)
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(take, "e", False)
            await anyio.wait_all_tasks_blocked()
            handed.cancel()  # the first in line is cancelled, and before it runs...
            places.release()  # ...is handed the place
    assert order[-1] == "e" and "never" not in order
    await places.acquire()  # and the place is free again


# -- the run without an inventory -----------------------------------------------------------


async def test_the_one_liner_collects_exactly_what_it_selects_with_ak_sk_from_the_environment(tmp_path):
    config = SimConfig(servers=12, seed=27, export_seconds=(0.05, 0.1), **SMALL)
    async with Simulator(config) as sim:
        env = {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key}
        code, _, stderr = await collector(
            "run",
            "--endpoint",
            sim.url,
            "--project",
            sim.project_id,
            "--discover",
            "--select",
            "name:node-000[2-6]",
            "-o",
            str(tmp_path / "out"),
            "--poll-interval",
            "0.1",
            *QUIET,
            env=env,
        )
        assert code == ExitCode.OK, stderr
        names = {sim.server(sid).name: sid for sid in sim.server_ids}
        wanted = {names[f"node-000{i}"] for i in range(2, 7)}
        assert set(sim.exports_started) == wanted
    report = report_of(tmp_path / "out")
    assert {s["server_id"] for s in report["servers"]} == wanted
    assert report["run"]["inventory"] is None
    assert config.secret_key not in stderr


async def test_the_one_liner_with_servers_named_and_no_output_writes_a_dated_folder_here(tmp_path):
    config = SimConfig(servers=4, seed=28, export_seconds=(0.05, 0.1), **SMALL)
    async with Simulator(config) as sim:
        env = {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key}
        a, b = sim.server_ids[1], sim.server_ids[3]
        done = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "collector",
                "run",
                "--endpoint",
                sim.url,
                "--project",
                sim.project_id,
                "--server",
                a,
                b,
                "--poll-interval",
                "0.1",
                *QUIET,
            ],
            env={**os.environ, **env},
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == ExitCode.OK, done.stderr.decode()
        assert set(sim.exports_started) == {a, b}
    (out,) = tmp_path.glob("collector-*")
    assert re.fullmatch(r"collector-\d{4}-\d\d-\d\dT\d{4}Z", out.name), out.name
    assert {s["server_id"] for s in report_of(out)["servers"]} == {a, b}
    assert str(out) in done.stderr.decode()  # the run says where it went


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ([], "no fleet given: -i INVENTORY, or --project ID with --region"),
        (["--project", "p1", "--region", "cn-north-4"], "which servers? --project needs --discover"),
        (["--project", "p 1", "--discover", "--region", "cn-north-4"], "--project 'p 1' may hold only letters"),
        (["--project", "p1", "--discover"], "where is the API? give --region"),
        (["--project", "p1", "--discover", "--region", "CN-North-4"], "--region 'CN-North-4' is not a region's ID"),
        (["--project", "p1", "--discover", "--endpoint", "ftp://x"], "--endpoint is not a usable endpoint"),
        (["--project", "p1", "--project", "p2", "--server", "s1"], "--server names servers of one project"),
        (["--project", "p1", "--server", "../etc", "--region", "cn-north-4"], "--server '../etc' cannot be"),
        (["-i", "inventory.yaml", "--project", "p1", "--discover"], "-i and --project --discover: the fleet comes"),
    ],
)
async def test_a_one_liner_that_cannot_work_is_one_line_and_exit_2(tmp_path, flags, words):
    code, _, stderr = await collector("run", "-o", str(tmp_path / "out"), *flags)
    assert code == ExitCode.USAGE, stderr
    assert words in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out").exists()


async def test_a_server_waiting_out_a_ten_minute_retry_after_does_not_hold_the_run_past_its_deadline(tmp_path):
    """Issue 17: while one server waits out a long Retry-After, --deadline is respected: the
    run ends at it, the others collected, that one pending (deadline), its export journalled."""
    config = SimConfig(servers=6, seed=29, retry_after_seconds=600, export_seconds=(0.05, 0.1), **SMALL)
    async with Simulator(config) as sim:
        target = sim.server_ids[2]
        sim.script(target, download=["503-retry-after"])
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        out = tmp_path / "out"
        with anyio.fail_after(60):  # not the 600 s the API asked for
            code, _, stderr = await collector_run(inventory, out, "--deadline", "6s", "--poll-interval", "0.1", *QUIET)
    assert code == ExitCode.DEADLINE, stderr
    states = {s["server_id"]: s for s in report_of(out)["servers"]}
    assert states.pop(target)["error"] == "not collected: the deadline (6s) came first"
    assert {s["state"] for s in states.values()} == {"collected"}
    assert target in journal_exports(out)


async def test_a_one_liner_refused_before_any_export_leaves_no_dated_folder_behind(tmp_path):
    """Without -o, a run that ends in exit 2 (here a --select of nothing, after discovery) must
    not leave an empty ./collector-{datetime} behind each time it is tried."""
    config = SimConfig(servers=3, seed=30, **SMALL)
    async with Simulator(config) as sim:
        env = {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key}
        argv = ["run", "--endpoint", sim.url, "--project", sim.project_id, "--discover", "--select", "name:nope"]
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", *argv, *QUIET], env={**os.environ, **env}, cwd=tmp_path, check=False
        )
        assert sim.count("export") == 0
    assert done.returncode == ExitCode.USAGE, done.stderr.decode()
    assert list(tmp_path.iterdir()) == []
