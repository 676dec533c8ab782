"""Merging shard reports: every server once with the totals recomputed, and whatever the files
alone show went wrong (a shard that never reported, two runs' reports mixed, a server in two
reports or in the wrong one) named, with exit 1; a file that is no report is one clear line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.config.shards import Shard, shard_of
from collector.errors import ExitCode, UsageError
from collector.observe import merge
from collector.observe.merge import ReportError, load_folder, merge_folder, merge_reports, read_reports
from collector.observe.report import build_report
from collector.sweep.results import ServerResult

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def collected(server_id: str, size: int = 1000, project_id: str = PROJECT) -> ServerResult:
    return ServerResult(
        project_id,
        server_id,
        None,
        state="collected",
        file=f"{project_id}/{server_id}-dump.tar.gz",
        bytes=size,
        sha256="0" * 64,
        export_id="17",
        attempts=1,
        duration_s=7.5,
    )


def failed(server_id: str, project_id: str = PROJECT, size: int | None = None) -> ServerResult:
    """`size`: what a failed download had written before it failed, which counts for nothing."""
    return ServerResult(
        project_id,
        server_id,
        None,
        state="failed",
        error="export 17 failed at 40%",
        error_kind="export",
        attempts=1,
        bytes=size,
    )


def pending(server_id: str, project_id: str = PROJECT) -> ServerResult:
    return ServerResult(project_id, server_id, None, state="pending", error="not collected: SIGTERM")


FLEET = [collected(f"2102313YJK10N{n:07d}", size=1000 + n) for n in range(40)]


def shard_report(
    shard: Shard, results: list[ServerResult] = FLEET, *, start: int = 0, end: int = 60, stopped: str | None = None
) -> dict:
    """The report shard `shard` writes, as `collector run --shard` builds it; times in seconds from T0."""
    mine = [r for r in results if shard.owns(r.project_id, r.server_id)]
    return build_report(
        mine,
        started_at=T0 + timedelta(seconds=start),
        finished_at=T0 + timedelta(seconds=end),
        inventory="fleet.yaml",
        stopped=stopped,
    )


def all_shards(count: int, results: list[ServerResult] = FLEET) -> dict[str, dict]:
    return {
        Shard(k, count).report_name: shard_report(Shard(k, count), results, start=k, end=50 + k) for k in range(count)
    }


def write(folder: Path, reports: dict[str, dict]) -> None:
    for name, report in reports.items():
        (folder / name).write_text(json.dumps(report, indent=1))


def ids(report: dict) -> list[tuple[str, str]]:
    return [(s["project_id"], s["server_id"]) for s in report["servers"]]


# -- a complete merge ----------------------------------------------------------------------------


def test_every_shard_reported_gives_every_server_once_and_exit_0():
    result = merge_reports(all_shards(4))
    report = result.report
    assert sorted(ids(report)) == ids(report) == sorted((r.project_id, r.server_id) for r in FLEET)
    assert report["totals"] == {
        "servers": 40,
        "collected": 40,
        "failed": 0,
        "pending": 0,
        "bytes": sum(1000 + n for n in range(40)),
    }
    assert result.found == tuple(Shard(k, 4) for k in range(4)) and result.counts == (4,)
    assert result.missing == result.overlapping == result.misplaced == ()
    assert result.complete and result.problems() == []
    assert result.exit_code is ExitCode.OK


def test_the_run_spans_the_earliest_start_to_the_latest_end():
    reports = {
        Shard(k, 3).report_name: shard_report(Shard(k, 3), start=s, end=e)
        for k, (s, e) in enumerate([(5, 70), (2, 40), (9, 95)])
    }
    run = merge_reports(reports).report["run"]
    assert run["started_at"] == (T0 + timedelta(seconds=2)).isoformat(timespec="seconds")
    assert run["finished_at"] == (T0 + timedelta(seconds=95)).isoformat(timespec="seconds")
    assert run["duration_s"] == 93
    assert run["inventory"] == "fleet.yaml"
    assert run["shards"]["count"] == 3 and run["shards"]["found"] == ["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]
    assert [r["servers"] for r in run["shards"]["reports"]] == [
        sum(Shard(k, 3).owns(r.project_id, r.server_id) for r in FLEET) for k in range(3)
    ]


def test_an_entry_keeps_every_field_its_shard_wrote():
    merged = {s["server_id"]: s for s in merge_reports(all_shards(2)).report["servers"]}
    for shard_entry in shard_report(Shard(1, 2))["servers"]:
        assert merged[shard_entry["server_id"]] == shard_entry


def test_totals_are_recomputed_from_the_servers_not_copied():
    results = FLEET[:30] + [failed(f"F{n}", size=500) for n in range(4)] + [pending(f"P{n}") for n in range(3)]
    reports = all_shards(3, results)
    for report in reports.values():
        report["totals"] = {"servers": 999, "collected": 999, "failed": 0, "pending": 0, "bytes": 1}
    totals = merge_reports(reports).report["totals"]
    assert totals == {
        "servers": 37,
        "collected": 30,
        "failed": 4,
        "pending": 3,
        "bytes": sum(1000 + n for n in range(30)),
    }


def test_the_merged_servers_are_the_same_whatever_the_number_of_shards():
    merged = [merge_reports(all_shards(n)).report["servers"] for n in (1, 3, 8)]
    assert merged[0] == merged[1] == merged[2]


def test_a_shard_with_no_servers_reports_and_merges():
    results = [collected("only-one")]
    reports = all_shards(4, results)
    assert sorted(len(r["servers"]) for r in reports.values()) == [0, 0, 0, 1]
    result = merge_reports(reports)
    assert ids(result.report) == [(PROJECT, "only-one")] and result.exit_code is ExitCode.OK


fleets = st.lists(
    st.tuples(
        st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
        st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True),
        st.sampled_from(["collected", "failed", "pending"]),
        st.integers(0, 10**9),
    ),
    max_size=60,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=100)
@given(fleet=fleets, count=st.integers(1, 16))
def test_merging_every_shard_gives_back_the_fleet_and_its_totals(fleet, count):
    results = [
        collected(s, size, p) if state == "collected" else failed(s, p) if state == "failed" else pending(s, p)
        for p, s, state, size in fleet
    ]
    result = merge_reports(all_shards(count, results))
    assert sorted(ids(result.report)) == sorted((p, s) for p, s, _, _ in fleet)
    assert len(ids(result.report)) == len(fleet)
    totals = result.report["totals"]
    assert totals["servers"] == len(fleet)
    for state in ("collected", "failed", "pending"):
        assert totals[state] == sum(1 for t in fleet if t[2] == state)
    assert totals["bytes"] == sum(size for _, _, state, size in fleet if state == "collected")
    everything_collected = all(t[2] == "collected" for t in fleet)
    assert result.exit_code is (ExitCode.OK if everything_collected else ExitCode.PARTIAL)


# -- the exit rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("odd_one", [failed, pending])
def test_one_failed_or_pending_server_makes_exit_1_though_every_shard_reported(odd_one):
    result = merge_reports(all_shards(4, [*FLEET, odd_one("the-odd-one")]))
    assert result.complete and result.problems() == []
    assert result.exit_code is ExitCode.PARTIAL


def test_a_shard_stopped_by_a_signal_is_said_in_the_run():
    reports = all_shards(2, [*FLEET, pending("left")])
    stopped_shard = Shard(shard_of(PROJECT, "left", 2), 2)
    reports[stopped_shard.report_name] = shard_report(stopped_shard, [*FLEET, pending("left")], stopped="SIGTERM")
    result = merge_reports(reports)
    assert result.report["run"]["stopped"] == f"{stopped_shard.label}: SIGTERM"
    assert result.exit_code is ExitCode.PARTIAL


# -- what the files show went wrong ----------------------------------------------------------------


def test_a_shard_without_a_report_is_named_missing_and_exit_is_1():
    reports = all_shards(4)
    lost = reports.pop("report.shard-2-of-4.json")
    result = merge_reports(reports)
    assert result.missing == (Shard(2, 4),)
    assert result.report["run"]["shards"]["missing"] == ["shard-2-of-4"]
    assert result.report["totals"]["servers"] == 40 - len(lost["servers"])
    assert result.exit_code is ExitCode.PARTIAL and not result.complete
    [line] = result.problems()
    assert "1 shard(s) did not report: no report.shard-2-of-4.json" in line


def test_the_last_shard_missing_is_named_too():
    reports = all_shards(3)
    del reports["report.shard-2-of-3.json"]
    assert merge_reports(reports).missing == (Shard(2, 3),)


def test_reports_of_two_runs_with_different_counts_are_named():
    result = merge_reports({**all_shards(2), **all_shards(4)})
    assert result.counts == (2, 4) and result.report["run"]["shards"]["count"] is None
    assert result.exit_code is ExitCode.PARTIAL
    assert "different numbers of shards: 2 (2 found), 4 (4 found)" in result.problems()[0]
    # Each server was collected by both runs: named, and still listed once.
    assert len(result.overlapping) == 40 and len(ids(result.report)) == 40
    assert result.overlapping[0].reports[0].startswith("report.shard-") and len(result.overlapping[0].reports) == 2


@pytest.mark.parametrize("collected_first", [True, False])
def test_a_server_in_two_reports_is_named_and_kept_once_as_the_one_that_got_furthest(collected_first):
    reports = all_shards(2)
    entries = [vars_of(collected("twice", 77)), vars_of(failed("twice"))]
    for name, entry in zip(
        ["report.shard-0-of-2.json", "report.shard-1-of-2.json"],
        entries if collected_first else entries[::-1],
        strict=True,
    ):
        reports[name]["servers"].append(entry)
    result = merge_reports(reports)
    [overlap] = result.overlapping
    assert (overlap.project_id, overlap.server_id) == (PROJECT, "twice")
    assert overlap.reports == ("report.shard-0-of-2.json", "report.shard-1-of-2.json")
    [entry] = [s for s in result.report["servers"] if s["server_id"] == "twice"]
    assert entry["state"] == "collected" and entry["bytes"] == 77
    assert result.report["run"]["shards"]["overlapping"] == [
        {"project_id": PROJECT, "server_id": "twice", "reports": list(overlap.reports)}
    ]
    assert any(
        f"{PROJECT}/twice in report.shard-0-of-2.json, report.shard-1-of-2.json" in line for line in result.problems()
    )
    assert result.exit_code is ExitCode.PARTIAL


def test_a_server_in_the_report_of_a_shard_it_does_not_hash_to_is_named():
    """What pods with another hash would write: the server moved to another shard's report."""
    reports = all_shards(4)
    moved = FLEET[0]
    home = Shard(shard_of(moved.project_id, moved.server_id, 4), 4)
    wrong = Shard((home.index + 1) % 4, 4)
    entry = next(s for s in reports[home.report_name]["servers"] if s["server_id"] == moved.server_id)
    reports[home.report_name]["servers"].remove(entry)
    reports[wrong.report_name]["servers"].append(entry)
    result = merge_reports(reports)
    assert result.overlapping == () and result.missing == ()
    [misplaced] = result.misplaced
    assert (misplaced.server_id, misplaced.report, misplaced.belongs) == (moved.server_id, wrong.report_name, home)
    assert result.exit_code is ExitCode.PARTIAL
    assert "different versions of collector" in result.problems()[0]


