"""What a run learns of an endpoint's budget, kept for the next run (issue 14)."""

from __future__ import annotations

import json
import time

import pytest
from _listing import collector_run

from collector.errors import ExitCode
from collector.run.learned import KEEP_FOR, LEARNED_FILE, MARGIN, remember, starting_rates
from collector.simulator import SimConfig, Simulator

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
        assert "as an earlier run learned" not in first
        kept = json.loads((state / "collector" / LEARNED_FILE).read_text())["endpoints"][sim.url]
        assert kept["rate"] > 0 and abs(kept["at"] - time.time()) < 60
        code, _, second = await collector_run(inventory, tmp_path / "b", *FAST, env=env)
    assert code == ExitCode.OK, second
    said = f"{sim.url}: starting at {MARGIN * kept['rate']:.3g} req/s, as an earlier run learned"
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
    assert "as an earlier run learned" not in stderr and "starting at 7 req/s" in stderr
    assert (state / "collector" / LEARNED_FILE).read_text() == before


def test_a_learned_rate_is_started_below_and_aged_out_after_a_week(tmp_path):
    remember(tmp_path, {"https://a": 100.0, "https://b": 40.0}, now=1_000_000)
    assert starting_rates(tmp_path, now=1_000_000 + 3600) == {
        "https://a": pytest.approx(MARGIN * 100),
        "https://b": pytest.approx(MARGIN * 40),
    }
    assert starting_rates(tmp_path, now=1_000_000 + KEEP_FOR + 1) == {}
    assert starting_rates(tmp_path, now=1_000_000 - 10) == {}  # from the future: a clock gone wrong


@pytest.mark.parametrize("text", ["", "{", "[]", '{"endpoints": []}', '{"endpoints": {"x": {"rate": "fast"}}}'])
def test_a_state_file_that_cannot_be_read_only_means_no_head_start(tmp_path, text):
    (tmp_path / LEARNED_FILE).write_text(text)
    assert starting_rates(tmp_path) == {}
    remember(tmp_path, {"https://a": 10.0})  # and the next run still writes its own
    assert set(starting_rates(tmp_path)) == {"https://a"}
