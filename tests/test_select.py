"""`--select`: terms, the union/intersection/exclusion algebra, @FILE, and the usage errors.

The algebra is checked against a brute-force model written the way Ansible evaluates host
patterns (plain terms, then `&`, then `!`, applied one after the other to a list), over random
small fleets, with fnmatch.fnmatchcase deciding every single match.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.config.inventory import Server
from collector.config.select import MAX_FILE_BYTES, Glob, glob_problem, parse_selection
from collector.errors import UsageError

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=200)  # the rest is conftest's profile


@dataclass(frozen=True)
class P:
    """Stands in for `inventory.Project`: selection reads only `project_id`."""

    project_id: str


FLEET = [
    (P("p1"), Server("2102-A-001", "db-01", {"rack": "A12", "role": "db"})),
    (P("p1"), Server("2102-A-002", "db-02", {"rack": "A13", "role": "db"})),
    (P("p1"), Server("2102-B-003", "web-01", {"rack": "B01"})),
    (P("p2"), Server("2102-B-004", None, {"role": "web"})),
    (P("p2"), Server("node-10", "node-10")),
]


def chosen(*exprs: str, fleet=FLEET, cwd: Path | None = None) -> list[str]:
    return [server.id for _, server in parse_selection(list(exprs), cwd=cwd).apply(fleet)]


# -- the terms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "ids"),
    [
        ("id:2102-A-*", ["2102-A-001", "2102-A-002"]),
        ("name:db-*", ["2102-A-001", "2102-A-002"]),
        ("tag:rack=A1?", ["2102-A-001", "2102-A-002"]),
        ("tag:role=web", ["2102-B-004"]),
        ("tag:role=*", ["2102-A-001", "2102-A-002", "2102-B-004"]),
        ("project:p2", ["2102-B-004", "node-10"]),
        ("web-01", ["2102-B-003"]),  # a bare glob matches the name...
        ("2102-B-00[34]", ["2102-B-003", "2102-B-004"]),  # ...or the id
        ("name:node-1*", ["node-10"]),
        ("*", [server.id for _, server in FLEET]),
    ],
)
def test_each_kind_of_term_selects_what_it_names(expr, ids):
    assert chosen(expr) == ids


def test_globs_are_anchored_and_case_sensitive():
    with pytest.raises(UsageError):
        chosen("name:db-0")  # anchored: db-0 is not db-01
    with pytest.raises(UsageError):
        chosen("name:DB-*")
    assert chosen("name:db-0?") == ["2102-A-001", "2102-A-002"]


def test_a_name_glob_never_matches_a_server_without_a_name():
    assert chosen("name:*") == ["2102-A-001", "2102-A-002", "2102-B-003", "node-10"]


def test_a_tag_term_needs_the_tag_itself():
    # role=* must not match servers that have no role tag at all
    assert "2102-B-003" not in chosen("tag:role=*")


def test_regex_characters_in_a_glob_are_literal():
    fleet = [(P("p"), Server("a.b+(c)")), (P("p"), Server("axb+(c)")), (P("p"), Server("a.bb(c)"))]
    assert chosen("a.b+(c)", fleet=fleet) == ["a.b+(c)"]
    assert chosen("a.b+(?)", fleet=fleet) == ["a.b+(c)"]


def test_terms_are_matched_with_spaces_around_them_trimmed():
    assert chosen(" name:db-01 , tag:rack=B01 ") == ["2102-A-001", "2102-B-003"]


# -- the algebra ------------------------------------------------------------------------------


def test_plain_terms_unite_ampersands_intersect_and_bangs_exclude_in_any_order():
    expected = ["2102-A-002"]
    assert chosen("tag:role=db,!name:db-01,&project:p1") == expected
    assert chosen("!name:db-01,&project:p1,tag:role=db") == expected
    assert chosen("&project:p1", "!name:db-01", "tag:role=db") == expected


def test_only_exclusions_start_from_every_server():
    assert chosen("!project:p1") == ["2102-B-004", "node-10"]


def test_only_intersections_start_from_every_server():
    assert chosen("&tag:role=*", "&project:p2") == ["2102-B-004"]


def test_two_intersections_must_both_hold():
    assert chosen("*", "&name:*-0?", "&tag:role=*") == ["2102-A-001", "2102-A-002"]


def test_the_targets_order_is_kept_whatever_the_terms_order():
    assert chosen("node-10,2102-A-001") == ["2102-A-001", "node-10"]


def test_no_select_selects_everything():
    selection = parse_selection([])
    assert selection.everything
    assert selection.apply(FLEET) == FLEET
    assert selection.describe(5, 5) == "5 of 5 servers (no --select)"


# Random small fleets: ids, names and tag values from a few short words, and globs over the
# same letters, so that every term hits some servers and misses others.
_value = st.sampled_from(["a", "b", "ab", "ba", "a1", "b1"])
_glob = st.sampled_from(["a", "ab", "a*", "*b", "?", "??", "*", "*1", "[ab]", "[!a]*", "b?"]) | st.text(
    "ab1*?", min_size=1, max_size=3
)
_server = st.builds(
    Server,
    _value,
    st.none() | _value,
    st.dictionaries(st.sampled_from(["rack", "role"]), _value, max_size=2),
)
_fleet = st.lists(
    st.tuples(st.sampled_from([P("p1"), P("p2")]), _server),
    min_size=3,
    max_size=8,
    unique_by=lambda target: (target[0].project_id, target[1].id),
)
_kind = st.sampled_from(["id", "name", "project", "tag", "bare"])
_term = st.builds(
    lambda op, kind, key, glob: (op, kind, key, glob),
    st.sampled_from(["", "", "&", "!"]),
    _kind,
    st.sampled_from(["rack", "role"]),
    _glob | st.sampled_from(["p1", "p2", "p*"]),
)


def _spelled(term) -> str:
    op, kind, key, glob = term
    body = {"bare": glob, "tag": f"tag:{key}={glob}"}.get(kind, f"{kind}:{glob}")
    return op + body


def _model_hits(term, project: P, server: Server) -> bool:
    _, kind, key, glob = term
    match = lambda value: value is not None and fnmatch.fnmatchcase(value, glob)  # noqa: E731
    if kind == "id":
        return match(server.id)
    if kind == "name":
        return match(server.name)
    if kind == "project":
        return match(project.project_id)
    if kind == "tag":
        return match(server.tags.get(key))
    return match(server.id) or match(server.name)


def _ansible_model(terms, fleet) -> list:
    """Ansible's `_evaluate_patterns`, on (project, server) pairs: a list, term by term."""
    regular = [t for t in terms if t[0] == ""]
    ordered = (regular or [None]) + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]
    hosts: list = []
    for term in ordered:
        that = fleet if term is None else [x for x in fleet if _model_hits(term, *x)]
        if term is not None and term[0] == "!":
            hosts = [h for h in hosts if h not in that]
        elif term is not None and term[0] == "&":
            hosts = [h for h in hosts if h in that]
        else:
            hosts += [h for h in that if h not in hosts]
    return hosts


