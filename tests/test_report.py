"""The end-of-run summary: totals, failures grouped by their structured fields (not their
wording), unfinished servers grouped by why, and one `summary` JSON line in JSON mode."""

from __future__ import annotations

import io
import json
import logging
import tracemalloc
from datetime import UTC, datetime
from json import JSONEncoder

import pytest
from _listing import collector_run

from collector.cli.logs import JsonFormatter
from collector.errors import ExitCode
from collector.observe.report import (
    build_report,
    emit_summary,
    human_bytes,
    human_duration,
    summary,
    summary_lines,
    summary_record,
    write_report,
)
from collector.simulator.config import SimConfig
from collector.simulator.server import Simulator
from collector.sweep.results import ServerResult

_count = 0


def server(state: str, **fields) -> ServerResult:
    global _count
    _count += 1
    return ServerResult(
        fields.pop("project_id", "p1"), fields.pop("server_id", f"S{_count:03d}"), None, state=state, **fields
    )


def collected(size: int = 1024, *, earlier: bool = False, **fields) -> ServerResult:
    return server("collected", bytes=size, collected_earlier=earlier, **fields)


def timeout(n: int, **fields) -> ServerResult:
    return server(
        "failed", error=f"ShowLogsExportStatus: no answer within {n} s from 10.0.{n}.1", error_kind="timeout", **fields
    )


def http(status: int, code: str | None, message: str, **fields) -> ServerResult:
    text = f"ExportServerLogs: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    return server("failed", error=text, error_kind="http", status=status, error_code=code, **fields)


def stopped(why: str) -> ServerResult:
    return server("pending", error=f"not collected: {why}", reason=why)


def groups(record: dict) -> dict[str, int]:
    return {g["label"]: g["count"] for g in record["failures"]}


def test_failures_group_by_kind_status_and_code_whatever_the_wording():
    results = [
        timeout(30, server_id="first-timeout"),
        timeout(31),
        timeout(45),
        http(500, "SVC.0001", "internal error, trace 8f3a", server_id="first-500"),
        http(500, "SVC.0001", "internal error, trace 1b2c"),
        http(500, "SVC.0002", "internal error, trace 8f3a"),  # same words, another code: apart
        server(
            "failed",
            error="DownloadServerLogs: gzip magic missing in 5 bytes",
            error_kind="archive",
            reason="archive damaged on the server",
        ),
        collected(),
    ]
    record = summary_record(results, duration_s=12.0)
    assert groups(record) == {
        "timeout": 3,
        "HTTP 500 SVC.0001": 2,
        "HTTP 500 SVC.0002": 1,
        "archive damaged on the server": 1,
    }
    first = record["failures"][0]
    assert (first["label"], first["kind"], first["example"]["server_id"]) == ("timeout", "timeout", "first-timeout")
    assert first["example"]["error"] == results[0].error
    second = record["failures"][1]
    assert (second["status"], second["error_code"], second["example"]["server_id"]) == (500, "SVC.0001", "first-500")


def test_a_reason_the_group_shares_is_its_label_and_mixed_reasons_fall_back_to_the_kind():
    results = [
        server("failed", error="export 7 stuck at 40% for 1800 s", error_kind="export", reason="export N stuck"),
        server("failed", error="export 8 failed at 10%", error_kind="export", reason="export N failed at N%"),
        server("failed", error="damaged", error_kind="archive", reason="archive damaged on the server"),
        server("failed", error="damaged too", error_kind="archive", reason="archive damaged on the server"),
    ]
    assert groups(summary_record(results, duration_s=1)) == {"archive damaged on the server": 2, "export failed": 2}


