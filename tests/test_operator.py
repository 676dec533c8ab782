"""What a new operator met (issue 16): each case through the command line, as a user types it,
against the simulator over loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import anyio
import pytest
import yaml
from _listing import collector, collector_run, read_until, run_argv

from collector.errors import ExitCode
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))
FAST = ["--poll-interval", "0.1", "--no-progress"]


async def test_a_ticket_line_of_ids_separated_by_spaces_selects_each_and_a_typo_is_warned(tmp_path):
    """`@FILE` with `id1 id2` on one line was one term matching nothing: 2 of 4 collected, exit 0."""
    async with Simulator(SimConfig(servers=6, seed=3, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        a, b, c, d = sim.server_ids[:4]
        ticket = tmp_path / "ticket.txt"
        ticket.write_text(f"{a} {b}\n{c},{d}   # the rack of INC-1234\nnot-a-server\n")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--select", f"@{ticket}", *FAST)
    assert code == ExitCode.OK, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(s["server_id"] for s in report["servers"]) == sorted([a, b, c, d])
    warning = [line for line in stderr.splitlines() if "match no server" in line or "matches no server" in line]
    assert len(warning) == 1 and "ticket.txt:3: 'not-a-server'" in warning[0], stderr


async def test_validate_warns_about_each_term_that_matches_nothing(tmp_path):
    async with Simulator(SimConfig(servers=3, seed=4, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, stdout, stderr = await collector(
            "validate", "-i", str(inventory), "--select", f"{sim.server_ids[0]},nope-1,name:nope-*"
        )
    assert code == ExitCode.OK, stderr
    assert "1 of 3 servers match" in stdout
    assert stderr.strip() == "collector: warning: --select: 2 terms match no server: 'nope-1', 'name:nope-*'"


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--metrics-file", "{tmp}/missing/collector.prom", "does not exist"),
        ("--metrics-file", "{tmp}", "is a folder"),
        ("--pushgateway", "ftp://pushgateway:9091", "https://"),
    ],
)
async def test_every_output_is_checked_before_the_first_request(tmp_path, flag, value, words):
    """A --metrics-file into a missing folder was one warning at the end, and exit 0."""
    async with Simulator(SimConfig(servers=2, seed=5, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", flag, value.format(tmp=tmp_path), *FAST)
        assert sim.count() == 0
    assert code == ExitCode.USAGE
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"collector: error: {flag}") and words in lines[0], stderr
    assert not (tmp_path / "out").exists()


async def test_a_folder_in_use_is_one_line_and_exit_2_before_any_request(tmp_path):
    """It was `internal error: JournalError ... please report it`, exit 70, after discovery's
    ListServers calls had gone out (issue 16, bug 1)."""
    config = SimConfig(servers=2, seed=6, export_seconds=(30, 30), archive_bytes=(4096, 8192))
    async with Simulator(config) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        with_discovery = tmp_path / "discover.yaml"
        text = inventory.read_text()
        with_discovery.write_text(text + "discover: {}\n")
        out = tmp_path / "out"
        first = await anyio.open_process(
            run_argv(inventory, out, *FAST),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with anyio.fail_after(20):
                while sim.count("export") < 2:
                    await anyio.sleep(0.05)
            code, _, stderr = await collector_run(with_discovery, out, *FAST)
            assert sim.count("list") == 0  # the second run sent no ListServers
        finally:
            first.terminate()
            await first.wait()
    assert code == ExitCode.USAGE, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and "in use by another collector run" in lines[0] and "internal" not in lines[0], stderr


async def test_a_short_export_timeout_judges_the_server_not_our_own_queue(tmp_path):
    """--export-timeout 2 with exports of 1-1.5 s behind an API of 20 requests/s: the polls wait
    in our own limiter past the 2 s, but every export finished in time, so none may fail. It
    used to fail some "did not report status within 2 s" (issue 16, bug 8)."""
    config = SimConfig(servers=60, seed=8, export_seconds=(1.0, 1.5), archive_bytes=(4096, 8192), rate_limit=20)
    async with Simulator(config) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(
            inventory,
            tmp_path / "out",
            "--export-timeout",
            "2",
            "--rate",
            "20",
            "--poll-interval",
            "0.5",
            "--no-progress",
        )
    assert code == ExitCode.OK, stderr
    assert sim.count("export", status=202) == 60  # none exported twice (start-up may meet a 429 above --rate)


async def test_an_export_that_outlives_the_timeout_says_how_long_and_groups_in_the_summary(tmp_path):
    config = SimConfig(servers=4, seed=9, export_seconds=(0.1, 0.2), archive_bytes=(4096, 8192), stuck=2)
    async with Simulator(config) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--export-timeout", "1", *FAST)
    assert code == ExitCode.PARTIAL, stderr
    assert "2 x export not completed within --export-timeout" in stderr, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    errors = [s["error"] for s in report["servers"] if s["state"] == "failed"]
    assert len(errors) == 2 and all("(--export-timeout 1 s)" in error and " after " in error for error in errors)


@pytest.mark.slow
async def test_the_progress_line_says_it_waits_on_exports_not_100_percent(tmp_path):
    """Two stuck exports of ten: the line at 10 s says what the run waits on, below 100 %."""
    config = SimConfig(servers=10, seed=10, export_seconds=(0.1, 0.2), archive_bytes=(4096, 8192), stuck=2)
    async with Simulator(config) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "out", "--export-timeout", "12", *FAST)
    assert code == ExitCode.PARTIAL, stderr
    progress = [line for line in stderr.splitlines() if "progress:" in line]
    assert len(progress) >= 2, stderr
    assert "80% 8/10" in progress[1] and "waiting on 2 exports (timeout in 0:0" in progress[1], progress
    assert not any("100%" in line for line in progress)


async def test_a_failed_discovery_is_reported_for_its_project_not_counted_as_a_server(tmp_path):
    """`0/3 servers collected` for 2 servers, and `server_id: "(discovery)"` in report.json
    (issue 16, bug 3): a project whose ListServers failed is said at run level."""
    async with Simulator(SimConfig(servers=2, seed=11, **SMALL)) as sim:
        listed = sim.write_inventory(tmp_path / "listed.yaml")
        data = yaml.safe_load(listed.read_text())
        other = "f" * 32  # a project the API does not know: ListServers answers 404
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(
            yaml.safe_dump(
                {
                    "endpoint": data["endpoint"],
                    "auth": data["auth"],
                    "projects": [
                        {"project_id": data["project_id"], "servers": data["servers"]},
                        {"project_id": other, "discover": True},
                    ],
                }
            )
        )
        code, _, stderr = await collector_run(inventory, tmp_path / "out", *FAST)
    assert code == ExitCode.PARTIAL, stderr
    assert "2/2 servers collected" in stderr and f"discovery failed for project {other}:" in stderr, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["servers"] == 2 and all(s["server_id"] != "(discovery)" for s in report["servers"])
    [failure] = report["run"]["discovery_failed"]
    assert failure["project_id"] == other and failure["error"]


async def test_a_misspelt_option_gets_the_commands_usage_and_the_option_meant(tmp_path):
    code, _, stderr = await collector("run", "-i", "x.yaml", "-o", str(tmp_path / "out"), "--concurency", "5")
    assert code == ExitCode.USAGE
    assert stderr.startswith("usage: collector run ") and "--concurency: did you mean --concurrency?" in stderr


async def test_an_inventory_given_without_its_option_gets_the_option_named(tmp_path):
    code, _, stderr = await collector("run", "fleet.yaml", "-o", str(tmp_path / "out"))
    assert code == ExitCode.USAGE
    assert "fleet.yaml: an inventory is given as -i fleet.yaml" in stderr, stderr


async def test_a_shard_past_the_last_is_one_line_and_the_start_line_names_the_shard(tmp_path):
    async with Simulator(SimConfig(servers=4, seed=12, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, _, stderr = await collector_run(inventory, tmp_path / "a", "--shard", "2/2")
        assert code == ExitCode.USAGE and len(stderr.splitlines()) == 1 and "0/2 to 1/2" in stderr, stderr
        code, _, stderr = await collector_run(inventory, tmp_path / "b", "--shard", "1/2", *FAST)
    assert code == ExitCode.OK, stderr
    assert "shard 1/2 (of 0/2 to 1/2)" in stderr.splitlines()[0]


@pytest.mark.parametrize("where", ["flag", "inventory"])
async def test_with_json_logs_a_usage_error_is_one_json_object(tmp_path, where):
    async with Simulator(SimConfig(servers=2, seed=13, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        if where == "inventory":
            inventory.write_text(inventory.read_text() + "collector: {log_format: json}\n")
        flags = ["--log-format", "json"] if where == "flag" else []
        code, _, stderr = await collector_run(inventory, tmp_path / "out", *flags, "--select", "nothing")
    assert code == ExitCode.USAGE
    [record] = [json.loads(line) for line in stderr.splitlines()]
    assert record["level"] == "error" and record["event"] == "usage_error" and "--select" in record["message"]


async def test_run_help_says_what_it_does_and_its_exit_codes():
    code, stdout, _ = await collector("run", "--help")
    assert code == 0 and "exit codes:" in stdout and "  4    the API could not be reached" in stdout
    assert "resuming what an earlier run into OUT left" in stdout
    assert not re.search(r"\$XDG_STATE_HOME/collector\)\s+\(default", stdout)  # its default said once


async def test_validate_select_on_a_discover_inventory_suggests_discover(tmp_path):
    async with Simulator(SimConfig(servers=2, seed=14, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        inventory.write_text(inventory.read_text() + "discover: true\n")
        code, _, stderr = await collector("validate", "-i", str(inventory), "--select", "name:db-*")
    assert code == ExitCode.USAGE
    assert "collector validate --discover --select" in stderr and len(stderr.splitlines()) == 1, stderr


async def test_counts_read_as_words(tmp_path):
    """`1 servers`, `project(s)`: what a new operator read."""
    async with Simulator(SimConfig(servers=1, seed=15, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        code, stdout, _ = await collector("validate", "-i", str(inventory))
    assert code == 0
    assert stdout.splitlines()[-1] == f"{inventory}: OK, 1 server in 1 project"
    assert "  1 server  (" in stdout and "(s)" not in stdout


async def test_warning_lines_shorten_ids_and_the_json_fields_keep_them_whole(tmp_path):
    """A project id and a server id are 53 characters: a failure's line passed 80 columns."""
    async with Simulator(SimConfig(servers=3, seed=16, failing=1, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        failing = sim.fleet.failing_ids[0]
        _, _, text = await collector_run(inventory, tmp_path / "a", *FAST)
        _, _, logs = await collector_run(inventory, tmp_path / "b", "--log-format", "json", *FAST)
    [line] = [line for line in text.splitlines() if ": failed: " in line]
    assert f"{sim.project_id[:4]}\u2026{sim.project_id[-4:]}/{failing[:4]}\u2026{failing[-4:]}: failed:" in line
    [record] = [json.loads(line) for line in logs.splitlines() if '"server_failed"' in line]
    assert (record["project_id"], record["server_id"]) == (sim.project_id, failing)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"HUAWEICLOUD_SDK_AK": "AK0", "HUAWEICLOUD_SDK_SK": "SK0"},
            "no auth: the SDK's lookup finds AK/SK from $HUAWEICLOUD_SDK_AK",
        ),
        ({}, "no auth, and none in the environment, the credentials file or pod identity"),
    ],
    ids=["found", "none"],
)
async def test_validate_says_which_credentials_a_run_would_use_without_auth(tmp_path, env, said):
    """`auth:` left out: validate said only "looked up at run time"; a new operator's exported
    CLOUDDC_TOKEN was silently ignored and only `check` told (issue 16)."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("region: cn-east-3\nproject_id: " + "a" * 32 + "\nservers: [s1]\n")
    assert not any(name.startswith(("HUAWEICLOUD_SDK_", "HC_CONTAINER_")) for name in os.environ)
    code, stdout, stderr = await collector("validate", "-i", str(inventory), env={"HOME": str(tmp_path), **env})
    assert code == ExitCode.OK, stderr
    assert said in stdout and "SK0" not in stdout


async def test_a_token_refused_at_discovery_ends_the_run_before_the_sweep_pays_for_it_again(tmp_path):
    """Discovery and then the sweep each paid for a rejected token (issue 16, bug 3)."""
    async with Simulator(SimConfig(servers=3, seed=17, **SMALL)) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        inventory.write_text(inventory.read_text() + "discover: true\n")
        sim.revoke_token()
        code, _, stderr = await collector_run(inventory, tmp_path / "out", *FAST)
        assert sim.count("export") == 0 and sim.count("status") == 0
    assert code == ExitCode.AUTH, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["state"] for s in report["servers"]} == {"pending"} and report["run"]["stopped"] == "credentials rejected"


async def test_every_inventory_problem_comes_in_one_round(tmp_path):
    """Two key typos were reported, then after fixing them a duplicate id and `rate: fast`."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "endpoint: https://clouddc.cn-east-3.myhuaweicloud.com\n"
        f"project_id: {'a' * 32}\n"
        "servres: [a]\n"
        "servers: [a, a]\n"
        "colector: {}\n"
        "collector: {rate: fast, concurency: 4}\n"
    )
    code, _, stderr = await collector("validate", "-i", str(inventory))
    assert code == ExitCode.USAGE
    lines = stderr.splitlines()
    assert len(lines) == 5, stderr
    for words in ("servres: unknown key", "listed twice", "colector: unknown key", "'fast'", "concurency"):
        assert sum(words in line for line in lines) == 1, (words, stderr)
    assert "required but missing" not in stderr  # `servres` is the `servers` meant, said once