@PROPERTY
@given(_fleet, st.lists(_term, min_size=1, max_size=6))
def test_selection_agrees_with_ansibles_evaluation_on_random_fleets(fleet, terms):
    selection = parse_selection([",".join(_spelled(t) for t in terms)])
    expected = _ansible_model(terms, fleet)
    got = [target for target in fleet if selection.matches(target[0].project_id, target[1])]
    assert sorted(map(id, got)) == sorted(map(id, expected))
    if expected:
        assert selection.apply(fleet) == got  # in the fleet's own order
    else:
        with pytest.raises(UsageError):
            selection.apply(fleet)


@PROPERTY
@given(_fleet, st.lists(_term, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_several_flags_and_a_file_mean_the_terms_joined_with_commas(tmp_path_factory, fleet, terms, rng):
    spelled = [_spelled(t) for t in terms]
    joined = parse_selection([",".join(spelled)])
    flags = parse_selection(spelled)
    shuffled = spelled[:]
    rng.shuffle(shuffled)
    folder = tmp_path_factory.mktemp("select")
    (folder / "terms.txt").write_text("# from the ticket\n\n" + "\n".join(shuffled) + "\n")
    from_file = parse_selection(["@terms.txt"], cwd=folder)
    for project, server in fleet:
        want = joined.matches(project.project_id, server)
        assert flags.matches(project.project_id, server) == want
        assert from_file.matches(project.project_id, server) == want


@PROPERTY
@given(st.text("ab*?[]!-", max_size=8), st.text("ab]!-", max_size=6))
def test_a_glob_matches_exactly_as_fnmatchcase(pattern, value):
    if glob_problem(pattern) is None:
        assert Glob(pattern)(value) == fnmatch.fnmatchcase(value, pattern)
    else:
        with pytest.raises(ValueError):
            Glob(pattern)


@pytest.mark.parametrize("pattern", ["a[", "[!", "[]", "[!]", "x[a-", "[a]b["])
def test_an_unclosed_bracket_is_a_glob_problem(pattern):
    assert glob_problem(pattern) is not None


@pytest.mark.parametrize("pattern", ["[]]", "[!]]", "a]", "[[]", "[a-z]*", "[!a]x"])
def test_a_closed_bracket_or_a_lone_closing_one_is_fine(pattern):
    assert glob_problem(pattern) is None


# -- @FILE ------------------------------------------------------------------------------------


def test_a_file_lists_ids_one_per_line_with_comments_and_blank_lines(tmp_path):
    (tmp_path / "ticket.txt").write_bytes(
        b"\xef\xbb\xbf# INC-4711: nodes with the dead PSU\r\n"
        b"\r\n"
        b"2102-A-002   # db-02\r\n"
        b"  node-10\r\n"
        b"name:web-01, tag:role=web\n"
    )
    assert chosen("@ticket.txt", cwd=tmp_path) == ["2102-A-002", "2102-B-003", "2102-B-004", "node-10"]


def test_a_file_is_read_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "ids.txt").write_text("node-10\n")
    monkeypatch.chdir(tmp_path)
    assert [s.id for _, s in parse_selection(["@ids.txt"]).apply(FLEET)] == ["node-10"]


def test_a_hash_inside_a_term_is_not_a_comment(tmp_path):
    fleet = [(P("p"), Server("rack#7"))]
    (tmp_path / "ids.txt").write_text("rack#7\n")
    assert chosen("@ids.txt", fleet=fleet, cwd=tmp_path) == ["rack#7"]


def test_bang_file_excludes_every_server_it_lists(tmp_path):
    (tmp_path / "done.txt").write_text("2102-A-001\nname:web-*\n")
    assert chosen("project:p1", "!@done.txt", cwd=tmp_path) == ["2102-A-002"]


def test_ampersand_file_intersects_with_the_union_of_its_lines(tmp_path):
    (tmp_path / "suspects.txt").write_text("2102-A-001\nnode-10\n2102-B-003\n")
    assert chosen("project:p1", "&@suspects.txt", cwd=tmp_path) == ["2102-A-001", "2102-B-003"]


def test_lines_of_a_plain_file_may_intersect_and_exclude(tmp_path):
    (tmp_path / "terms.txt").write_text("tag:role=db\n!name:db-01\n")
    assert chosen("@terms.txt", cwd=tmp_path) == ["2102-A-002"]


def test_a_file_of_many_ids_selects_them_all(tmp_path):
    fleet = [(P("p"), Server(f"id-{n:05d}")) for n in range(20_000)]
    wanted = [f"id-{n:05d}" for n in range(0, 20_000, 3)]
    (tmp_path / "ids.txt").write_text("\n".join(wanted))
    assert chosen("@ids.txt", fleet=fleet, cwd=tmp_path) == wanted


@pytest.mark.parametrize(
    ("setup", "expr", "words"),
    [
        (None, "@missing.txt", ["@missing.txt", "no such file", "current directory"]),
        ("dir", "@folder", ["@folder", "is a directory"]),
        ("latin1", "@latin1.txt", ["@latin1.txt", "line 2 is not UTF-8"]),
        ("empty", "@empty.txt", ["'@empty.txt'", "lists no servers", "every server"]),
        ("nested", "@nested.txt", ["@nested.txt:2", "'@other.txt'", "cannot include another file"]),
        ("bang", "!@bang.txt", ["@bang.txt:1", "'!x'", "'!' inside a file read with '!@'"]),
        ("typo", "@typo.txt", ["@typo.txt:3", "'nmae:db-*'", "unknown prefix 'nmae'", "did you mean name:?"]),
        ("big", "@big.txt", ["@big.txt", f"larger than {MAX_FILE_BYTES:,} bytes"]),
        (None, "@", ["'@'", "no file name after '@'"]),
    ],
)
def test_a_file_that_cannot_serve_is_one_usage_error_naming_it(tmp_path, setup, expr, words):
    if setup == "dir":
        (tmp_path / "folder").mkdir()
    elif setup == "latin1":
        (tmp_path / "latin1.txt").write_bytes(b"node-10\nn\xe9ud\n")
    elif setup == "empty":
        (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    elif setup == "nested":
        (tmp_path / "nested.txt").write_text("node-10\n@other.txt\n")
    elif setup == "bang":
        (tmp_path / "bang.txt").write_text("!x\n")
    elif setup == "typo":
        (tmp_path / "typo.txt").write_text("node-10\n\nnmae:db-*\n")
    elif setup == "big":
        with (tmp_path / "big.txt").open("wb") as file:
            file.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(UsageError) as caught:
        parse_selection([expr], cwd=tmp_path)
    text = str(caught.value)
    assert "\n" not in text and caught.value.hint
    for word in words:
        assert word in text


# -- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("nmae:db-*", ["--select 'nmae:db-*'", "unknown prefix 'nmae'", "did you mean name:?"]),
        ("Tag:rack=A1", ["unknown prefix 'Tag'", "did you mean tag:?"]),
        ("projet:p1", ["did you mean project:?"]),
        ("zone:x", ["unknown prefix 'zone'", "id:GLOB, name:GLOB, tag:KEY=GLOB"]),
        ("a,,b", ["--select 'a,,b'", "an empty term", "extra ','"]),
        ("a,", ["--select 'a,'", "an empty term"]),
        ("", ["an empty term"]),
        ("tag:rack", ["'tag:rack'", "tag: without '='", "tag:rack=A1*"]),
        ("tag:=A1", ["the tag's key is empty"]),
        ("tag:rack=", ["nothing after 'tag:rack='", "tag:rack=*"]),
        ("name:", ["nothing after 'name:'"]),
        ("node-[1", ["'node-[1'", "'[' at character 6 is never closed", "'[[]'"]),
        ("name:db-[0", ["never closed"]),
        ("!", ["nothing after '!'"]),
        ("& ", ["nothing after '&'"]),
        ("!&x", ["one '&' or '!'"]),
    ],
)
def test_a_wrong_expression_is_one_usage_error_with_a_hint(expr, words):
    with pytest.raises(UsageError) as caught:
        parse_selection([expr])
    text = str(caught.value)
    assert "\n" not in text
    assert caught.value.hint
    for word in words:
        assert word in text