def test_summary_lines_show_count_label_and_one_example_per_group():
    results = [timeout(30, server_id="A"), timeout(40), http(503, None, "busy", server_id="B"), collected()]
    lines = summary_lines(summary_record(results, duration_s=3.0, requests=40, throttled=2, retries=5))
    assert lines[0] == "1/4 servers collected, 1.0 KiB in 3.0 s (40 requests, 2 throttled, 5 retries)"
    assert lines[1] == "3 failed:"
    assert lines[2] == "      2 x timeout  (e.g. p1/A: ShowLogsExportStatus: no answer within 30 s from 10.0.30.1)"
    assert lines[3] == "      1 x HTTP 503  (e.g. p1/B: ExportServerLogs: HTTP 503: busy)"


def test_pending_servers_are_grouped_by_why_they_stopped():
    results = [stopped("run stopped by SIGTERM") for _ in range(3)]
    results += [stopped("API unreachable: https://api: connection refused"), collected()]
    record = summary_record(results, duration_s=1)
    assert [(g["label"], g["count"]) for g in record["pending_reasons"]] == [
        ("run stopped by SIGTERM", 3),
        ("API unreachable: https://api: connection refused", 1),
    ]
    lines = summary_lines(record)
    assert "4 not finished:" in lines
    assert any(line.startswith("      3 x run stopped by SIGTERM  (e.g. p1/S") for line in lines)
    assert lines[-1] == "run the same command again to resume"


def test_servers_collected_by_earlier_runs_are_counted_apart():
    results = [collected(1000, earlier=True) for _ in range(37)] + [collected(2048) for _ in range(3)]
    results.append(timeout(5))
    record = summary_record(results, duration_s=90)
    assert (record["collected"], record["collected_earlier"]) == (40, 37)
    assert (record["bytes"], record["bytes_this_run"]) == (37 * 1000 + 3 * 2048, 3 * 2048)
    lines = summary_lines(record)
    assert lines[0] == "40/41 servers collected, 37 of them by earlier runs into this folder"
    assert lines[1].startswith("this run: 3 collected, 6.0 KiB in 1:30 (")


def test_record_has_the_totals_and_what_the_runner_adds():
    results = [collected(10), timeout(1), stopped("run stopped by SIGINT")]
    record = summary_record(
        results,
        duration_s=1.23456,
        requests=9,
        throttled=1,
        retries=2,
        exit_code=130,
        stopped="SIGINT",
        report_path="/out/report.json",
    )
    assert {
        k: record[k]
        for k in (
            "servers",
            "collected",
            "failed",
            "pending",
            "collected_earlier",
            "bytes",
            "duration_s",
            "requests",
            "throttled",
            "retries",
            "exit_code",
            "stopped",
            "report",
        )
    } == {
        "servers": 3,
        "collected": 1,
        "failed": 1,
        "pending": 1,
        "collected_earlier": 0,
        "bytes": 10,
        "duration_s": 1.235,
        "requests": 9,
        "throttled": 1,
        "retries": 2,
        "exit_code": 130,
        "stopped": "SIGINT",
        "report": "/out/report.json",
    }
    assert summary_lines(record)[-1] == "report: /out/report.json"


def test_only_the_largest_groups_are_listed_and_the_rest_counted():
    results = [http(500, f"SVC.{n:04d}", "x") for n in range(12)] + [http(500, "SVC.9999", "x")] * 2
    record = summary_record(results, duration_s=1)
    assert len(record["failures"]) == 10 and record["failure_groups"] == 13
    assert record["failures"][0]["label"] == "HTTP 500 SVC.9999"
    assert summary_lines(record)[-1] == "  ... and 3 other kinds of failure; see the report"


def test_an_error_from_the_server_is_escaped_in_the_lines():
    hostile = "boom \x1b[2J\x1b[31m\r\nfake line \u202eevil" + "z" * 100_000
    results = [server("failed", error=hostile, error_kind="http", status=500, reason="HTTP 500 \x1b]0;title\x07")]
    lines = summary_lines(summary_record(results, duration_s=1))
    assert len(lines) == 3 and all(len(line) < 1100 for line in lines)
    for line in lines:
        assert not any(ord(c) < 32 or c == "\u202e" for c in line)
    assert "\\x1b[2J" in lines[2] and "\\x1b]0;title\\x07" in lines[2]