def vars_of(result: ServerResult) -> dict:
    report = build_report([result], started_at=T0, finished_at=T0, inventory="x")
    return report["servers"][0]


# -- a file that is not a report -----------------------------------------------------------------


def test_a_corrupt_report_file_is_one_line_naming_it(tmp_path):
    write(tmp_path, all_shards(2))
    (tmp_path / "report.shard-1-of-2.json").write_text('{"run": {"started_at": ')
    with pytest.raises(ReportError) as caught:
        merge_folder(tmp_path)
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'report.shard-1-of-2.json'}: not JSON: Expecting value at line 1")
    assert "\n" not in text and isinstance(caught.value, UsageError)
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "expected a JSON object, got a list"),
        (b"{}", "run: missing"),
        (b'{"run": {}, "servers": []}', "run.started_at: missing"),
        (b'{"run": {"started_at": "yesterday", "finished_at": "x"}, "servers": []}', "run.started_at: expected a time"),
        (
            b'{"run": {"started_at": "2026-11-27T03:00:00", "finished_at": "2026-11-27T03:00:00"}, "servers": []}',
            "run.started_at: expected a time with its offset",
        ),
        (
            b'{"run": {"started_at": "2026-11-27T03:00:00+00:00", "finished_at": "2026-11-27T03:01:00+00:00"}}',
            "servers: missing",
        ),
    ],
)
def test_json_that_is_not_a_report_is_named_with_what_is_wrong(tmp_path, data, says):
    (tmp_path / "report.shard-0-of-1.json").write_bytes(data)
    with pytest.raises(ReportError) as caught:
        merge_folder(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "report.shard-0-of-1.json") + ": ")
    assert says in caught.value.message and "\n" not in str(caught.value)


