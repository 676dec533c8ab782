"""End-to-end sweeps against the simulator over real loopback HTTP, files in a temp folder."""

from __future__ import annotations

import json
from dataclasses import replace

import anyio
import pytest
from _fleet import archive_path, assert_exact, by_id, partials, sweep

from collector.config.settings import parse_budget
from collector.errors import ExitCode
from collector.run.outcome import exit_code
from collector.simulator import SimConfig, Simulator
from collector.sweep.events import Phase
from collector.sweep.pipeline import MIN_QUEUED, Settings

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(120)
async def test_200_servers_collected_byte_for_byte(tmp_path, fast_settings):
    config = SimConfig(servers=200, export_seconds=(0.05, 0.4), archive_bytes=(4096, 64 * 1024), seed=3)
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sum(sim.exports_started.values()) == 200
    assert exit_code(outcome) is ExitCode.OK
    assert partials(tmp_path) == []
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"] == {
        "servers": 200,
        "collected": 200,
        "failed": 0,
        "pending": 0,
        "bytes": sum(r["bytes"] for r in report["servers"]),
    }
    first = report["servers"][0]
    assert first["state"] == "collected" and first["error"] is None
    assert first["file"] == f"{sim.project_id}/{first['server_id']}-dump.tar.gz"
    assert len(first["sha256"]) == 64 and first["export_id"]


@pytest.mark.parametrize("retry_after", [True, False], ids=["with-retry-after", "without-retry-after"])
async def test_throttled_sweep_backs_off_and_completes(tmp_path, fast_settings, retry_after):
    config = SimConfig(
        servers=30,
        export_seconds=(0.05, 0.2),
        archive_bytes=(4096, 8192),
        rate_limit=40,
        retry_after=retry_after,
        seed=4,
    )
    settings = Settings(**{**fast_settings.__dict__, "rate": 200})  # well over the gateway's 40/s
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        throttled = sim.count(status=429)
    assert exit_code(outcome) is ExitCode.OK
    assert throttled > 0
    assert outcome.throttled == throttled


async def test_500s_are_retried(tmp_path, fast_settings):
    config = SimConfig(servers=20, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), fault_500=0.2, seed=5)
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert sim.count(status=500) > 0
        assert_exact(tmp_path, sim, sim.server_ids)
    assert exit_code(outcome) is ExitCode.OK
    assert any(r.attempts > 1 for r in outcome.results)


async def test_truncated_download_is_retried_and_exact(tmp_path, fast_settings):
    config = SimConfig(servers=3, export_seconds=(0.05, 0.1), archive_bytes=(300_000, 400_000), seed=6)
    async with Simulator(config) as sim:
        target = sim.server_ids[1]
        sim.script(target, download=["truncate"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count(operation="download", server_id=target) == 2
    assert exit_code(outcome) is ExitCode.OK
    assert by_id(outcome)[target].attempts == 2


async def test_stuck_and_failed_exports_fail_with_reasons_others_collected(tmp_path, fast_settings):
    config = SimConfig(servers=10, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), stuck=1, failing=1, seed=7)
    settings = Settings(**{**fast_settings.__dict__, "export_timeout": 1.0})
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, settings)
        stuck, failing = sim.stuck_ids[0], sim.failing_ids[0]
        good = [s for s in sim.server_ids if s not in (stuck, failing)]
        assert_exact(tmp_path, sim, good)
    results = by_id(outcome)
    assert results[stuck].state == "failed" and "stuck at" in results[stuck].error
    assert results[failing].state == "failed" and "failed" in results[failing].error
    assert not archive_path(tmp_path, sim, stuck).exists()
    assert exit_code(outcome) is ExitCode.PARTIAL
    assert any("2 failed" in line for line in outcome.summary)