def test_all_collected_has_no_failure_lines():
    assert summary([collected(), collected()], 2.0, requests=6, throttled=0) == [
        "2/2 servers collected, 2.0 KiB in 2.0 s (6 requests, 0 throttled, 0 retries)"
    ]


def test_json_mode_emits_one_summary_record(caplog):
    caplog.set_level(logging.INFO, logger="collector.summary")
    results = [collected() for _ in range(5)] + [timeout(3)]
    record = summary_record(results, duration_s=4, requests=20, exit_code=1)
    emit_summary(record, "json")
    [logged] = [r for r in caplog.records if r.name == "collector.summary"]
    entry = json.loads(JsonFormatter().format(logged))
    assert entry["event"] == "summary" and entry["message"].startswith("5/6 servers collected")
    assert (entry["collected"], entry["failed"], entry["exit_code"]) == (5, 1, 1)
    assert entry["failures"][0]["label"] == "timeout" and entry["failures"][0]["count"] == 1


def test_text_mode_prints_the_lines():
    stream = io.StringIO()
    record = summary_record([collected(), timeout(3)], duration_s=4)
    emit_summary(record, "text", stream=stream)
    assert stream.getvalue().splitlines() == summary_lines(record)


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1024**2 - 1, "1.0 MiB"),
        (5 * 1024**4, "5.0 TiB"),
        (3 * 1024**5, "3072.0 TiB"),
    ],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("s, text", [(0, "0:00"), (83.4, "1:23"), (3600, "1:00:00"), (45 * 3600 + 61, "45:01:01")])
def test_human_duration(s, text):
    assert human_duration(s) == text


@pytest.mark.anyio
async def test_an_archive_over_the_limit_is_summarised_as_too_large_not_damaged(tmp_path):
    """It shared the "archive damaged" group of the summary (issue 18). A real `collector run`."""
    async with Simulator(SimConfig(servers=6, seed=14, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))) as sim:
        inventory = sim.write_inventory(tmp_path / "inventory.yaml")
        sizes = {profile.id: profile.archive_bytes for profile in sim.fleet.profiles}
        limit = sorted(sizes.values())[2]  # three archives fit, three do not
        code, _, stderr = await collector_run(
            inventory,
            tmp_path / "out",
            "--max-archive-bytes",
            str(limit),
            "--poll-interval",
            "0.1",
            "--no-progress",
        )
    assert code == ExitCode.PARTIAL, stderr
    assert "3 x archive larger than --max-archive-bytes" in stderr and "damaged" not in stderr, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    too_large = {s["server_id"] for s in report["servers"] if s.get("error_kind") == "too_large"}
    assert too_large == {server_id for server_id, size in sizes.items() if size > limit}


def test_the_report_file_is_json_dumps_text_though_written_in_pieces(tmp_path):
    """`write_report` streams the text (issue 14: the whole of it at once cost ~18 MB at 5,000
    servers); the file is byte for byte what `json.dumps(report, indent=1)` gives, across many
    pieces, with text that needs escaping."""
    results = [collected(export_id=f"e{i}", sha256="ab" * 32, file=f"p1/S{i}-dump.tar.gz") for i in range(3000)]
    results += [server("failed", error='a "quoted" \u00e9 error\n', error_kind="http", status=500) for _ in range(3)]
    now = datetime(2026, 12, 7, tzinfo=UTC)
    report = build_report(results, started_at=now, finished_at=now, inventory="inv.yaml", stopped="SIGTERM")
    tracemalloc.start()
    try:
        path = write_report(tmp_path, report)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path == tmp_path / "report.json"
    assert peak < path.stat().st_size / 2  # never the whole text, nor the list of its pieces
    assert path.read_bytes() == json.dumps(report, indent=1).encode()
    assert len(list(JSONEncoder(indent=1).iterencode(report))) > 3 * 8192  # several pieces
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left
