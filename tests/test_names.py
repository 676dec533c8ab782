"""Which server ids can name their files: the check the inventory (and later discovery) uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config.names import LONGEST_SUFFIX, MAX_ID_BYTES, MAX_NAME_BYTES, check_file_name, segment_problem
from collector.destinations.base import archive_name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        pytest.param("", "it is empty", id="empty"),
        pytest.param("A" * 129, "longer than 128 characters", id="too-many-characters"),
        pytest.param("€" * 80, "longer than 238 bytes as UTF-8", id="too-many-bytes"),
        pytest.param("a/b", "it contains a slash", id="slash"),
        pytest.param("a\\b", "it contains a slash", id="backslash"),
        pytest.param("a..b", "it contains '..'", id="dotdot"),
        pytest.param(".", "it starts with '.'", id="dot"),
        pytest.param("-rf", "it starts with '-'", id="dash"),
        pytest.param("a\x1bb", "control character", id="escape"),
        pytest.param("a\x85b", "control character", id="c1"),
        pytest.param("a\x7fb", "control character", id="delete"),
        pytest.param("gpj\u202eexe", "format character", id="bidi-override"),
        pytest.param("a\u200db", "format character", id="zero-width-joiner"),
        pytest.param("a\ud800", "lone surrogate", id="surrogate"),
        pytest.param("a\u2028b", "line break", id="line-separator"),
    ],
)
def test_unsafe_file_names_are_refused_with_the_reason(name, fragment):
    assert fragment in (check_file_name(name) or "")


@pytest.mark.parametrize("name", ["2102313YJK10N1000001", "A" * 128, "é" * 119, "srv_01.rack-2", "server 1"])
def test_ordinary_ids_are_fine(name):
    assert check_file_name(name) is None


def test_longest_accepted_id_makes_a_partial_file_of_exactly_the_longest_name(tmp_path):
    """`LONGEST_SUFFIX` is what `archive_name` and `.part` add: if either grows, this fails."""
    name = "é" * 119  # 238 bytes
    assert len(name.encode()) == MAX_ID_BYTES
    assert check_file_name(name) is None and check_file_name(name + "x") is not None
    partial = Path(archive_name("p", name) + ".part")
    assert partial.name == name + LONGEST_SUFFIX
    assert len(partial.name.encode()) == MAX_NAME_BYTES
    (tmp_path / partial.name).touch()
    with pytest.raises(OSError):  # one byte more than the file system takes
        (tmp_path / (partial.name + "x")).touch()


@pytest.mark.parametrize(
    ("text", "strict_words"),
    [
        pytest.param("db 01", "whitespace", id="space"),
        pytest.param("db\u00a001", "whitespace", id="no-break-space"),
        pytest.param("db\ue000", "not printable", id="private-use"),
    ],
)
def test_a_server_id_keeps_what_an_export_id_may_not(text, strict_words):
    """Server ids are named by people; export ids go into a URL with our token (segment_problem)."""
    assert check_file_name(text) is None
    assert strict_words in segment_problem(text, max_chars=128, strict=True)


@pytest.mark.parametrize("text", ["a\x1bb", "a\u202eb", "a\u2028b", "a\ud800"])
def test_both_kinds_of_id_refuse_what_can_act_on_a_terminal(text):
    assert check_file_name(text) == segment_problem(text, max_chars=128, strict=True)