async def test_content_disposition_path_is_ignored(tmp_path, fast_settings):
    config = SimConfig(servers=2, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=8)
    async with Simulator(config) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["evil_disposition"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
    assert exit_code(outcome) is ExitCode.OK
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    names = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".collector" not in p.parts)
    assert names == sorted([f"{s}-dump.tar.gz" for s in sim.server_ids] + ["report.json"])


async def test_rejected_token_stops_the_run_early_and_writes_the_report(tmp_path, fast_settings):
    config = SimConfig(servers=100, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=9)
    settings = Settings(**{**fast_settings.__dict__, "concurrency": 8})
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, settings, then=sim.revoke_token)
        rejected = sim.count(status=401)
    assert exit_code(outcome) is ExitCode.AUTH
    assert rejected <= 8  # at most the requests already in flight, not one per server
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["collected"] == 0 and report["totals"]["servers"] == 100
    assert "credentials rejected" in report["run"]["stopped"]
    # Stopped is not failed: every server is left for the re-run with a fresh token.
    assert report["totals"]["pending"] == 100 and report["totals"]["failed"] == 0
    assert all("credentials rejected" in s["error"] for s in report["servers"])


async def test_a_403_fails_that_server_and_the_run_goes_on(tmp_path, fast_settings):
    config = SimConfig(servers=4, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=9)
    async with Simulator(config) as sim:
        refused = sim.server_ids[2]
        sim.script(refused, export=["403"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, [sid for sid in sim.server_ids if sid != refused])
        assert sim.count("export", server_id=refused) == 1  # not retried
    result = by_id(outcome)[refused]
    assert result.state == "failed" and result.status == 403 and result.error_kind == "forbidden"
    assert "Forbidden" in result.error
    assert exit_code(outcome) is ExitCode.PARTIAL


async def test_the_error_budget_stops_the_run_leaves_the_rest_pending_and_exits_5(tmp_path, fast_settings):
    """Ansible's max_fail_percentage: once more than 3 servers failed, nothing new starts."""
    config = SimConfig(servers=60, failing=30, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=3)
    settings = Settings(**{**fast_settings.__dict__, "concurrency": 4, "max_failures": parse_budget("3")})
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, settings)
    states = [r.state for r in outcome.results]
    assert states.count("failed") >= 4  # the 4th failure spends the budget; those running may add to it
    assert states.count("failed") <= 4 + 4  # at most the servers already in flight
    assert states.count("pending") > 0
    assert exit_code(outcome) is ExitCode.TOO_MANY_FAILURES
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "too many failures" in report["run"]["stopped"]
    assert all("too many failures" in s["error"] for s in report["servers"] if s["state"] == "pending")


def test_a_failure_budget_is_a_count_or_a_share_of_the_run():
    assert parse_budget("5").limit(1000) == 5
    assert parse_budget("2.5%").limit(1000) == 25
    assert parse_budget("0").limit(10) == 0
    for bad in ("-1", "101%", "five", "", "nan%"):
        with pytest.raises(ValueError):
            parse_budget(bad)


class _Renewable:
    """Credentials that can be renewed: a token the test swaps, counting renewals."""

    def __init__(self, sim: Simulator, renewed: str | None = None) -> None:
        self.sim = sim
        self.current = sim.token
        self.renewed = renewed  # what a renewal gives; None: what the API accepts by then
        self.renewals = 0

    async def apply(self, request) -> object:
        request.headers["X-Auth-Token"] = self.current
        return self.current

    async def rejected(self, generation: object) -> bool:
        if generation != self.current:
            return True  # another task renewed it already
        if self.renewals:
            return False  # a fresh one was refused too
        self.renewals += 1
        self.current = self.renewed or self.sim.token
        return True

    def describe(self) -> str:
        return "a renewable token (test)"


