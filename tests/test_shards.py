"""Shards of a fleet for the pods of an Indexed Job: disjoint, complete, the same in every pod
whatever the inventory's order, and `--shard K/N` refused clearly when it cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.auth import StaticToken
from collector.config.inventory import Inventory, Project, Server
from collector.config.shards import MAX_SHARDS, Shard, parse_report_name, parse_shard, shard_of
from collector.errors import UsageError

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=200)  # the rest is conftest's profile

TOKEN = StaticToken("t0k3n", "$CLOUDDC_TOKEN")


def inventory(fleet: dict[str, list[str]], settings_: dict | None = None) -> Inventory:
    projects = tuple(
        Project(pid, f"https://{pid}.example", TOKEN, tuple(Server(sid) for sid in sids)) for pid, sids in fleet.items()
    )
    return Inventory(Path("fleet.yaml"), projects, settings_ or {})


def pairs(inv: Inventory) -> list[tuple[str, str]]:
    return [(project.project_id, server.id) for project, server in inv.targets()]


project_ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
server_ids = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=20)
fleets = st.dictionaries(project_ids, st.lists(server_ids, min_size=1, max_size=30, unique=True), max_size=6)
counts = st.integers(min_value=1, max_value=16)


# -- the split ---------------------------------------------------------------------------------


@PROPERTY
@given(fleet=fleets, count=counts)
def test_shards_are_disjoint_and_together_are_the_whole_fleet(fleet, count):
    whole = inventory(fleet)
    seen: dict[tuple[str, str], int] = {}
    for index in range(count):
        for pair in pairs(Shard(index, count).select(whole)):
            assert pair not in seen, f"{pair} in shards {seen[pair]} and {index}"
            seen[pair] = index
    assert sorted(seen) == sorted(pairs(whole))


@PROPERTY
@given(fleet=fleets, count=counts, data=st.data())
def test_a_server_lands_in_the_same_shard_whatever_the_inventory_order(fleet, count, data):
    shuffled = {pid: data.draw(st.permutations(fleet[pid])) for pid in data.draw(st.permutations(list(fleet)))}
    for index in range(count):
        shard = Shard(index, count)
        assert set(pairs(shard.select(inventory(fleet)))) == set(pairs(shard.select(inventory(shuffled))))


@PROPERTY
@given(fleet=fleets, count=counts)
def test_a_shard_keeps_the_inventory_order_and_drops_projects_left_empty(fleet, count):
    whole = inventory(fleet)
    order = {pair: i for i, pair in enumerate(pairs(whole))}
    for index in range(count):
        part = Shard(index, count).select(whole)
        positions = [order[pair] for pair in pairs(part)]
        assert positions == sorted(positions)
        assert all(project.servers for project in part.projects)


# Pinned: a different hash moves servers between shards, and pods of one Job running two
# versions would then collect some servers twice and others never.
KNOWN = [
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "2102313YJK10N1000123", 0, 1, 80),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "2102313YJK10N1000124", 15, 6, 495),
    ("proj-a", "db-01", 7, 2, 479),
    ("proj-a", "db-02", 7, 6, 535),
    ("proj_b", "服务器-7", 6, 4, 766),
    ("p", "s", 11, 1, 827),
]


@pytest.mark.parametrize(("project_id", "server_id", "of_16", "of_7", "of_1000"), KNOWN)
def test_the_shard_of_a_server_never_changes_between_versions(project_id, server_id, of_16, of_7, of_1000):
    assert shard_of(project_id, server_id, 16) == of_16
    assert shard_of(project_id, server_id, 7) == of_7
    assert shard_of(project_id, server_id, 1000) == of_1000


def test_servers_spread_evenly_over_the_shards():
    """10,000 servers over 8 shards: each within 10 % of 1,250 (sha256 is uniform)."""
    sizes = [0] * 8
    for n in range(10_000):
        sizes[shard_of("0f1e2d3c4b5a69788796a5b4c3d2e1f0", f"2102313YJK10N{n:07d}", 8)] += 1
    assert all(1125 <= size <= 1375 for size in sizes), sizes


def test_an_empty_shard_is_an_inventory_with_no_servers():
    whole = inventory({"p": ["s"]}, {"concurrency": 8})
    owner = shard_of("p", "s", 4)
    empty = Shard((owner + 1) % 4, 4).select(whole)
    assert empty.projects == () and empty.server_count == 0 and list(empty.targets()) == []
    assert empty.path == whole.path and empty.settings == {"concurrency": 8}


def test_a_shard_shares_the_projects_endpoint_credentials_and_settings():
    whole = inventory({f"p{i}": [f"s{j}" for j in range(20)] for i in range(3)}, {"rate": 5})
    part = Shard(0, 2).select(whole)
    assert part.settings is whole.settings
    for project in part.projects:
        original = next(p for p in whole.projects if p.project_id == project.project_id)
        assert project.credentials is original.credentials and project.endpoint == original.endpoint
        assert set(project.servers) <= set(original.servers)


def test_one_shard_of_one_is_the_whole_inventory():
    whole = inventory({"p": ["a", "b", "c"], "q": ["d"]})
    assert pairs(Shard(0, 1).select(whole)) == pairs(whole)


# -- names and the share of the rate -----------------------------------------------------------


def test_a_shard_names_its_state_folder_and_report_by_index_and_count(tmp_path):
    shard = Shard(3, 8)
    assert shard.label == "shard-3-of-8"
    assert shard.report_name == "report.shard-3-of-8.json"
    assert shard.state_dir(tmp_path) == tmp_path / ".collector" / "shard-3-of-8"
    assert shard.state_dir(str(tmp_path)) == tmp_path / ".collector" / "shard-3-of-8"


def test_each_shard_starts_at_its_share_of_the_rate():
    assert Shard(0, 4).rate(20) == 5
    assert Shard(2, 3).rate(10) == pytest.approx(10 / 3)
    assert Shard(0, 1).rate(20) == 20


@given(index=st.integers(0, 99), extra=st.integers(1, 100))
@PROPERTY
def test_a_report_name_gives_back_its_shard(index, extra):
    shard = Shard(index, index + extra)
    assert parse_report_name(shard.report_name) == shard


@pytest.mark.parametrize(
    "name",
    [
        "report.json",
        "report.shard-4-of-4.json",
        "report.shard-01-of-4.json",
        "report.shard-0-of-04.json",
        "report.shard-0-of-0.json",
        "report.shard--1-of-4.json",
        "report.shard-a-of-b.json",
        "report.shard-0-of-4.json.tmp",
        "xreport.shard-0-of-4.json",
        "report.shard-0-of-4.JSON",
        f"report.shard-0-of-{MAX_SHARDS + 1}.json",
        "report.shard-0-of-" + "9" * 5000 + ".json",
    ],
)
def test_anything_else_is_not_a_report_name(name):
    assert parse_report_name(name) is None


# -- --shard K/N -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shard"),
    [
        ("0/4", Shard(0, 4)),
        ("3/4", Shard(3, 4)),
        ("0/1", Shard(0, 1)),
        (" 2/4\n", Shard(2, 4)),
        ("02/04", Shard(2, 4)),
        (f"{MAX_SHARDS - 1}/{MAX_SHARDS}", Shard(MAX_SHARDS - 1, MAX_SHARDS)),
    ],
)
def test_shard_is_index_slash_count(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("3/3", "'3/3': the index must be below the number of shards", "0/3 to 2/3"),
        ("7/3", "'7/3': the index must be below the number of shards", "0/3 to 2/3"),
        ("-1/4", "'-1/4': expected K/N, two whole numbers", "like --shard 0/4"),
        ("a/b", "'a/b': expected K/N, two whole numbers", "like --shard 0/4"),
        ("1/2/3", "'1/2/3': expected K/N, two whole numbers", "like --shard 0/4"),
        ("4", "'4': expected K/N, two whole numbers", "like --shard 0/4"),
        ("", "'': expected K/N, two whole numbers", "like --shard 0/4"),
        ("1/٤", "expected K/N, two whole numbers", "like --shard 0/4"),
        ("0/0", "'0/0': there must be at least 1 shard", "the Job's completions"),
        ("0/" + "9" * 30, "more than 100000 shards", "at most 100000"),
        ("0/" * 40 + "1", "expected K/N", "like --shard 0/4"),
        ("0" * 5000 + "/" + "0" * 5000 + "x", "expected K/N", "like --shard 0/4"),
    ],
)
def test_a_shard_that_cannot_work_is_refused_with_what_to_give(text, message, hint):
    with pytest.raises(UsageError) as caught:
        parse_shard(text)
    error = caught.value
    assert error.message.startswith("--shard ")
    assert message in error.message and hint in error.hint
    assert "\n" not in str(error) and len(str(error)) < 300


@pytest.mark.parametrize("text", ["$(JOB_COMPLETION_INDEX)/4", "${JOB_COMPLETION_INDEX}/4", "$JOB_COMPLETION_INDEX/4"])
def test_an_unexpanded_job_completion_index_says_the_job_must_be_indexed(text):
    with pytest.raises(UsageError) as caught:
        parse_shard(text)
    assert "JOB_COMPLETION_INDEX was not expanded" in caught.value.message
    assert "completionMode: Indexed" in caught.value.hint


def test_the_flag_named_in_errors_can_be_another():
    with pytest.raises(UsageError, match=r"^COLLECTOR_SHARD '3/3'"):
        parse_shard("3/3", flag="COLLECTOR_SHARD")


def test_a_shard_out_of_range_cannot_be_built():
    for index, count in [(3, 3), (-1, 4), (0, 0), (0, MAX_SHARDS + 1)]:
        with pytest.raises(ValueError):
            Shard(index, count)


# -- an empty shard runs --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_empty_shard_runs_and_reports_zero_servers(tmp_path, fast_settings):
    from collector.run.runner import run_sweep

    whole = inventory({"p": ["s"]})
    empty = Shard((shard_of("p", "s", 2) + 1) % 2, 2).select(whole)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    outcome = await run_sweep(empty, fast_settings, out)
    assert outcome.results == []
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["servers"] == 0 and report["servers"] == []


# -- shards of one run, side by side ------------------------------------------------------------


@pytest.mark.anyio
async def test_four_shards_into_one_folder_then_merge_collect_every_server_exactly_once(tmp_path, fast_settings):
    import anyio

    from collector.config.inventory import load_inventory
    from collector.errors import ExitCode
    from collector.observe.merge import merge_folder
    from collector.run.outcome import exit_code
    from collector.run.runner import run_sweep
    from collector.simulator import SimConfig, Simulator

    config = SimConfig(servers=40, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=17)
    out = tmp_path / "out"
    outcomes = {}
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")

        async def shard(index: int) -> None:
            outcomes[index] = await run_sweep(inventory, fast_settings, out, shard=parse_shard(f"{index}/4"))

        async with anyio.create_task_group() as pods:
            for index in range(4):
                pods.start_soon(shard, index)
        exports = sim.count("export")
    assert all(exit_code(o) is ExitCode.OK for o in outcomes.values())
    assert sum(len(o.results) for o in outcomes.values()) == 40
    assert exports == 40  # no server in two shards
    for index in range(4):
        assert (out / f"report.shard-{index}-of-4.json").exists()
        assert (out / ".collector" / f"shard-{index}-of-4" / "journal.db").exists()
    merged = merge_folder(out)
    assert merged.exit_code is ExitCode.OK and merged.complete
    assert sorted(s["server_id"] for s in merged.report["servers"]) == sorted(sim.server_ids)
    assert merged.report["totals"]["collected"] == 40
    for sid in sim.server_ids:
        assert (out / sim.project_id / f"{sid}-dump.tar.gz").read_bytes() == sim.expected_archive(sid)


def test_a_shard_out_of_range_is_a_usage_error_on_the_command_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "inventory.yaml").write_text("endpoint: https://x\nproject_id: p\nauth: {token_env: T}\nservers: [a]\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "run",
            "-i",
            str(tmp_path / "inventory.yaml"),
            "-o",
            str(tmp_path / "out"),
            "--shard",
            "4/4",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "--shard" in run.stderr and "Traceback" not in run.stderr


# -- a shard keeps only its own servers while it reads the inventory ---------------------------

TOKEN_YAML = "auth: {token_env: CLOUDDC_TOKEN}\n"
ENV = {"CLOUDDC_TOKEN": "t0k3n"}


def _entries(ids: list[str]) -> str:
    return "".join(f"  - {{id: {sid}, name: n-{sid}}}\n" if i % 2 else f"  - {sid}\n" for i, sid in enumerate(ids))


def _listed(inv: Inventory) -> list[tuple[str, str, str | None]]:
    return [(project.project_id, server.id, server.name) for project, server in inv.targets()]


@pytest.mark.parametrize("form", ["top", "projects", "servers-first"])
def test_a_shard_reads_only_its_servers_and_gets_what_selecting_afterwards_gets(tmp_path, form):
    from collector.config.inventory import load_inventory

    ids = [f"srv-{n:04d}" for n in range(300)]
    if form == "top":
        text = f"endpoint: https://a.example\n{TOKEN_YAML}project_id: p1\nservers:\n{_entries(ids)}"
    elif form == "projects":
        text = (
            f"endpoint: https://a.example\n{TOKEN_YAML}projects:\n"
            f"- project_id: p1\n  servers:\n{_entries(ids[:200])}"
            f"- project_id: p2\n  servers:\n{_entries(ids[200:])}"
        )
    else:  # the project's id after its servers: read whole, then kept
        text = f"endpoint: https://a.example\n{TOKEN_YAML}servers:\n{_entries(ids)}project_id: p1\n"
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    whole = load_inventory(path, ENV)
    kept = [load_inventory(path, ENV, keep=Shard(index, 4).owns) for index in range(4)]
    for index, inv in enumerate(kept):
        assert _listed(inv) == _listed(Shard(index, 4).select(whole))
    assert sorted(pair for inv in kept for pair in _listed(inv)) == sorted(_listed(whole))


def test_every_shard_refuses_the_same_inventory_with_the_same_problems(tmp_path):
    from collector.config.inventory import load_inventory
    from collector.errors import InventoryError

    ids = [f"srv-{n:03d}" for n in range(40)] + ["bad/id", "srv-007"]  # a bad id, and one listed twice
    path = tmp_path / "fleet.yaml"
    path.write_text(f"endpoint: https://a.example\n{TOKEN_YAML}project_id: p1\nservers:\n{_entries(ids)}")
    with pytest.raises(InventoryError) as whole:
        load_inventory(path, ENV)
    for index in range(3):
        with pytest.raises(InventoryError) as shard:
            load_inventory(path, ENV, keep=Shard(index, 3).owns)
        assert str(shard.value) == str(whole.value)
