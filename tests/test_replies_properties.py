"""Property tests: whatever a server sends, each parser gives a bounded, typed value or refuses.

Every test here feeds arbitrary input (bytes, JSON-like values nested deep, integers with
hundreds of digits, lone surrogates, control and bidi characters) and checks that only
`ProtocolError` comes out, never RecursionError, OverflowError or UnicodeError, and that
what does come out is within the bounds later code relies on.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _strategies import DANGEROUS, texts
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from collector.clouddc.replies import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    ExportState,
    ExportStatus,
    parse_json,
    parse_percentage,
    parse_state,
    parse_timestamp,
    safe_export_id,
)
from collector.config.names import MAX_NAME_BYTES, check_file_name
from collector.destinations.base import archive_name
from collector.errors import APIError, ProtocolError
from collector.net.status import status_error as error_for
from collector.sweep.polling import ExportDurations, PollSchedule
from collector.text import clean_text

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=150)  # the rest is conftest's profile

TEXT = texts()
HUGE_INTS = st.one_of(
    st.integers(), st.integers(min_value=10**300, max_value=10**1200), st.integers(max_value=-(10**300))
)
SCALARS = st.one_of(st.none(), st.booleans(), HUGE_INTS, st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def walk(value: object):
    yield value
    if isinstance(value, list):
        for item in value:
            yield from walk(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk(item)


def printable(text: str) -> bool:
    return all(char == " " or char.isprintable() for char in text)


# -- parse_json ------------------------------------------------------------------------------


def _encoded(value: object, ensure_ascii: bool) -> bytes:
    """`value` as JSON text the way a server could send it, even when json would refuse."""
    try:
        text = json.dumps(value, ensure_ascii=ensure_ascii)
    except ValueError:  # an integer past int's 4300 digits
        text = "1" + "0" * 5000
    return text.encode("utf-8", "surrogatepass")  # a raw surrogate is invalid UTF-8: refused


def _nested(inner: bytes, levels: int, kind: str) -> bytes:
    opening, closing = {"list": (b"[", b"]"), "object": (b'{"k":', b"}"), "string": (b'["[{', b'"]')}[kind]
    return opening * levels + inner + closing * levels


BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(_encoded, JSON_LIKE, st.booleans()),
    st.builds(
        _nested,
        st.sampled_from([b"1", b"[]", b'"x"', b"", b"[", b"}"]),
        st.integers(0, 3000),
        st.sampled_from(["list", "object", "string"]),
    ),
    st.builds(lambda digits: b'{"percentage": ' + digits.encode() + b"}", st.text("0123456789.eE+-", max_size=500)),
    st.sampled_from(
        [
            b"NaN",
            b"[Infinity]",
            b"-Infinity",
            b"1e400",
            b"-1e400",
            b'"\\ud800"',
            b'{"\\udfff": 1}',
            b'"\\\\ud800"',
            b'"\\ud83d\\ude00"',
            b"\xef\xbb\xbf{}",
        ]
    ),
)


@PROPERTY
@given(BODIES)
@example(b"[" * 100_000)
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
def test_parse_json_gives_bounded_json_or_protocol_error(body):
    try:
        value = parse_json(body, operation="op")
    except ProtocolError as exc:
        assert str(exc).startswith("op: ")
        return
    assert depth(value) <= MAX_JSON_DEPTH
    for item in walk(value):
        if isinstance(item, str):
            item.encode("utf-8")  # no lone surrogate anywhere, key or value
        elif isinstance(item, float):
            assert math.isfinite(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            assert len(str(abs(item))) <= MAX_NUMBER_CHARS
    assert value == json.loads(body.decode("utf-8-sig"))  # accepting changes nothing


# JSON a server may well send: strings full of brackets, quotes and backslashes, nested up to
# the limit. The depth check reads strings without json's help, so it must not be fooled.
TRICKY_TEXT = st.text(st.sampled_from(["[", "]", "{", "}", '"', "\\", "a", " ", "é", "\U0001f600"]), max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
REASONABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**15), 10**15), FINITE, TRICKY_TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=40,
)


def _wrapped(value: object, levels: int) -> object:
    for _ in range(levels):
        value = [value]
    return value


@PROPERTY
@given(REASONABLE, st.integers(0, MAX_JSON_DEPTH), st.booleans())
def test_parse_json_accepts_reasonable_json_up_to_the_depth_limit(value, levels, ensure_ascii):
    value = _wrapped(value, levels)
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    if depth(value) <= MAX_JSON_DEPTH:
        assert parse_json(body, operation="op") == value
    else:
        with pytest.raises(ProtocolError, match="nested deeper"):
            parse_json(body, operation="op")


# -- status fields ---------------------------------------------------------------------------

PERCENT_TEXT = st.text(st.sampled_from(list("0123456789.% -+eE\t\u00a0²٣x")), max_size=40)


@PROPERTY
@given(st.one_of(SCALARS, JSON_LIKE, PERCENT_TEXT, st.decimals(allow_nan=True)))
@example("1" * 60_000 + "%")
@example(10**400)
@example(float("inf"))
def test_parse_percentage_is_none_or_within_0_to_100(value):
    result = parse_percentage(value)
    assert result is None or (type(result) is int and 0 <= result <= 100)


@PROPERTY
@given(st.text(st.sampled_from(list("0123456789.% \t")), max_size=32))
def test_parse_percentage_reads_strings_as_the_documented_grammar(text):
    """`digits[.digits][ ]%` with spaces around: the grammar the old regex described."""
    match = re.fullmatch(r"\s*([0-9]+)(?:\.[0-9]+)?\s*%?\s*", text)
    assert parse_percentage(text) == (min(int(match.group(1)), 100) if match else None)


@PROPERTY
@given(st.one_of(SCALARS, JSON_LIKE))
def test_parse_state_never_raises_and_unknown_is_never_completed(value):
    state = parse_state(value)
    assert isinstance(state, ExportState)
    if state is ExportState.COMPLETED:
        assert value.strip().lower() == "completed"


OFFSETS = st.timedeltas(timedelta(hours=-23), timedelta(hours=23))
ISO_DATETIMES = st.builds(
    lambda when, sep, spec: when.isoformat(sep=sep, timespec=spec),
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.none() | st.timezones() | st.builds(timezone, OFFSETS),
    ),
    st.sampled_from(["T", " "]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
)


@PROPERTY
@given(st.one_of(SCALARS, ISO_DATETIMES, ISO_DATETIMES.map(lambda text: text.replace("+00:00", "Z"))))
@example("0001-01-01T00:00:00+00:00")
@example("9999-12-31T23:59:59-23:59")
@example("2100-12-31T23:00:00-05:00")
def test_parse_timestamp_is_none_or_utc_within_bounds(value):
    when = parse_timestamp(value)
    if when is None:
        return
    assert when.utcoffset() == timedelta(0)
    assert EARLIEST_YEAR <= when.year <= LATEST_YEAR
    original = datetime.fromisoformat(value.strip())
    if original.tzinfo is not None:
        assert when == original


@PROPERTY
@given(
    st.one_of(SCALARS, ISO_DATETIMES),
    st.integers(0, 100) | st.none(),
    st.floats(min_value=0, max_value=4e9),
)
@example("2000-01-01T00:00:00-23:59", 1, 4e9)
@example("2100-12-31T23:59:59+23:59", 99, 0.0)
def test_any_created_at_gives_a_resumed_export_a_bounded_poll_delay(created_at, percentage, wall):
    """The schedule anchors a resumed export on `created_at`: no value may break its arithmetic."""
    status = ExportStatus.from_body(
        {"export_id": "1", "status": "Running", "percentage": percentage, "created_at": created_at},
        operation="op",
    )
    durations = ExportDurations()
    for seconds in (10, 20, 30, 40, 50):
        durations.add(seconds)
    schedule = PollSchedule(resumed=True, durations=durations, wall=lambda: wall, started=100.0)
    first = schedule.first_delay(100.0)
    delay = schedule.next_delay(status, now=100.0 + first)
    assert schedule.shortest <= first <= schedule.longest
    assert schedule.shortest <= delay <= schedule.longest
    assert math.isfinite(durations.quantile(0.9))


# -- export ids ------------------------------------------------------------------------------

FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"}


@PROPERTY
@given(st.one_of(TEXT, HUGE_INTS, SCALARS, JSON_LIKE, texts(max_size=6, pieces=st.sampled_from(DANGEROUS))))
@example("../../../../x")
@example("..")
@example(".")
@example("1" * 129)
@example(10**200)
def test_safe_export_id_stays_one_path_segment(value):
    try:
        export_id = safe_export_id(value)
    except ProtocolError as exc:
        assert printable(str(exc)) and len(str(exc)) < 200
        return
    assert 1 <= len(export_id) <= 128
    assert "/" not in export_id and "\\" not in export_id and ".." not in export_id and export_id != "."
    assert not FORBIDDEN_CATEGORIES & {unicodedata.category(char) for char in export_id}
    assert not any(char.isspace() for char in export_id)
    url = URL("http://h/a/") / export_id / "content"
    assert url.parts == ("/", "a", export_id, "content")
    assert URL(str(url)).parts == ("/", "a", export_id, "content")  # as the server will read it


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["export_id", "status", "percentage", "created_at", "x"]),
        st.one_of(SCALARS, ISO_DATETIMES, st.lists(SCALARS, max_size=2)),
    )
)
def test_status_body_gives_a_status_or_protocol_error(body):
    try:
        status = ExportStatus.from_body(body, operation="op")
    except ProtocolError:
        return
    assert status.export_id == safe_export_id(status.export_id)
    assert printable(status.status) and len(status.status) <= 64


# -- text for messages ---------------------------------------------------------------------------


@PROPERTY
@given(
    st.one_of(texts(max_size=400), st.binary(max_size=1200), SCALARS, JSON_LIKE),
    st.integers(4, 300),
)
@example("\x1b]0;owned\x07\x1b[2J" * 1000, 200)
@example(b"\xff\xfe\x1b[31m" * 20_000, 200)
def test_clean_text_is_printable_and_bounded(text, limit):
    cleaned = clean_text(text, limit)
    assert len(cleaned) <= limit
    assert printable(cleaned)
    if isinstance(text, str) and printable(text) and len(text.strip()) <= limit:
        assert cleaned == text.strip()  # nothing to clean: left as it was


HEADERS = st.dictionaries(
    st.sampled_from(["X-Request-Id", "Retry-After", "Content-Type", "Location"]),
    TEXT | st.sampled_from(["0 JAN 2147483648 0:0 GMT", "1e999", "nan", "-1", "Wed, 21 Oct 2015 07:28:00 GMT"]),
)
ERROR_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _encoded,
        st.dictionaries(st.sampled_from(["error_code", "error_msg", "code", "message"]), JSON_LIKE),
        st.booleans(),
    ),
    BODIES,
)


@PROPERTY
@given(st.integers(400, 599), ERROR_BODIES, HEADERS)
def test_error_for_never_raises_and_quotes_only_clean_text(status, body, headers):
    error = error_for(status, "ShowLogsExportStatus", body, CIMultiDict(headers))
    assert isinstance(error, APIError) and error.status == status
    text = str(error)
    assert printable(text) and len(text) < 450
    assert error.error_code is None or len(error.error_code) <= 64
    assert error.request_id is None or len(error.request_id) <= 64


# -- file names --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("names")


@PROPERTY
@given(
    st.one_of(
        TEXT,
        st.text(st.characters(exclude_categories=()), min_size=100, max_size=260),
        texts(max_size=130, pieces=st.sampled_from([*DANGEROUS, "a", "€"])),
    )
)
@example("a" * 238)
@example("€" * 80)
@example("-rf")
def test_check_file_name_admits_only_names_that_make_one_creatable_file(folder, name):
    if check_file_name(name) is not None:
        return
    assert not (FORBIDDEN_CATEGORIES - {"Zs"}) & {unicodedata.category(char) for char in name}
    assert "/" not in name and "\\" not in name and ".." not in name and name[0] not in "-."
    partial = Path(archive_name("p", name) + ".part")
    assert partial.parent == Path("p")
    assert len(partial.name.encode()) <= MAX_NAME_BYTES
    path = folder / partial.name
    path.touch()  # one file, right there: no ENAMETOOLONG, no other folder
    assert list(folder.iterdir()) == [path]
    path.unlink()
