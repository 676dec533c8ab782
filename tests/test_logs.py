"""The log formatters: one JSON object per line, and nothing a server sent can reach a
terminal or a log pipeline unescaped or unbounded."""

from __future__ import annotations

import json
import logging
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from collector.cli.logs import JsonFormatter, TextFormatter, configure_logging
from collector.log import EVENTS, ev
from collector.text import FIELD_LIMIT, MESSAGE_LIMIT, TRACEBACK_LIMIT, clean

HOSTILE = "red \x1b[31mALERT\x1b[0m\rover\nwritten 12:00:00 ERROR fake\x00nul \u202eevil\u2066 \x9b2J"
BIG = "x" * 1_000_000
BIDI = set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def record(
    msg: str = "hello",
    *args,
    level: int = logging.WARNING,
    name: str = "collector.sweep.pipeline",
    extra: dict | None = None,
    exc_info=None,
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    rec.created = 1_764_241_384.0629  # 2025-11-27T11:03:04.062Z
    for key, value in (extra or {}).items():
        setattr(rec, key, value)
    return rec


def assert_safe(text: str) -> None:
    """Nothing a terminal would act on and nothing that starts a new line."""
    assert not any(unicodedata.category(c) == "Cc" for c in text), text[:200]
    assert not BIDI & set(text)
    assert "\x1b" not in text


def test_json_line_has_ts_level_event_message_and_the_fields():
    fields = dict(
        project_id="p1",
        server_id="S1",
        export_id="e1",
        attempt=2,
        wait_s=1.5,
        error="boom",
        error_code="SVC.0001",
        status=500,
        request_id="r-1",
        endpoint="https://api",
        bytes=10,
        reason="x",
    )
    line = JsonFormatter().format(record("p1/S1: failed", extra=ev("server_failed", **fields)))
    entry = json.loads(line)
    assert list(entry)[:4] == ["ts", "level", "event", "message"]
    assert entry["ts"] == "2025-11-27T11:03:04.062Z"
    assert (entry["level"], entry["event"], entry["message"]) == ("warning", "server_failed", "p1/S1: failed")
    assert {k: entry[k] for k in fields} == fields


def test_json_ts_is_rfc3339_utc_with_milliseconds():
    entry = json.loads(JsonFormatter().format(record()))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


def test_a_record_without_an_event_is_a_log_event_naming_its_logger():
    entry = json.loads(JsonFormatter().format(record("plain", name="asyncio")))
    assert entry["event"] == "log" and entry["logger"] == "asyncio"


def test_a_field_named_like_a_reserved_key_is_renamed_not_lost():
    entry = json.loads(JsonFormatter().format(record("real", extra=ev("x", message="fake", ts="fake"))))
    assert entry["message"] == "real" and entry["field_message"] == "fake" and entry["field_ts"] == "fake"
    assert entry["ts"].endswith("Z")


def test_fields_json_cannot_hold_are_written_as_text():
    extra = ev(
        "x",
        path=Path("/a/b"),
        error=ValueError("bad"),
        nan=float("nan"),
        nested={"k": [1, "\x1b"]},
        huge=10**5000,
        many=list(range(10_000)),
    )
    entry = json.loads(JsonFormatter().format(record(extra=extra)))
    assert entry["path"] == "/a/b" and entry["error"] == "bad" and entry["nan"] == "nan"
    assert entry["huge"] == "<a 16610-bit integer>" and len(entry["many"]) == 51
    assert entry["nested"] == {"k": [1, "\\x1b"]}


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
@pytest.mark.parametrize(
    "hostile", [HOSTILE, HOSTILE + BIG, BIG + HOSTILE, "\u202e" * 100_000], ids=["short", "head", "tail", "bidi"]
)
def test_a_hostile_message_is_one_escaped_bounded_line(formatter, hostile):
    line = formatter.format(record("p1/S1: failed: %s", hostile))
    assert "\n" not in line and "\r" not in line
    assert_safe(line)
    assert len(line) < 2 * MESSAGE_LIMIT + 200  # JSON doubles the backslashes of escapes
    message = json.loads(line)["message"] if isinstance(formatter, JsonFormatter) else line
    assert_safe(message)
    assert len(message) < MESSAGE_LIMIT + 50
    assert "p1/S1: failed: " in message
    if hostile.startswith("red"):
        assert "\\x1b[31mALERT" in message and "\\rover\\nwritten" in message and "\\x00nul" in message
        assert "\\u202eevil" in message


def test_hostile_field_values_are_escaped_and_bounded():
    line = JsonFormatter().format(record(extra=ev("server_failed", error=HOSTILE + BIG, reason=HOSTILE)))
    entry = json.loads(line)
    for key in ("error", "reason"):
        assert_safe(entry[key])
    assert len(entry["error"]) < FIELD_LIMIT + 50 and entry["error"].endswith("more characters]")
    assert entry["reason"].startswith("red \\x1b[31mALERT")


def test_a_bad_format_string_still_makes_one_line():
    line = JsonFormatter().format(record("%d servers", "not a number"))
    assert "\n" not in line and json.loads(line)["message"].startswith("'%d servers'")


def failing_record(message: str) -> logging.LogRecord:
    try:
        raise RuntimeError(message)
    except RuntimeError:
        return record("internal error", level=logging.ERROR, exc_info=sys.exc_info())


def test_a_huge_traceback_keeps_its_end_within_the_bound():
    entry = json.loads(JsonFormatter().format(failing_record("\n".join(["\x1b[31m" * 50] * 2000) + "\nTHE END")))
    assert len(entry["traceback"]) <= TRACEBACK_LIMIT
    assert entry["traceback"].startswith("[the start is cut]") and entry["traceback"].endswith("THE END")


def test_json_puts_the_traceback_in_a_field_on_the_same_line():
    line = JsonFormatter().format(failing_record(HOSTILE))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "internal error"
    assert "Traceback" in entry["traceback"] and "RuntimeError: red \\x1b[31mALERT" in entry["traceback"]
    for part in entry["traceback"].splitlines():
        assert_safe(part)


def test_text_traceback_lines_are_indented_and_escaped():
    first, *rest = TextFormatter().format(failing_record(HOSTILE)).split("\n")
    assert first.endswith("ERROR   internal error")
    assert rest and all(part.startswith("    ") for part in rest)
    assert any("RuntimeError: red \\x1b[31mALERT" in part for part in rest)
    for part in rest:
        assert_safe(part)


def test_text_line_is_time_level_message():
    line = TextFormatter().format(record("p1/S1: retry 2 in 1.5 s", level=logging.INFO))
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    p1/S1: retry 2 in 1\.5 s", line)


def test_clean_keeps_ordinary_text_and_unicode():
    assert clean("export 12 failed at 40% — 服务器 ü") == "export 12 failed at 40% — 服务器 ü"


def test_clean_never_cuts_an_escape_in_half():
    text = clean("ab" + "\x1b" * 10, limit=7)  # room for "ab", one escape, and 1 char
    assert text.startswith("ab\\x1b... [")
    assert clean("\x1b", limit=3) == "... [1 more characters]"


def test_clean_counts_what_it_cut():
    assert clean("y" * 1000, limit=10) == "y" * 10 + "... [990 more characters]"


@pytest.fixture
def restore_logging():
    names = ["", "collector", "collector.progress", "collector.summary"]
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    yield
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_json_mode_writes_only_json_to_stderr_libraries_included(restore_logging, capsys):
    configure_logging("json", 0)
    logging.getLogger("collector.sweep.pipeline").warning(
        "p1/S1: failed: %s", HOSTILE, extra=ev("server_failed", server_id="S1")
    )
    logging.getLogger("collector.sweep.pipeline").info("hidden at -v 0")
    logging.getLogger("collector.progress").info("progress", extra=ev("progress", percent=5.0))
    logging.getLogger("asyncio").warning("Unclosed client session\nclient_session: <x>")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["event"] for e in entries] == ["server_failed", "progress", "log"]
    assert entries[2]["logger"] == "asyncio" and "\\n" in entries[2]["message"]


def test_text_mode_shows_retries_at_v1(restore_logging, capsys):
    configure_logging("text", 1)
    logging.getLogger("collector.sweep.pipeline").info("retry", extra=ev("retry", attempt=2))
    logging.getLogger("collector.sweep.pipeline").debug("debug only at -vv")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO    retry")


def test_every_event_a_call_site_names_is_snake_case_and_listed():
    """Log pipelines match on event names: a new one is added to `EVENTS`, a typo fails here."""
    package = Path(__file__).parents[1] / "collector"
    used = {m for path in package.rglob("*.py") for m in re.findall(r"\bev\(\s*[\"']([^\"']+)", path.read_text())}
    assert {"progress", "summary"} <= used
    assert used <= set(EVENTS), used - set(EVENTS)
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name) for name in EVENTS)


def test_run_events_show_at_the_default_level(restore_logging, capsys):
    configure_logging("json", 0)
    logging.getLogger("collector.run").info("collecting 3 servers", extra=ev("run_started", servers=3))
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["event"] == "run_started"