def server_entry(**fields) -> dict:
    return {"project_id": "p", "server_id": "s", "state": "collected", **fields}


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("not an object", "servers[0]: expected an object, got a string"),
        ({"server_id": "s", "state": "collected"}, "servers[0].project_id: missing"),
        (server_entry(server_id=7), "servers[0].server_id: expected a string, got 7"),
        (server_entry(server_id=""), "servers[0].server_id: empty"),
        (
            server_entry(state="done\x1b[2J"),
            r"servers[0].state: expected one of collected, failed, pending, got 'done\\x1b[2J'",
        ),
        (server_entry(bytes=-1), "servers[0].bytes: expected a whole number of bytes, got -1"),
        (server_entry(bytes=True), "servers[0].bytes: expected a whole number of bytes, got a boolean"),
        (server_entry(bytes=1.5), "servers[0].bytes: expected a whole number of bytes, got 1.5"),
    ],
)
def test_a_server_entry_that_is_not_one_is_named_by_its_place(entry, says):
    report = shard_report(Shard(0, 1), [])
    report["servers"] = [entry]
    with pytest.raises(ReportError) as caught:
        merge_reports({"out/report.shard-0-of-1.json": report})
    assert caught.value.message == f"out/report.shard-0-of-1.json: {says}"


def test_a_misnamed_report_in_the_folder_is_named(tmp_path):
    write(tmp_path, all_shards(2))
    write(tmp_path, {"report.shard-01-of-2.json": shard_report(Shard(1, 2))})
    with pytest.raises(ReportError, match=r"report\.shard-01-of-2\.json: not the name of a shard report"):
        merge_folder(tmp_path)


