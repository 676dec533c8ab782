"""Sweeping the simulator in-process, and checking what landed: shared by the sweep tests."""

from __future__ import annotations

from pathlib import Path

from collector.config.inventory import load_inventory
from collector.config.settings import Settings
from collector.destinations.base import archive_name
from collector.run.outcome import Outcome
from collector.run.runner import run_sweep
from collector.simulator import Simulator
from collector.sweep.results import ServerResult


async def sweep(sim: Simulator, tmp_path: Path, settings: Settings, *, then=None, **kwargs) -> Outcome:
    """Write an inventory for `sim`, call `then()` if given, and sweep it into `tmp_path/out`
    with the runner `collector run` uses; `kwargs` go to `run_sweep`."""
    inventory_path = tmp_path / "inventory.yaml"
    sim.write_inventory(inventory_path)
    if then is not None:
        then()
    out = tmp_path / "out"
    out.mkdir(mode=0o700, exist_ok=True)
    return await run_sweep(load_inventory(inventory_path), settings, out, **kwargs)


def archive_path(tmp_path: Path, sim: Simulator, server_id: str) -> Path:
    return tmp_path / "out" / archive_name(sim.project_id, server_id)


def assert_exact(tmp_path: Path, sim: Simulator, server_ids) -> None:
    for sid in server_ids:
        assert archive_path(tmp_path, sim, sid).read_bytes() == sim.expected_archive(sid), sid


def partials(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]


def by_id(outcome: Outcome) -> dict[str, ServerResult]:
    return {r.server_id: r for r in outcome.results}
