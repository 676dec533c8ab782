"""One mapping from an HTTP error status to collector's error, for the API and the credential
sources alike (`collector.net.status`); they differ only where they must: a 403."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from collector.auth.http import Answer
from collector.auth.http import status_error as credential_error
from collector.errors import APIError, AuthError, ExitCode, Forbidden, NotFoundError, ServerError, ThrottledError
from collector.net.status import status_error


@pytest.mark.parametrize(
    ("status", "api", "source"),
    [
        (400, APIError, APIError),
        (401, AuthError, AuthError),
        (403, Forbidden, AuthError),  # the API: may not do this; a source: no credentials at all
        (404, NotFoundError, NotFoundError),
        (429, ThrottledError, ThrottledError),
        (500, ServerError, ServerError),
        (503, ServerError, ServerError),
    ],
)
def test_the_api_and_the_credential_sources_map_statuses_alike_but_for_403(status, api, source):
    headers = CIMultiDict({"Retry-After": "3"})
    assert type(status_error(status, "op", b"", headers)) is api
    answer = Answer(status, headers, b"")  # type: ignore[arg-type]
    assert type(credential_error("IAM", answer)) is source


def test_a_403_from_a_credential_source_ends_the_run_and_one_from_the_api_fails_that_server():
    """README: a 403 from the API fails that server only; an auth error is exit 3."""
    assert not isinstance(status_error(403, "op", b"", {}), AuthError)
    assert isinstance(status_error(403, "IAM", b"", {}, credential_source=True), AuthError)
    assert ExitCode.AUTH == 3


def test_both_read_the_same_body_shapes_and_retry_after():
    for body in (
        b'{"error_code": "APIGW.0308", "error_msg": "slow down"}',
        b'{"error": {"code": "APIGW.0308", "message": "slow down"}}',
    ):
        error = status_error(429, "op", body, {"Retry-After": "4", "X-Request-Id": "r1"})
        assert (error.error_code, error.error_msg, error.request_id) == ("APIGW.0308", "slow down", "r1")
        assert isinstance(error, ThrottledError) and error.retry_after == 4
        answer = Answer(429, CIMultiDict({"Retry-After": "4"}), body)  # type: ignore[arg-type]
        same = credential_error("IAM", answer)
        assert (same.error_code, same.error_msg) == ("APIGW.0308", "slow down")
        assert isinstance(same, ThrottledError) and same.retry_after == 4


def test_a_secret_echoed_back_is_masked_before_the_message_is_cut_or_cleaned():
    secret = "hunter2-" + "s" * 300  # longer than the message bound: cutting first would leak a prefix
    body = f'{{"error_msg": "bad password {secret}\\u001b[2J"}}'.encode()
    error = status_error(401, "IAM", body, {}, credential_source=True, secrets=[secret])
    assert "hunter2" not in str(error) and "***" in str(error)
    assert "\x1b" not in str(error)


def test_a_body_nested_past_the_parsers_depth_still_gives_the_status_error():
    error = status_error(403, "IAM", b"[" * 100_000, {}, credential_source=True)
    assert isinstance(error, AuthError) and error.error_code is None and str(error).isprintable()