def test_a_report_too_large_is_refused_before_parsing(tmp_path, monkeypatch):
    write(tmp_path, all_shards(1))
    monkeypatch.setattr(merge, "MAX_REPORT_BYTES", 100)
    with pytest.raises(ReportError, match="too large for a shard report"):
        load_folder(tmp_path)


def test_no_reports_at_all_is_a_usage_error(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(UsageError, match=r"no shard reports \(report\.shard-\*-of-\*\.json\) in this folder"):
        merge_folder(tmp_path)
    with pytest.raises(UsageError, match="cannot list the folder"):
        merge_folder(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="no shard reports to merge"):
        merge_reports({})


# -- from a folder, and from an object store -------------------------------------------------------


def test_the_merge_of_a_folder_is_written_there_as_report_json(tmp_path):
    write(tmp_path, all_shards(3))
    (tmp_path / "report.json").write_text("the report of an earlier merge")
    result = merge_folder(tmp_path)
    assert result.path == tmp_path / "report.json"
    assert json.loads(result.path.read_text()) == result.report
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.json",
        "report.shard-0-of-3.json",
        "report.shard-1-of-3.json",
        "report.shard-2-of-3.json",
    ]
    assert [r["name"] for r in result.report["run"]["shards"]["reports"]] == [
        str(tmp_path / f"report.shard-{k}-of-3.json") for k in range(3)
    ]


class Bucket:
    """The two calls `read_reports` needs, over a dict of keys, recording what was read."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.read: list[str] = []

    async def list_keys(self) -> list[str]:
        return list(self.objects)

    async def get(self, key: str) -> bytes:
        self.read.append(key)
        return self.objects[key]


@pytest.mark.anyio
async def test_reports_in_an_object_store_merge_as_from_a_folder(tmp_path):
    reports = all_shards(4)
    bucket = Bucket(
        {
            **{f"runs/2026-11-27/{name}": json.dumps(report).encode() for name, report in reports.items()},
            f"runs/2026-11-27/{PROJECT}/x-dump.tar.gz": b"\x1f\x8b not a report",
            "runs/2026-11-27/report.json": b"{}",
        }
    )
    found = await read_reports(bucket.list_keys, bucket.get)
    assert sorted(bucket.read) == sorted(found) == sorted(f"runs/2026-11-27/{name}" for name in reports)
    write(tmp_path, reports)
    assert merge_reports(found).report["servers"] == merge_folder(tmp_path).report["servers"]


@pytest.mark.anyio
async def test_a_corrupt_report_in_an_object_store_is_named_by_its_key():
    bucket = Bucket({"runs/report.shard-0-of-1.json": b"<html>503</html>"})
    with pytest.raises(ReportError, match=r"^runs/report\.shard-0-of-1\.json: not JSON"):
        await read_reports(bucket.list_keys, bucket.get)


@pytest.mark.anyio
async def test_an_object_store_with_no_reports_is_a_usage_error():
    with pytest.raises(UsageError, match="no shard reports"):
        await read_reports(Bucket({"runs/report.json": b"{}"}).list_keys, Bucket({}).get)
