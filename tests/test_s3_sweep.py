"""A whole run into object storage (moto's S3 server), as a CronJob pod would do it."""

from __future__ import annotations

import json

import anyio
import pytest
from _moto import FaultyProxy, new_bucket_name
from test_s3 import get, keys, open_uploads

from collector.config.inventory import load_inventory
from collector.destinations.base import archive_name
from collector.destinations.location import S3Location, parse_destination
from collector.errors import ExitCode, UsageError
from collector.run.outcome import exit_code
from collector.run.paths import state_dir_for
from collector.run.runner import run_sweep
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.slow
async def test_a_sweep_into_a_bucket_is_exact_and_a_new_pod_without_state_skips_what_is_stored(
    tmp_path, fast_settings, moto_server, bucket
):
    config = SimConfig(servers=12, export_seconds=(0.05, 0.1), archive_bytes=(4096, 65536), seed=21)
    location = parse_destination(f"s3://{bucket}/nightly/{{date}}", endpoint_url=moto_server.url)
    assert isinstance(location, S3Location) and "{date}" not in location.prefix
    async with Simulator(config) as sim:
        inventory_path = tmp_path / "inventory.yaml"
        sim.write_inventory(inventory_path)
        inventory = load_inventory(inventory_path)
        settings = fast_settings.__class__(**{**fast_settings.__dict__, "state_dir": str(tmp_path / "pod-1")})
        first = await run_sweep(inventory, settings, location)
        assert exit_code(first) is ExitCode.OK
        for sid in sim.server_ids:
            body, metadata = await get(
                moto_server.url, bucket, f"{location.prefix}/{archive_name(sim.project_id, sid)}"
            )
            assert body == sim.expected_archive(sid)
            assert len(metadata["sha256"]) == 64
        stored = await keys(moto_server.url, bucket)
        assert f"{location.prefix}/report.json" in stored
        assert not [k for k in stored if k.endswith(".part")]
        assert await open_uploads(moto_server.url, bucket) == []
        assert (tmp_path / "pod-1" / ".collector" / "journal.db").exists()  # state stays local
        exports = sim.count("export")

        # A new pod: no journal, a new state folder. The bucket says what is done.
        fresh_pod = fast_settings.__class__(**{**fast_settings.__dict__, "state_dir": str(tmp_path / "pod-2")})
        second = await run_sweep(inventory, fresh_pod, location)
        assert exit_code(second) is ExitCode.OK
        assert sim.count("export") == exports  # nothing asked for again
    assert all(r.collected_earlier for r in second.results)
    report, _ = await get(moto_server.url, bucket, f"{location.prefix}/report.json")
    assert json.loads(report)["totals"]["collected"] == 12


async def test_a_bucket_that_refuses_us_is_a_usage_error_before_any_api_request(tmp_path, fast_settings, moto_server):
    location = parse_destination(f"s3://{new_bucket_name()}/x", endpoint_url=moto_server.url)  # never created
    async with Simulator(SimConfig(servers=2)) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        settings = fast_settings.__class__(**{**fast_settings.__dict__, "state_dir": str(tmp_path / "state")})
        with pytest.raises(UsageError, match="-o s3://"):
            await run_sweep(inventory, settings, location)
        assert sim.count() == 0


class HoldingProxy(FaultyProxy):
    """Forwards to moto, but holds its first bucket listing for `HOLD` seconds: longer than
    the run's --read-timeout, far shorter than botocore's own default of 60 s."""

    HOLD = 3.0
    listings = 0

    async def _handle(self, request):
        if "list-type" in request.query:
            self.listings += 1
            if self.listings == 1:
                await anyio.sleep(self.HOLD)
        return await super()._handle(request)


async def test_the_bucket_client_keeps_the_runs_read_timeout(tmp_path, fast_settings, moto_server, bucket):
    """--read-timeout bounds the object-storage client too: the held listing times out and is
    asked again, where botocore's default (60 s) would have waited for it."""
    async with HoldingProxy(moto_server.url).running() as proxy, Simulator(SimConfig(servers=1)) as sim:
        location = parse_destination(f"s3://{bucket}/x", endpoint_url=proxy.url)
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        settings = fast_settings.__class__(
            **{**fast_settings.__dict__, "state_dir": str(tmp_path / "state"), "read_timeout": 0.5}
        )
        outcome = await run_sweep(inventory, settings, location)
        assert exit_code(outcome) is ExitCode.OK
        assert proxy.listings == 2  # the held one timed out after 0.5 s; the second was answered


def test_the_state_folder_of_a_bucket_is_derived_from_it_or_refused_without_a_home():
    location = S3Location("logs", "clouddc/2026-11-30")
    assert state_dir_for(location, "/var/lib/collector").as_posix() == "/var/lib/collector"
    derived = state_dir_for(location, None, {"XDG_STATE_HOME": "/state"})
    assert derived.parent.as_posix() == "/state/collector" and derived.name.startswith("logs-")
    assert state_dir_for(S3Location("logs", "other"), None, {"XDG_STATE_HOME": "/state"}) != derived
    assert state_dir_for(location, None, {"HOME": "/home/op"}).as_posix().startswith("/home/op/.local/state/collector/")
    with pytest.raises(UsageError, match="--state-dir"):
        state_dir_for(location, None, {})


async def test_shards_into_one_prefix_then_collector_merge_writes_the_whole_report(
    tmp_path, fast_settings, moto_server, bucket
):
    import os
    import sys

    import anyio

    from collector.config.shards import parse_shard

    config = SimConfig(servers=10, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=22)
    location = parse_destination(f"s3://{bucket}/run", endpoint_url=moto_server.url)
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        for index in range(2):
            settings = fast_settings.__class__(
                **{**fast_settings.__dict__, "state_dir": str(tmp_path / f"pod-{index}")}
            )
            outcome = await run_sweep(inventory, settings, location, shard=parse_shard(f"{index}/2"))
            assert exit_code(outcome) is ExitCode.OK
    stored = await keys(moto_server.url, bucket)
    assert {"run/report.shard-0-of-2.json", "run/report.shard-1-of-2.json"} <= set(stored)
    merge = await anyio.run_process(
        [sys.executable, "-m", "collector", "merge", f"s3://{bucket}/run", "--s3-endpoint", moto_server.url],
        check=False,
        env=dict(os.environ),
    )
    assert merge.returncode == 0, merge.stderr.decode()
    report, _ = await get(moto_server.url, bucket, "run/report.json")
    merged = json.loads(report)
    assert merged["totals"]["collected"] == 10
    assert sorted(s["server_id"] for s in merged["servers"]) == sorted(sim.server_ids)
