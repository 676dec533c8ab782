"""What the API really sends: status spellings, percentage forms, timestamps, error bodies."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from collector.replies import ExportState, ExportStatus, error_for, parse_percentage, parse_state, parse_timestamp
from collector.errors import AuthError, NotFoundError, ProtocolError, ServerError, ThrottledError


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
    [("30%", 30), ("30", 30), (30, 30), (30.7, 30), (" 45 % ", 45), ("100%", 100), (0, 0),
     (150, 100), (-5, 0), ("abc", None), (None, None), (True, None), ("", None), ("30%%", None)],
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
    error = error_for(500, "ExportServerLogs", b'{"error_code": "CLOUDDC.0500", "error_msg": "Internal error"}', headers)
    assert isinstance(error, ServerError)
    text = str(error)
    for part in ("HTTP 500", "CLOUDDC.0500", "Internal error", "req-123"):
        assert part in text


@pytest.mark.parametrize(
    ("status", "kind"), [(401, AuthError), (403, AuthError), (404, NotFoundError), (503, ServerError), (429, ThrottledError)]
)
def test_error_kinds(status, kind):
    assert type(error_for(status, "op", b"", CIMultiDict())) is kind


def test_429_with_plain_string_body_and_retry_after():
    error = error_for(429, "op", b"the request is overloaded", CIMultiDict({"Retry-After": "4"}))
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 4
    assert "the request is overloaded" in str(error)
