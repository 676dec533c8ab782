"""What the API really sends: status spellings, percentage forms, timestamps, error bodies."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict
from yarl import URL

from collector.clouddc import replies
from collector.clouddc.replies import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    ExportState,
    ExportStatus,
    parse_json,
    parse_percentage,
    parse_state,
    parse_timestamp,
    safe_export_id,
)
from collector.errors import AuthError, Forbidden, NotFoundError, ProtocolError, ServerError, ThrottledError
from collector.net.status import status_error as error_for
from collector.sweep.polling import PollSchedule
from collector.text import clean, clean_text, kind_of, quoted


@pytest.mark.parametrize("value", ["Running", "running", "RUNNING", "processing", "Processing", " processing "])
def test_running_spellings(value):
    assert parse_state(value) is ExportState.RUNNING


@pytest.mark.parametrize("value", ["completed", "Completed", "COMPLETED"])
def test_completed_spellings(value):
    assert parse_state(value) is ExportState.COMPLETED


@pytest.mark.parametrize("value", ["failed", "Failed", "ERROR", "error", "Cancelled"])
def test_failure_spellings(value):
    assert parse_state(value) is ExportState.FAILED


@pytest.mark.parametrize("value", ["Exploding", "complete-ish", "", None, 100, ["completed"], "succeeded?"])
def test_unknown_status_is_never_success(value):
    assert parse_state(value) is ExportState.UNKNOWN


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30%", 30),
        ("30", 30),
        (30, 30),
        (30.7, 30),
        (" 45 % ", 45),
        ("100%", 100),
        (0, 0),
        (150, 100),
        (-5, 0),
        ("abc", None),
        (None, None),
        (True, None),
        ("", None),
        ("30%%", None),
    ],
)
def test_percentage_forms(value, expected):
    assert parse_percentage(value) == expected


def test_timestamps_in_both_documented_forms():
    a = parse_timestamp("2025-03-20T02:48:06+00:00")
    b = parse_timestamp("2024-07-01T11:32:49Z")
    assert a is not None and a.utcoffset().total_seconds() == 0
    assert b is not None and b.hour == 11
    assert parse_timestamp("yesterday") is None


def test_status_body_with_integer_export_id():
    status = ExportStatus.from_body({"export_id": 1, "status": "Running", "percentage": "30%"}, operation="op")
    assert (status.export_id, status.state, status.percentage) == ("1", ExportState.RUNNING, 30)


@pytest.mark.parametrize("body", [[], "x", {"status": "Running"}, {"export_id": ""}])
def test_unusable_status_body_is_a_protocol_error(body):
    with pytest.raises(ProtocolError):
        ExportStatus.from_body(body, operation="op")


def test_error_message_quotes_status_code_message_and_request_id():
    headers = CIMultiDict({"X-Request-Id": "req-123"})
    error = error_for(
        500, "ExportServerLogs", b'{"error_code": "CLOUDDC.0500", "error_msg": "Internal error"}', headers
    )
    assert isinstance(error, ServerError)
    text = str(error)
    for part in ("HTTP 500", "CLOUDDC.0500", "Internal error", "req-123"):
        assert part in text


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, AuthError), (403, Forbidden), (404, NotFoundError), (503, ServerError), (429, ThrottledError)],
)
def test_error_kinds(status, kind):
    assert type(error_for(status, "op", b"", CIMultiDict())) is kind


def test_429_with_plain_string_body_and_retry_after():
    error = error_for(429, "op", b"the request is overloaded", CIMultiDict({"Retry-After": "4"}))
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 4
    assert "the request is overloaded" in str(error)


# -- what a fuzzer found: each of these once crashed a whole run (issue 8) ----------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-lists"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="deep-objects"),
        pytest.param(b"[" * 1_000_000, id="unclosed"),
        pytest.param(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), id="one-too-deep"),
    ],
)
def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error(body):
    with pytest.raises(ProtocolError, match="nested deeper than 32 levels"):
        parse_json(body, operation="op")


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine():
    body = b"[" * MAX_JSON_DEPTH + b'"[[[{{{\\"\\\\"' + b"]" * MAX_JSON_DEPTH
    value = parse_json(body, operation="op")
    for _ in range(MAX_JSON_DEPTH):
        [value] = value
    assert value == '[[[{{{"\\'
    assert parse_json(b'{"a": "' + b"[" * 10_000 + b'"}', operation="op") == {"a": "[" * 10_000}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b'{"percentage": 1' + b"0" * 400 + b"}", "a number of 401 digits", id="400-digit-int"),
        pytest.param(b'{"percentage": 1' + b"0" * 5000 + b"}", "a number of 5001 digits", id="past-int-max-str-digits"),
        pytest.param(b'{"percentage": 1e400}', "out of range", id="float-overflow"),
        pytest.param(b'{"percentage": NaN}', "NaN", id="nan"),
        pytest.param(b'{"percentage": -Infinity}', "-Infinity", id="infinity"),
        pytest.param(b'{"export_id": "\\ud800"}', "lone UTF-16 surrogate", id="lone-surrogate-value"),
        pytest.param(b'{"\\udfff": 1}', "lone UTF-16 surrogate", id="lone-surrogate-key"),
        pytest.param(b'{"export_id": "\xed\xa0\x80"}', "not UTF-8", id="raw-surrogate"),
        pytest.param(b'{"export_id": "\xff"}', "not UTF-8", id="bad-utf-8"),
        pytest.param(b" " * (MAX_JSON_BYTES + 1), "larger than 1048576 bytes", id="too-large"),
        pytest.param(b'{"a": 1', "not JSON", id="truncated"),
    ],
)
def test_unbounded_json_is_refused_with_a_protocol_error(body, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        parse_json(body, operation="op")


def test_paired_surrogate_escapes_and_a_byte_order_mark_are_fine():
    assert parse_json(b'\xef\xbb\xbf{"s": "\\ud83d\\ude00"}', operation="op") == {"s": "\U0001f600"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10**400, 100),
        (-(10**400), 0),
        (float("inf"), 100),
        (float("-inf"), 0),
        (float("nan"), None),
        ("1" * 400, None),
        ("1" * 60_000 + "%", None),
        ("²", None),
        ("٣٠", None),
        ("30.", None),
        (".5", None),
    ],
)
def test_absurd_percentages_clamp_or_give_none(value, expected):
    assert parse_percentage(value) == expected


def test_percentage_parser_uses_no_regex():
    """A 60 KB value froze the event loop for 8 s in a backtracking regex; plain string
    operations over a length-capped value cannot."""
    for function in (replies.parse_percentage, replies._ascii_digits):
        for name in function.__code__.co_names:
            assert name != "re" and not isinstance(getattr(replies, name, None), re.Pattern), name
    assert parse_percentage(" 7" * 30_000 + "%") is None


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+00:00",
        "1999-12-31T23:59:59Z",
        "2101-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "2100-12-31T23:00:00-05:00",
        "2025-13-01T00:00:00Z",
        "2" * 100,
        "",
        1742438886,
    ],
)
def test_implausible_timestamps_give_none(value):
    assert parse_timestamp(value) is None


def test_naive_timestamp_is_taken_as_utc_and_offsets_become_utc():
    assert parse_timestamp("2025-03-20T02:48:06") == datetime(2025, 3, 20, 2, 48, 6, tzinfo=UTC)
    assert parse_timestamp("2025-03-20T10:48:06+08:00") == datetime(2025, 3, 20, 2, 48, 6, tzinfo=UTC)


def test_resumed_export_created_in_year_one_polls_on_the_normal_schedule():
    body = {"export_id": "7", "status": "Running", "percentage": 10, "created_at": "0001-01-01T00:00:00+00:00"}
    status = ExportStatus.from_body(body, operation="op")
    assert status.created_at is None
    schedule = PollSchedule(resumed=True, started=50.0, wall=lambda: 1.7e9)
    schedule.first_delay(50.0)
    assert schedule.shortest <= schedule.next_delay(status, now=55.0) <= schedule.longest
    assert schedule.started == 50.0  # not re-anchored on a date it cannot believe


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("../../../../x", "contains a slash", id="traversal"),
        pytest.param("..", "'..'", id="dotdot"),
        pytest.param(".", "'..'", id="dot"),
        pytest.param("a..b", "'..'", id="inner-dotdot"),
        pytest.param("a\\b", "contains a slash", id="backslash"),
        pytest.param("\ud800", "lone surrogate", id="surrogate"),
        pytest.param("a\x1b[2Jb", "control character", id="escape"),
        pytest.param("a\x85b", "control character", id="c1"),
        pytest.param("a\x7fb", "control character", id="delete"),
        pytest.param("abc\u202etxt", "format character", id="bidi-override"),
        pytest.param("a\u200bb", "format character", id="zero-width"),
        pytest.param("a b", "whitespace", id="space"),
        pytest.param("a\u3000b", "whitespace", id="ideographic-space"),
        pytest.param("", "empty", id="empty"),
        pytest.param("7" * 129, "longer than 128", id="long"),
        pytest.param(10**200, "longer than 128", id="huge-int"),
        pytest.param(True, "a boolean, not a string", id="bool"),
        pytest.param(["1"], "a list, not a string", id="list"),
        pytest.param(1.5, "a number, not a string", id="float"),
    ],
)
def test_unsafe_export_id_is_refused_naming_the_problem(value, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)) as caught:
        ExportStatus.from_body({"export_id": value, "status": "Running"}, operation="ShowLogsExportStatus")
    message = str(caught.value)
    assert message.startswith("ShowLogsExportStatus: unsafe export_id")
    assert message.isprintable() and len(message) < 160


def test_traversal_export_id_would_have_left_the_export_path():
    """Why the check exists: yarl resolves the dots, and the token goes to another path."""
    assert (URL("https://api/v1/p/physicalservers/S/logs/exports") / "../../../../x").path == "/v1/p/x"
    with pytest.raises(ProtocolError):
        safe_export_id("../../../../x")


@pytest.mark.parametrize("value", ["1", "0a1b-2c3d_4e5f", "export:42", "é", 7, "7" * 128, "a.b", "%2e%2e"])
def test_ordinary_export_ids_pass(value):
    assert safe_export_id(value) == str(value)


def test_error_body_with_terminal_escapes_is_escaped_and_bounded():
    body = b"\x1b]0;owned\x07\x1b[2J\r\nServer on fire " + b"\x9b31m" * 20_000
    error = error_for(502, "ExportServerLogs", body, CIMultiDict({"X-Request-Id": "r\x1b[1m" * 100}))
    text = str(error)
    assert "\x1b" not in text and "\r" not in text and "\n" not in text and "\x9b" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J\\r\\nServer on fire" in text
    assert len(error.error_msg) <= 200 and error.error_msg.endswith("...")
    assert len(error.request_id) <= 64
    assert text.isprintable()


def test_json_error_fields_are_cleaned_and_code_and_request_id_kept_short():
    body = json.dumps({"error_code": "E" * 10_000, "error_msg": "bad\u202eevil\nline"}).encode()
    error = error_for(400, "op", body, CIMultiDict({"X-Request-Id": "x" * 10_000}))
    assert len(error.error_code) <= 64 and len(error.request_id) <= 64
    assert error.error_msg == "bad\\u202eevil\\nline"


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"error_code": 1' + b"0" * 5000 + b"}", b'{"error_msg": "\\ud800"}', b"\xff\xfe", b"NaN"],
)
def test_error_answer_with_an_unreadable_body_still_gives_its_api_error(body):
    error = error_for(503, "op", body, CIMultiDict())
    assert isinstance(error, ServerError) and error.error_code is None
    assert str(error).isprintable()


def test_retry_after_with_a_year_past_2_to_the_31_gives_no_wait_rather_than_a_crash():
    error = error_for(429, "op", b"", CIMultiDict({"Retry-After": "0 JAN 2147483648 0:0 GMT"}))
    assert isinstance(error, ThrottledError) and error.retry_after is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("rtl\u202e", "rtl\\u202e"),
        ("\ud800", "\\ud800"),
        ("  padded  ", "padded"),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),
        ("x" * 300, "x" * 197 + "..."),
        (None, "None"),
        ({}, "<dict>"),
        pytest.param(10**5000, "<an integer of 16610 bits>", id="huge-int"),
    ],
)
def test_clean_text_escapes_controls_and_truncates(text, expected):
    assert clean_text(text) == expected


def test_quoted_keeps_outer_spaces_that_may_be_the_problem():
    assert quoted(" db-01 ") == "' db-01 '"
    assert quoted("a\u202eb\n") == "'a\\u202eb\\n'"
    assert quoted("x" * 100, 10) == "'xxxxxxx...'"


@pytest.mark.parametrize(
    ("value", "plain", "with_numbers"),
    [
        (None, "null", "null"),
        (True, "a boolean", "a boolean"),
        (-1, "a number", "-1"),
        (2.5, "a number", "2.5"),
        (10**30, "a number", "a number"),
        ("x", "a string", "a string"),
        ([1], "a list", "a list"),
        ({"a": 1}, "an object", "an object"),
        (b"x", "a bytes", "a bytes"),
        (object(), "an object", "an object"),
    ],
)
def test_kind_of_names_a_json_value(value, plain, with_numbers):
    assert kind_of(value) == plain
    assert kind_of(value, numbers=True) == with_numbers


def test_logs_and_messages_escape_alike():
    """One rule and one escape: a log field and a message line differ only in bound and marker."""
    text = "a\x1b\u00a0\ue000\U000f0000\u2028b"
    assert clean(text) == clean_text(text) == "a\\x1b\\xa0\\ue000\\U000f0000\\u2028b"