async def test_a_401_renews_credentials_once_for_everyone_and_the_run_goes_on(tmp_path, fast_settings):
    from dataclasses import replace as _replace

    from collector.config.inventory import load_inventory
    from collector.run.runner import run_sweep

    config = SimConfig(servers=40, export_seconds=(0.2, 0.4), archive_bytes=(4096, 8192), seed=10)
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        credentials = _Renewable(sim)
        inventory = _replace(
            inventory, projects=tuple(_replace(p, credentials=credentials) for p in inventory.projects)
        )
        outcome = None

        async def rotate_mid_run() -> None:
            while sim.count("export") < 20:
                await anyio.sleep(0.01)
            sim.revoke_token()  # every request with the old token is refused from now on

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(rotate_mid_run)
            outcome = await run_sweep(inventory, fast_settings, tmp_path / "out")
        assert_exact(tmp_path, sim, sim.server_ids)
        refused = sim.count(status=401)
    assert exit_code(outcome) is ExitCode.OK
    assert credentials.renewals == 1  # one renewal served every task that met the 401
    assert refused >= 1


async def test_a_401_after_a_fresh_credential_ends_the_run_with_exit_3(tmp_path, fast_settings):
    from dataclasses import replace as _replace

    from collector.config.inventory import load_inventory
    from collector.run.runner import run_sweep

    config = SimConfig(servers=5, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=10)
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        credentials = _Renewable(sim, renewed="refused-as-well")
        sim.revoke_token()
        inventory = _replace(
            inventory, projects=tuple(_replace(p, credentials=credentials) for p in inventory.projects)
        )
        outcome = await run_sweep(inventory, fast_settings, tmp_path / "out")
    assert exit_code(outcome) is ExitCode.AUTH
    assert credentials.renewals == 1


class _Peak:
    """A listener: the most servers at once between their EXPORTING event and one of `until`."""

    def __init__(self, until: tuple[Phase, ...]) -> None:
        self.until, self.now, self.most = until, set(), 0

    def __call__(self, event) -> None:
        if event.phase is Phase.EXPORTING:
            self.now.add(event.server_id)
            self.most = max(self.most, len(self.now))
        elif event.phase in self.until:
            self.now.discard(event.server_id)


@pytest.mark.timeout(60)
async def test_servers_are_started_as_their_exports_can_be_asked_not_all_at_once(tmp_path, fast_settings):
    """At 40 requests/s, 80 servers are not all started at once to wait for the rate limiter
    (each would hold its task for nothing, issue 14): at most MIN_QUEUED are between their start
    and their export's answer, and all are collected. Seen from a listener, which hears that an
    export was answered only once the journal has it (a batch later), so with that much slack."""
    asking = _Peak(until=(Phase.POLLING, Phase.DOWNLOADING, Phase.COLLECTED, Phase.FAILED))
    config = SimConfig(servers=80, export_seconds=(0.05, 0.1), archive_bytes=(4096, 4096), seed=5)
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, replace(fast_settings, rate=40, max_rate=40), listeners=[asking])
    assert exit_code(outcome) is ExitCode.OK
    assert MIN_QUEUED // 2 < asking.most <= 2 * MIN_QUEUED < config.servers


@pytest.mark.timeout(60)
async def test_servers_in_flight_are_what_the_rate_can_finish_not_all_concurrency(tmp_path, fast_settings):
    """At 150 requests/s with exports of a tenth of a second, a hundred-odd servers in flight
    keep the API busy (exports asked for in the next half second, polls due in the next
    --poll-interval): 400 servers are not all started to wait for their polls and downloads
    behind each other's exports (issue 14). Seen from a listener: started, not yet finished."""
    in_flight = _Peak(until=(Phase.COLLECTED, Phase.FAILED))
    config = SimConfig(servers=400, export_seconds=(0.05, 0.1), archive_bytes=(4096, 4096), seed=6)
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, replace(fast_settings, rate=150, max_rate=150), listeners=[in_flight])
    assert exit_code(outcome) is ExitCode.OK
    assert 50 < in_flight.most < config.servers / 2, in_flight.most
