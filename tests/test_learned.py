"""What a run learns of an endpoint's budget, kept for the next run (issue 14)."""

from __future__ import annotations

import json
import time

import pytest
from _listing import collector_run

from collector.control.throttle import MIN_RATE
from collector.errors import ExitCode
from collector.run.learned import (
    EXPORTS_FILE,
    KEEP_FOR,
    LEARNED_FILE,
    remember,
    server_export_times,
    starting_durations,
    starting_rates,
)
from collector.simulator import SimConfig, Simulator
from collector.sweep.polling import OwnTime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))
FAST = ["--poll-interval", "0.1", "--no-progress", "-v"]


async def test_a_run_keeps_what_it_learned_and_the_next_run_into_a_new_folder_starts_there(tmp_path):
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    async with Simulator(SimConfig(servers=40, seed=1, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, first = await collector_run(inventory, tmp_path / "a", *FAST, env=env)
        assert code == ExitCode.OK, first
        assert "an earlier run learned" not in first
        kept = json.loads((state / "collector" / LEARNED_FILE).read_text())["endpoints"][sim.url]
        assert kept["rate"] > 0 and abs(kept["at"] - time.time()) < 60
        code, _, second = await collector_run(inventory, tmp_path / "b", *FAST, env=env)
    assert code == ExitCode.OK, second
    said = f"{sim.url}: starting at {kept['rate']:.3g} req/s, the budget an earlier run learned"
    assert said in second, second


async def test_a_rate_given_is_used_and_nothing_is_learned(tmp_path):
    state = tmp_path / "state"
    remember(state / "collector", {"http://127.0.0.1:9": 500.0})
    async with Simulator(SimConfig(servers=5, seed=2, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        remember(state / "collector", {sim.url: 500.0})
        before = (state / "collector" / LEARNED_FILE).read_text()
        code, _, stderr = await collector_run(
            inventory, tmp_path / "out", "--rate", "7", *FAST, env={"XDG_STATE_HOME": str(state)}
        )
    assert code == ExitCode.OK, stderr
    assert "an earlier run learned" not in stderr and "starting at 7 req/s" in stderr
    assert (state / "collector" / LEARNED_FILE).read_text() == before


def test_a_learned_rate_is_started_at_and_aged_out_after_a_week(tmp_path):
    remember(tmp_path, {"https://a": 100.0, "https://b": 40.0}, now=1_000_000)
    assert starting_rates(tmp_path, now=1_000_000 + 3600) == {
        "https://a": pytest.approx(100),
        "https://b": pytest.approx(40),
    }
    assert starting_rates(tmp_path, now=1_000_000 + KEEP_FOR + 1) == {}
    assert starting_rates(tmp_path, now=1_000_000 - 10) == {}  # from the future: a clock gone wrong


def test_a_kept_rate_no_run_could_have_learned_is_not_started_at(tmp_path):
    """A limiter never goes below MIN_RATE, so a kept 0.001 (a hand-edited file, say) was
    not learned: started at, the next run sent one request in 1,000 s, and stayed there."""
    now = time.time()
    rates = {"https://tiny": 0.001, "https://zero": 0.0, "https://slow": MIN_RATE}
    (tmp_path / LEARNED_FILE).write_text(
        json.dumps({"endpoints": {e: {"rate": r, "at": int(now)} for e, r in rates.items()}})
    )
    assert starting_rates(tmp_path, now=now + 1) == {"https://slow": MIN_RATE}


@pytest.mark.parametrize("text", ["", "{", "[]", '{"endpoints": []}', '{"endpoints": {"x": {"rate": "fast"}}}'])
def test_a_state_file_that_cannot_be_read_only_means_no_head_start(tmp_path, text):
    (tmp_path / LEARNED_FILE).write_text(text)
    assert starting_rates(tmp_path) == {}
    remember(tmp_path, {"https://a": 10.0})  # and the next run still writes its own
    assert set(starting_rates(tmp_path)) == {"https://a"}


def test_the_export_time_distribution_is_kept_beside_the_rate_and_aged_out_the_same_way(tmp_path):
    points = [float(s) for s in range(60, 121, 3)]
    remember(tmp_path, {"https://a": 100.0}, durations=points, now=1_000_000)
    assert starting_durations(tmp_path, ["https://a"], now=1_000_000 + 3600) == points
    assert starting_durations(tmp_path, ["https://b"], now=1_000_000 + 3600) == []  # another endpoint's
    assert starting_durations(tmp_path, ["https://a"], now=1_000_000 + KEEP_FOR + 1) == []
    # a run that saw too few exports to say keeps the earlier distribution, with its age
    remember(tmp_path, {"https://a": 90.0}, now=1_000_000 + 7200)
    assert starting_durations(tmp_path, ["https://a"], now=1_000_000 + KEEP_FOR - 1) == points
    assert starting_durations(tmp_path, ["https://a"], now=1_000_000 + KEEP_FOR + 1) == []
    assert starting_rates(tmp_path, now=1_000_000 + KEEP_FOR + 1) == {"https://a": pytest.approx(90)}


@pytest.mark.parametrize("kept", ["soon", {"seconds": "many", "at": 1}, {"seconds": [1, "x", -3, 1e999], "at": 1}])
def test_a_kept_distribution_that_cannot_be_read_only_means_first_polls_as_a_first_run(tmp_path, kept):
    data = {"endpoints": {"https://a": {"rate": 10, "at": 1, "exports": kept}}}
    (tmp_path / LEARNED_FILE).write_text(json.dumps(data))
    assert starting_durations(tmp_path, ["https://a"], now=2) in ([], [1.0])


def test_each_servers_export_time_is_kept_with_the_others_and_aged_out_one_by_one(tmp_path):
    a, b = ("p1", "s-a"), ("p1", "s-b")
    remember(tmp_path, {"https://a": 1.0}, servers={"https://a": {a: OwnTime(12.5, True)}}, now=1_000_000)
    remember(tmp_path, {"https://a": 1.0}, servers={"https://a": {b: OwnTime(7.25, False)}}, now=1_000_000 + 3600)
    assert server_export_times(tmp_path, ["https://a"], now=1_000_000 + 7200) == {
        a: OwnTime(12.5, True),  # an earlier run's time stays beside a later run's
        b: OwnTime(7.25, False),  # a bound stays a bound
    }
    assert server_export_times(tmp_path, ["https://b"], now=1_000_000 + 7200) == {}  # another endpoint's
    assert server_export_times(tmp_path, ["https://a"], now=1_000_000 + KEEP_FOR + 1) == {b: OwnTime(7.25, False)}
    # A run writes back only what is still fresh: the aged entry is gone from the file too.
    remember(tmp_path, {"https://a": 1.0}, servers={"https://a": {b: OwnTime(7.0, True)}}, now=1_000_000 + KEEP_FOR + 2)
    kept = json.loads((tmp_path / EXPORTS_FILE).read_text())["endpoints"]["https://a"]
    assert kept == {"p1/s-b": [7.0, 1_000_000 + KEEP_FOR + 2, 1]}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"endpoints": []}',
        '{"endpoints": {"https://a": []}}',
        '{"endpoints": {"https://a": {"p/s": "slow"}}}',
        '{"endpoints": {"https://a": {"p/s": [1, 1]}}}',
        '{"endpoints": {"https://a": {"p/s": [-1, 1, 1]}}}',
        '{"endpoints": {"https://a": {"p/s": [1e999, 1, 1]}}}',
        '{"endpoints": {"https://a": {"p/s": [1, 1, 2]}}}',
        '{"endpoints": {"https://a": {"no-slash": [1, 1, 1]}}}',
    ],
)
def test_a_kept_export_time_that_cannot_be_read_is_left_out(tmp_path, text):
    (tmp_path / EXPORTS_FILE).write_text(text)
    assert server_export_times(tmp_path, ["https://a"], now=2) == {}
    # the next run writes its own
    remember(tmp_path, {"https://a": 1.0}, servers={"https://a": {("p", "t"): OwnTime(3.0, True)}}, now=2)
    assert server_export_times(tmp_path, ["https://a"], now=2) == {("p", "t"): OwnTime(3.0, True)}


async def test_a_second_run_asks_first_for_the_exports_an_earlier_run_saw_take_longest(tmp_path):
    """Exports of 0.3-2.5 s, 12 servers asked in 0.6 s at the 20 req/s the first run used: the
    slowest set the run's end, so the next run asks for those first, slowest first; the others
    keep the inventory's order."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    async with Simulator(
        SimConfig(servers=12, seed=11, export_seconds=(0.3, 2.5), archive_bytes=(4096, 8192), rate_limit=60)
    ) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "a", *FAST, env=env)
        assert code == ExitCode.OK, stderr
        first_order = list(sim.exports_started)
        known = server_export_times(tmp_path / "state" / "collector", [sim.url])
        assert set(known) == {(sim.project_id, sid) for sid in sim.server_ids}
        sim.recorder.clear()
        code, _, stderr = await collector_run(inventory, tmp_path / "b", *FAST, env=env)
        assert code == ExitCode.OK, stderr
        second_order = list(sim.exports_started)
    seconds = {sid: known[(sim.project_id, sid)].seconds for sid in sim.server_ids}
    assert first_order == sim.server_ids  # nothing known: the inventory's order
    # The servers moved ahead: the shortest prefix after which the inventory's order resumes.
    ahead = next(k for k in range(13) if second_order[k:] == [s for s in first_order if s not in second_order[:k]])
    assert 1 <= ahead < 12, (second_order, seconds)  # some were asked first, not all reordered
    assert second_order[:ahead] == sorted(second_order[:ahead], key=lambda s: -seconds[s])  # slowest first
    assert min(seconds[s] for s in second_order[:ahead]) > max(seconds[s] for s in second_order[ahead:])


def test_a_state_folder_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path, caplog):
    folder = tmp_path / "a-file"
    folder.write_text("not a folder")
    remember(folder, {"https://a": 10.0}, servers={"https://a": {("p", "s"): OwnTime(3.0, True)}})
    said = [r.getMessage() for r in caplog.records if "cannot keep" in r.getMessage()]
    assert len(said) == 1 and "request rates, export times" in said[0], said