async def test_demo_help_speaks_of_no_inventory():
    code, stdout, _ = await collector("demo", "--help")
    assert code == 0 and "collector: section" not in stdout and "how many simulated servers" in stdout


@pytest.mark.slow
async def test_one_servers_long_retry_after_does_not_stall_the_fleet_and_the_run_says_it_waits(tmp_path):
    """One download answered `503 Retry-After: 600`: every other download stood still for ten
    minutes, with `0 req/s ... ETA 0:59` on the progress line (issue 17)."""
    config = SimConfig(servers=100, seed=18, retry_after_seconds=600, **SMALL)
    async with Simulator(config) as sim:
        target = sim.server_ids[37]
        sim.script(target, download=["503-retry-after"])
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        started = anyio.current_time()
        process = await anyio.open_process(
            run_argv(inventory, tmp_path / "out", *FAST),
            stderr=subprocess.PIPE,
        )
        seen = bytearray()
        try:
            marker = b"waiting: API asked to retry after 600 s (1 server, until"
            await read_until(process.stderr, marker, seen, seconds=45)
            took = anyio.current_time() - started
            others = [sid for sid in sim.server_ids if sid != target]
            assert all((tmp_path / "out" / sim.project_id / f"{sid}-dump.tar.gz").exists() for sid in others)
            assert took < 60, took
        finally:
            process.send_signal(signal.SIGTERM)
            async for chunk in process.stderr:
                seen += chunk
            code = await process.wait()
    assert code == ExitCode.SIGTERM, seen.decode()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    states = {s["server_id"]: s["state"] for s in report["servers"]}
    assert states.pop(target) == "pending" and set(states.values()) == {"collected"}


async def test_a_server_waiting_out_a_long_retry_after_gives_its_concurrency_place_back(tmp_path):
    """With --concurrency 1, the one place was held through a ten-minute Retry-After: nothing
    else could start. Now the waiting server gives it back while it waits (issue 17)."""
    config = SimConfig(servers=3, seed=20, retry_after_seconds=600, **SMALL)
    async with Simulator(config) as sim:
        first, *others = sim.server_ids
        sim.script(first, export=["503-retry-after"])
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        out = tmp_path / "out"
        process = await anyio.open_process(
            run_argv(inventory, out, "--concurrency", "1", *FAST),
            stderr=subprocess.DEVNULL,
        )
        try:
            with anyio.fail_after(30):
                while not all((out / sim.project_id / f"{sid}-dump.tar.gz").exists() for sid in others):
                    await anyio.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    assert code == ExitCode.SIGTERM
    assert not (out / sim.project_id / f"{first}-dump.tar.gz").exists()