def test_a_name_holding_a_colon_is_reached_with_a_prefix():
    fleet = [(P("p"), Server("s1", "db:01"))]
    with pytest.raises(UsageError, match="unknown prefix 'db'"):
        chosen("db:01", fleet=fleet)
    assert chosen("name:db:01", fleet=fleet) == ["s1"]
    assert chosen("*:01", fleet=fleet) == ["s1"]  # not letters before ':': a bare glob


def test_control_characters_in_an_expression_are_escaped_in_the_error():
    with pytest.raises(UsageError) as caught:
        parse_selection(["nmae:\x1b[31mred"])
    assert "\x1b" not in str(caught.value)
    assert "\\x1b" in str(caught.value)


def test_a_selection_matching_nothing_is_a_usage_error_quoting_it():
    with pytest.raises(UsageError) as caught:
        parse_selection(["name:node-1", "!project:p9"]).apply(FLEET)
    assert str(caught.value).startswith("--select 'name:node-1,!project:p9': none of the 5 servers matches")
    assert "case-sensitive" in caught.value.hint


def test_require_match_without_a_total():
    selection = parse_selection(["x"])
    selection.require_match(3)
    with pytest.raises(UsageError, match=r"^--select 'x': no server matches"):
        selection.require_match(0)


def test_describe_counts_with_thousands_separators():
    selection = parse_selection(["name:node-1*"])
    assert selection.describe(12, 2500) == "12 of 2,500 servers match name:node-1*"
    assert selection.describe(1, 2500) == "1 of 2,500 servers matches name:node-1*"


