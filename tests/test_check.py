"""`collector check` and `collector validate --discover`: what they ask the API, what they print,
and their exit codes, against the simulator and `_listing.Listing` over loopback; the exit
codes from real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _auth_servers import serving
from _listing import PROJECT, TOKEN, Listing, collector, servers, tls_pair, write_inventory
from _sockets import closed_port

from collector.cli.check import Verdict, check_inventory, exit_code, patient_for
from collector.config.inventory import load_inventory
from collector.errors import ExitCode
from collector.run.runner import open_session
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))


def discover_only(path: Path, sim: Simulator, discover=True, token: str | None = None) -> Path:
    token_file = path.with_suffix(".token")
    token_file.write_text((token or sim.token) + "\n")
    token_file.chmod(0o600)
    path.write_text(
        yaml.safe_dump(
            {
                "endpoint": sim.url,
                "project_id": sim.project_id,
                "auth": {"token_file": str(token_file)},
                "discover": discover,
            }
        )
    )
    return path


# -- collector check ----------------------------------------------------------------------------


async def test_check_sends_one_listing_and_says_reachable_accepted_and_how_many(tmp_path):
    async with Simulator(SimConfig(servers=12, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inv.yaml")
        code, stdout, stderr = await collector("check", "-i", str(inventory))
    assert code == ExitCode.OK, stdout + stderr
    token_file = tmp_path / "inv.token"
    assert stdout == (
        f"{sim.project_id}  {sim.url}  ok: reachable, credentials accepted "
        f"(token from {token_file}), 12 servers visible\n"
    )
    assert stderr == ""
    assert sim.count() == sim.count("list", 200) == 1


async def test_check_asks_for_one_server_and_without_a_count_says_at_least(tmp_path):
    listing = Listing(servers(5), count=False)
    async with serving(listing.app()) as url:
        code, stdout, _ = await collector("check", "-i", str(write_inventory(tmp_path / "inv.yaml", url)))
    assert code == ExitCode.OK
    assert "at least 2 servers visible" in stdout  # one on the page, and another page follows
    assert [dict(r.query) for r in listing.seen] == [{"limit": "1"}]


async def test_a_rejected_token_is_exit_3_naming_the_credentials_and_the_answer(tmp_path):
    async with Simulator(SimConfig(servers=3, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inv.yaml")
        (tmp_path / "inv.token").write_text("an-expired-token\n")
        code, stdout, stderr = await collector("check", "-i", str(inventory))
    assert code == ExitCode.AUTH, stdout + stderr
    assert (
        f"FAILED: reachable, credentials rejected (token from {tmp_path / 'inv.token'}): "
        "ListServers: HTTP 401 APIGW.0301"
    ) in stdout
    assert "give valid credentials" in stdout and "an-expired-token" not in stdout + stderr


async def test_credentials_that_may_not_list_servers_are_exit_3_and_say_so(tmp_path):
    listing = Listing(servers(1), status=403)
    async with serving(listing.app()) as url:
        code, stdout, _ = await collector("check", "-i", str(write_inventory(tmp_path / "inv.yaml", url)))
    assert code == ExitCode.AUTH
    assert "credentials accepted (token from" in stdout and "but not allowed to list servers" in stdout
    assert "HTTP 403 CLOUDDC.9" in stdout


async def test_a_closed_port_is_exit_4_within_the_timeout(tmp_path):
    port = closed_port()
    inventory = write_inventory(tmp_path / "inv.yaml", f"http://127.0.0.1:{port}")
    code, stdout, stderr = await collector("check", "--timeout", "0.5", "-i", str(inventory))
    assert code == ExitCode.UNREACHABLE, stdout + stderr
    assert (
        f"{PROJECT}  http://127.0.0.1:{port}  FAILED: unreachable: no answer in 0.5 s; last error: "
        f"ListServers: cannot connect to 127.0.0.1:{port}"
    ) in stdout
    assert stderr == ""  # the endpoint's probing and giving up are -v's


async def test_a_certificate_without_its_ca_is_exit_4_with_the_ca_bundle_hint_and_with_it_exit_0(tmp_path):
    server_tls, bundle = tls_pair(tmp_path)
    listing = Listing(servers(4))
    async with serving(listing.app(), server_tls) as url:
        inventory = write_inventory(tmp_path / "inv.yaml", url)
        code, stdout, stderr = await collector("check", "--timeout", "0.5", "-i", str(inventory))
        assert code == ExitCode.UNREACHABLE, stdout + stderr
        assert (
            "certificate verify failed for 127.0.0.1: give a CA bundle (tls: {ca_bundle: PATH} in the inventory)"
            in stdout
        )
        assert listing.seen == []
        inventory = write_inventory(tmp_path / "inv.yaml", url, tls={"ca_bundle": str(bundle)})
        code, stdout, stderr = await collector("check", "-i", str(inventory))
    assert code == ExitCode.OK, stdout + stderr
    assert f"{url}  ok: reachable, credentials accepted" in stdout and "4 servers visible" in stdout


async def test_a_project_without_auth_is_checked_with_the_credentials_the_sdk_would_find(tmp_path):
    async with Simulator(SimConfig(servers=2, **SMALL)) as sim:
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(yaml.safe_dump({"endpoint": sim.url, "project_id": sim.project_id, "servers": ["a"]}))
        code, stdout, stderr = await collector(
            "check",
            "-i",
            str(inventory),
            env={
                "HUAWEICLOUD_SDK_AK": sim.config.access_key,
                "HUAWEICLOUD_SDK_SK": sim.config.secret_key,
                "HOME": str(tmp_path),
            },
        )
    assert code == ExitCode.OK, stdout + stderr
    assert "credentials accepted (AK/SK from $HUAWEICLOUD_SDK_AK" in stdout and "2 servers visible" in stdout
    assert sim.config.secret_key not in stdout + stderr


async def test_credentials_rejected_win_over_an_unreachable_endpoint_and_each_project_has_its_line(
    tmp_path, fast_settings
):
    listing = Listing(servers(3))
    async with serving(listing.app()) as url:
        good, bad = tmp_path / "good.token", tmp_path / "bad.token"
        good.write_text(TOKEN + "\n")
        bad.write_text("nope\n")
        dead = f"http://127.0.0.1:{closed_port()}"
        projects = [
            {"project_id": "ok1", "auth": {"token_file": str(good)}, "servers": ["a"]},
            {"project_id": "rejected1", "auth": {"token_file": str(bad)}, "servers": ["a"]},
            {"project_id": "dead1", "endpoint": dead, "auth": {"token_file": str(good)}, "servers": ["a"]},
            {"project_id": "dead2", "endpoint": dead, "auth": {"token_file": str(good)}, "servers": ["a"]},
        ]
        path = tmp_path / "inv.yaml"
        path.write_text(yaml.safe_dump({"endpoint": url, "projects": projects}))
        settings = patient_for(fast_settings, timeout=0.3)
        async with open_session(settings) as session:
            checks = await check_inventory(load_inventory(path), settings, session, environ={})
    assert [(c.project_id, c.verdict) for c in checks] == [
        ("ok1", Verdict.OK),
        ("rejected1", Verdict.REJECTED),
        ("dead1", Verdict.UNREACHABLE),
        ("dead2", Verdict.UNREACHABLE),
    ]
    assert exit_code(c.verdict for c in checks) is ExitCode.AUTH
    assert exit_code(c.verdict for c in checks if c.verdict is not Verdict.REJECTED) is ExitCode.UNREACHABLE
    assert checks[0].servers == 3 and checks[0].exact
    assert sorted(r.match_info["project"] for r in listing.seen) == ["ok1", "rejected1"]


async def test_an_api_that_keeps_failing_is_exit_1_saying_what_it_answered(tmp_path, fast_settings):
    listing = Listing(servers(1), status=500)
    async with serving(listing.app()) as url:
        settings = patient_for(fast_settings)
        async with open_session(settings) as session:
            [check] = await check_inventory(
                load_inventory(write_inventory(tmp_path / "inv.yaml", url)), settings, session, environ={}
            )
    assert check.verdict is Verdict.FAILED and exit_code([check.verdict]) is ExitCode.PARTIAL
    assert len(listing.seen) == settings.policy.max_attempts
    assert check.line() == (
        f"{PROJECT}  {url}  FAILED: reachable, ListServers did not succeed: "
        "ListServers: HTTP 500 CLOUDDC.9: not this time"
    )


# -- collector validate --discover --------------------------------------------------------------


async def test_validate_alone_sends_nothing_even_for_a_discover_only_inventory(tmp_path):
    async with Simulator(SimConfig(servers=12, **SMALL)) as sim:
        code, stdout, stderr = await collector("validate", "-i", str(discover_only(tmp_path / "inv.yaml", sim)))
    assert code == ExitCode.OK, stdout + stderr
    assert "0 servers + what discover: true finds (--discover)" in stdout
    assert sim.count() == 0


async def test_validate_discover_shows_found_chosen_and_the_first_ids(tmp_path):
    async with Simulator(SimConfig(servers=12, **SMALL)) as sim:
        inventory = discover_only(tmp_path / "inv.yaml", sim)
        code, stdout, stderr = await collector("validate", "--discover", "-i", str(inventory))
    assert code == ExitCode.OK, stdout + stderr
    lines = stdout.splitlines()
    assert lines[0] == (
        f"{sim.project_id}  {sim.url}  12 found by ListServers, 12 chosen by discover: true  "
        f"(token from {tmp_path / 'inv.token'})"
    )
    assert lines[1:7] == [f"  {sid}  node-{n:04d}" for n, sid in enumerate(sim.server_ids[:5])] + ["  ... and 7 more"]
    assert lines[7] == f"{inventory}: OK, 12 servers in 1 project"
    assert sim.count() == sim.count("list", 200) == 1  # one page; nothing else was asked


async def test_validate_discover_with_select_and_a_filter_counts_what_the_run_would_take(tmp_path):
    async with Simulator(SimConfig(servers=30, **SMALL)) as sim:
        inventory = discover_only(tmp_path / "inv.yaml", sim, discover={"name": "node-001*"})
        code, stdout, stderr = await collector(
            "validate", "--discover", "-i", str(inventory), "--select", "name:node-001[2-4]"
        )
    assert code == ExitCode.OK, stdout + stderr
    assert stdout.splitlines()[:4] == [
        "3 of 10 servers match name:node-001[2-4]",
        *[f"  {sim.project_id}/{sim.server_ids[n]}  node-{n:04d}" for n in (12, 13, 14)],
    ]
    assert "30 found by ListServers, 10 chosen by discover: name node-001*" in stdout


async def test_validate_discover_lists_unusable_servers_with_the_reason(tmp_path):
    listed = [*servers(2), {"id": "../../etc", "name": "evil"}]
    listing = Listing(listed)
    async with serving(listing.app()) as url:
        inventory = write_inventory(tmp_path / "inv.yaml", url, discover=True)
        code, stdout, stderr = await collector("validate", "--discover", "-i", str(inventory))
    assert code == ExitCode.OK, stdout + stderr
    assert "3 found by ListServers, 2 chosen by discover: true, 1 unusable" in stdout
    assert "  unusable: ../../etc: " in stdout and "file name" in stdout
    assert stdout.splitlines()[-1] == f"{inventory}: OK, 2 servers in 1 project"


async def test_validate_discover_with_a_rejected_token_is_exit_3(tmp_path):
    async with Simulator(SimConfig(servers=3, **SMALL)) as sim:
        inventory = discover_only(tmp_path / "inv.yaml", sim, token="stale")
        code, stdout, stderr = await collector("validate", "--discover", "-i", str(inventory))
    assert code == ExitCode.AUTH, stdout + stderr
    assert f"{sim.project_id}  {sim.url}  discovery FAILED: ListServers: HTTP 401" in stdout
    assert stdout.splitlines()[-1] == f"{inventory}: discovery failed for 1 project"


async def test_a_discovery_the_api_refuses_is_reported_not_a_crash(tmp_path, fast_settings):
    """ListServers answered 401: the run ends as any 401 does (exit 3), not as a bug (70), and
    the report says discovery failed and why."""
    from collector.errors import ExitCode
    from collector.run.outcome import exit_code
    from collector.run.runner import run_sweep
    from collector.simulator import SimConfig, Simulator

    async with Simulator(SimConfig(servers=3, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        data = yaml.safe_load((tmp_path / "inventory.yaml").read_text())
        data["discover"] = True
        (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(data))
        inventory = load_inventory(tmp_path / "inventory.yaml")
        sim.revoke_token()
        outcome = await run_sweep(inventory, fast_settings, tmp_path / "out")
    assert outcome.crash is None
    assert exit_code(outcome) is ExitCode.AUTH
    assert not [r for r in outcome.results if r.server_id == "(discovery)"]  # not a server (issue 16)
    [failure] = outcome.discovery_failed
    assert failure["project_id"] == sim.project_id and "401" in failure["error"]
    assert any(line.startswith("discovery failed for project") for line in outcome.summary)


async def test_validate_discover_shows_the_inventorys_own_names(tmp_path):
    """`db-01` in the inventory, `node-0000` at the API: the inventory's wins, as in a run (issue 16)."""
    async with Simulator(SimConfig(servers=3, **SMALL)) as sim:
        inventory = discover_only(tmp_path / "inv.yaml", sim)
        data = yaml.safe_load(inventory.read_text())
        data["servers"] = [{"id": sim.server_ids[0], "name": "db-01"}]
        inventory.write_text(yaml.safe_dump(data))
        code, stdout, stderr = await collector("validate", "--discover", "-i", str(inventory))
    assert code == ExitCode.OK, stdout + stderr
    assert f"  {sim.server_ids[0]}  db-01" in stdout.splitlines()
    assert f"  {sim.server_ids[1]}  node-0001" in stdout.splitlines()
