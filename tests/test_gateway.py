"""One gateway per endpoint for the whole run: discovery, check and the sweep share it.

Through the real runner, against the simulator or a port where nothing listens."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from collector.config.inventory import load_inventory
from collector.errors import ExitCode
from collector.run.outcome import exit_code
from collector.run.runner import run_sweep
from collector.simulator import SimConfig, Simulator

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_discoverys_listservers_are_counted_in_the_runs_metrics(tmp_path, fast_settings):
    """`collector_requests_total{operation="list"}` (docs/metrics.md) comes from a real run."""
    config = SimConfig(servers=4, export_seconds=(0.01, 0.02), archive_bytes=(4096, 8192), seed=5)
    async with Simulator(config) as sim:
        path = sim.write_inventory(tmp_path / "inventory.yaml")
        raw = yaml.safe_load(path.read_text())
        raw["servers"] = raw["servers"][:1]
        raw["discover"] = True
        path.write_text(yaml.safe_dump(raw))
        settings = dataclasses.replace(fast_settings, metrics_file=str(tmp_path / "collector.prom"))
        outcome = await run_sweep(load_inventory(path), settings, tmp_path / "out")
    assert sorted(r.server_id for r in outcome.results if r.state == "collected") == sorted(sim.server_ids)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((tmp_path / "collector.prom").read_text())
        for s in family.samples
    }
    assert samples[("collector_requests_total", (("code", "200"), ("operation", "list")))] == 1
    assert samples[("collector_requests_total", (("code", "202"), ("operation", "export")))] == 4
    # The run's request count holds discovery's request too, as the metric does.
    assert outcome.requests == sum(value for (name, _), value in samples.items() if name == "collector_requests_total")


async def test_a_dead_endpoint_with_discover_costs_one_dead_after_for_the_whole_run(tmp_path, fast_settings, caplog):
    """Two projects discover on a port where nothing listens, one also lists a server: the
    endpoint is given up once (discovery's verdict is the sweep's), not once per project and
    again in the sweep (three `dead_after`s before the gateway was shared)."""
    dead_after = 1.0
    endpoint = f"http://127.0.0.1:{closed_port()}"
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o600)
    auth = {"token_file": str(token)}
    inventory = {
        "endpoint": endpoint,
        "auth": auth,
        "projects": [
            {"project_id": "p1", "discover": True, "servers": ["SERVER-1"]},
            {"project_id": "p2", "discover": True},
        ],
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inventory))
    settings = dataclasses.replace(fast_settings, dead_after=dead_after)
    caplog.set_level(logging.INFO, logger="collector")
    started = time.monotonic()
    outcome = await run_sweep(load_inventory(path), settings, tmp_path / "out")
    elapsed = time.monotonic() - started
    given_up = [r for r in caplog.records if getattr(r, "event", None) == "endpoint_given_up"]
    assert len(given_up) == 1, [r.getMessage() for r in given_up]
    assert elapsed < 2 * dead_after, elapsed
    assert [(r.server_id, r.state) for r in outcome.results if r.server_id == "SERVER-1"] == [("SERVER-1", "pending")]
    assert exit_code(outcome) is ExitCode.UNREACHABLE


def test_a_client_is_made_only_for_settled_credentials() -> None:
    """`CloudDC.for_project` refuses a project whose credentials were never settled."""
    from collector.clouddc.api import CloudDC
    from collector.clouddc.gateway import Gateways
    from collector.config.inventory import Project

    project = Project("p", "http://127.0.0.1:9", None, ())
    with pytest.raises(ValueError, match="credentials"):
        CloudDC.for_project(Gateways(None, None), project)  # type: ignore[arg-type]