# -- through the command line -------------------------------------------------------------------


@pytest.mark.slow
def test_run_select_collects_exactly_the_matching_servers_and_reports_only_them(tmp_path):
    """`collector run --select`, a real process against the simulator: the incident sweep."""
    import json
    import subprocess
    import sys

    import anyio
    import yaml

    from collector.simulator import SimConfig, Simulator

    async def main() -> tuple[list[str], list[str], subprocess.CompletedProcess]:
        async with Simulator(SimConfig(servers=30, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))) as sim:
            sim.write_inventory(tmp_path / "inventory.yaml")
            listed = yaml.safe_load((tmp_path / "inventory.yaml").read_text())["servers"]
            first = listed[0]["name"]
            wanted = sorted(s["id"] for s in listed if s["name"] != first and s["name"] <= listed[9]["name"])
            run = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "collector",
                    "run",
                    "-i",
                    str(tmp_path / "inventory.yaml"),
                    "-o",
                    str(tmp_path / "out"),
                    "--select",
                    ",".join(f"id:{sid}" for sid in wanted[:-1]),
                    "--select",
                    f"{wanted[-1]},{first}",
                    "--select",
                    f"!name:{first}",
                    "--poll-interval",
                    "0.1",
                    "--no-progress",
                ],
                check=False,
            )
            validate = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "collector",
                    "validate",
                    "-i",
                    str(tmp_path / "inventory.yaml"),
                    "--select",
                    "name:nothing-like-this*",
                ],
                check=False,
            )
            nothing = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "collector",
                    "run",
                    "-i",
                    str(tmp_path / "inventory.yaml"),
                    "-o",
                    str(tmp_path / "nothing"),
                    "--select",
                    "name:nothing-like-this*",
                ],
                check=False,
            )
            assert nothing.returncode == 2, nothing.stderr.decode()
            assert nothing.stderr.decode().startswith("collector: error: --select")
            assert not list((tmp_path / "nothing").rglob("*"))  # checked writable, nothing written
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert run.returncode == 0, run.stderr.decode()
        return wanted, sorted(s["server_id"] for s in report["servers"]), validate

    wanted, reported, validate = anyio.run(main)
    assert len(wanted) == 9 and reported == wanted
    assert validate.returncode == 2
    assert b"--select 'name:nothing-like-this*': none of the 30 servers matches" in validate.stderr
