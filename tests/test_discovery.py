"""Discovery's parsing half: ListServers pages as hostile input, tag shapes, paging, merging.

The property tests feed arbitrary bytes, arbitrary JSON and page-shaped JSON full of
dangerous characters, and check that only `ProtocolError` comes out and that whatever comes
out usable is safe: ids usable as file names, bounded names and tags, markers fit for a query.
The last test lists the simulator's fleet over real HTTP, page by page.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from _strategies import DANGEROUS
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.clouddc.discovery import (
    MAX_MARKER_CHARS,
    MAX_NAME_CHARS,
    MAX_PAGE_SERVERS,
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_TAGS,
    PAGE_LIMIT,
    DiscoveredServer,
    PageCursor,
    ServerPage,
    discover_filter,
    merge_discovered,
    parse_server_page,
    unusable,
)
from collector.clouddc.replies import MAX_JSON_BYTES
from collector.config.inventory import Server
from collector.config.names import check_file_name
from collector.config.select import parse_selection
from collector.errors import ProtocolError, UsageError
from collector.simulator import SimConfig, Simulator

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=200)  # the rest is conftest's profile

TEXT = st.lists(st.sampled_from(DANGEROUS) | st.characters(), max_size=8).map("".join) | st.sampled_from(
    ["", "a" * 300]
)
SCALAR = st.none() | st.booleans() | st.integers(-(10**50), 10**50) | st.floats() | TEXT
JSON_LIKE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
TAG_ITEM = st.fixed_dictionaries({}, optional={"key": SCALAR, "value": JSON_LIKE}) | TEXT | JSON_LIKE
TAGS = st.none() | st.lists(TAG_ITEM, max_size=4) | st.dictionaries(TEXT, JSON_LIKE, max_size=4) | SCALAR
ENTRY = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.sampled_from(["2102313YJK10N1000123", "../x", "-rf", "a" * 200]), SCALAR),
            "name": SCALAR,
            "tags": TAGS,
            "status": JSON_LIKE,
        },
    )
    | JSON_LIKE
)
# Mostly well-formed entries with a dangerous piece here and there, so that usable servers,
# tags and markers all come out often enough to be checked.
SAFE_ID = st.sampled_from(["2102313YJK10N1000123", "node-7", "a.b_c"])
GOOD_KEY = st.sampled_from(["rack", "role", "slot"])
KEY = GOOD_KEY | GOOD_KEY | GOOD_KEY | st.sampled_from(["", "k" * 129]) | TEXT
GOOD_VALUE = st.sampled_from(["A12", "", 7, 1.5, True, None])
VALUE = GOOD_VALUE | GOOD_VALUE | GOOD_VALUE | SCALAR
PLAUSIBLE_TAGS = (
    st.lists(st.fixed_dictionaries({"key": KEY, "value": VALUE}), max_size=3)
    | st.dictionaries(KEY, VALUE, max_size=3)
    | st.lists(st.tuples(KEY, st.text(max_size=5)).map("=".join), max_size=3)
)
PLAUSIBLE = st.fixed_dictionaries(
    {"id": SAFE_ID},
    optional={"name": st.sampled_from(["db-01", None]) | TEXT, "tags": PLAUSIBLE_TAGS},
)
GOOD_MARKER = st.sampled_from(["2102313YJK10N1000123", "node-7"])
MARKER = GOOD_MARKER | GOOD_MARKER | st.sampled_from(["", "a b", "x" * 257]) | SCALAR
PAGE = st.fixed_dictionaries(
    {
        "servers": st.lists(PLAUSIBLE | PLAUSIBLE | ENTRY, max_size=6),
        "page_info": st.fixed_dictionaries({"next_marker": MARKER}) | st.none() | JSON_LIKE,
    },
    optional={"count": SCALAR},
)


def page(*servers: object, marker: object = None, **extra: object) -> bytes:
    body: dict[str, object] = {"servers": list(servers), **extra}
    if marker is not None:
        body["page_info"] = {"next_marker": marker, "current_count": len(servers)}
    return json.dumps(body).encode()


def check_page(result: ServerPage) -> None:
    """What later code may rely on, whatever the page held."""
    assert len(result.servers) <= MAX_PAGE_SERVERS
    for server in result.servers:
        assert isinstance(server, DiscoveredServer)
        assert isinstance(server.id, str)
        if server.problem is None:
            assert check_file_name(server.id) is None
            assert server.to_server().id == server.id
        else:
            assert server.problem.startswith("ListServers: ")
            assert server.problem.isprintable() and server.id.isprintable()
            assert len(server.id) <= 140
            with pytest.raises(ValueError):
                server.to_server()
        assert server.name is None or (isinstance(server.name, str) and len(server.name) <= MAX_NAME_CHARS)
        assert len(server.tags) <= MAX_TAGS
        for key, value in server.tags.items():
            assert isinstance(key, str) and 0 < len(key) <= MAX_TAG_KEY_CHARS
            assert isinstance(value, str) and len(value) <= MAX_TAG_VALUE_CHARS
    marker = result.next_marker
    if marker is not None:
        assert 0 < len(marker) <= MAX_MARKER_CHARS
        assert all("!" <= char <= "~" for char in marker)


def parse_or_refuse(body: bytes) -> None:
    try:
        result = parse_server_page(body)
    except ProtocolError as exc:
        assert str(exc).startswith("ListServers: ")
        assert "\n" not in str(exc)
    else:
        check_page(result)


# -- never anything but ProtocolError ---------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xff\xfe")
@example(b"[" * 5000)
@example(b'{"servers": [' + b"[" * 100 + b"]" * 100 + b"]}")
def test_arbitrary_bytes_give_a_page_or_a_protocol_error(body):
    parse_or_refuse(body)


@PROPERTY
@given(JSON_LIKE)
def test_arbitrary_json_gives_a_page_or_a_protocol_error(value):
    parse_or_refuse(json.dumps(value).encode())


@PROPERTY
@given(PAGE)
def test_page_shaped_json_gives_bounded_safe_servers_or_a_protocol_error(value):
    parse_or_refuse(json.dumps(value).encode())


# -- the page's shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[]", "expected a JSON object, got a list"),
        (b"{}", "expected a list of servers, got no servers"),
        (b'{"servers": {"id": "x"}}', "got servers as an object"),
        (b'{"servers": null}', "got no servers"),
        (b"not json", "is not JSON"),
        (b'{"servers": [], "page_info": []}', "expected page_info as an object, got a list"),
        (b'{"servers": [], "page_info": {"next_marker": ["a"]}}', "next_marker is a list"),
        (b'{"servers": [], "page_info": {"next_marker": "a b"}}', "holds spaces"),
        (b'{"servers": [], "page_info": {"next_marker": "a\\u001b"}}', "control or non-ASCII"),
        (b'{"servers": [], "page_info": {"next_marker": "caf\\u00e9"}}', "non-ASCII"),
        (page(marker="x" * (MAX_MARKER_CHARS + 1)), f"longer than {MAX_MARKER_CHARS}"),
        (page(*[{"id": f"s{n}"} for n in range(MAX_PAGE_SERVERS + 1)]), "more than the API's maximum of 1000"),
    ],
)
def test_a_page_of_the_wrong_shape_is_a_protocol_error(body, words):
    with pytest.raises(ProtocolError) as caught:
        parse_server_page(body)
    assert str(caught.value).startswith("ListServers: ")
    assert words in str(caught.value)


def test_a_full_page_of_a_thousand_servers_is_read():
    body = page(*[{"id": f"2102313YJK10N{n:07d}", "name": f"node-{n}"} for n in range(MAX_PAGE_SERVERS)])
    assert len(parse_server_page(body).servers) == MAX_PAGE_SERVERS


def sdk_shaped(n: int, tags: int) -> dict[str, object]:
    """A server as huaweicloudsdkclouddc's PhysicalServer model lists it, every field filled."""
    return {
        "id": f"2102313YJK10N{n:07d}",
        "name": f"bms-prod-db-{n:05d}",
        "project_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "domain_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "manage_state": "in-use",
        "frozen_state": "unfrozen",
        "power_state": "on",
        "operation_state": "normal",
        "health_state": "normal",
        "onboard_time": "2024-07-01T11:32:49Z",
        "location": {"dc": "cn-east-3-dc01", "rack": "R0421", "unit": "U23"},
        "hardware_attributes": {
            "sn": f"2102313YJK10N{n:07d}",
            "manufacturer": "Huawei",
            "model": "TaiShan 200 2280",
            "main_board_manufacturer": "Huawei",
            "main_board_serial_number": f"0231Y{n:010d}",
        },
        "tags": [{"key": f"key-{i}", "value": f"value-of-tag-{i}"} for i in range(tags)],
        "error": None,
    }


def test_a_page_of_page_limit_servers_with_twenty_tags_fits_the_json_bound():
    body = page(*[sdk_shaped(n, 20) for n in range(PAGE_LIMIT)], marker="x", count=5000)
    assert len(body) < MAX_JSON_BYTES
    servers = parse_server_page(body).servers
    assert len(servers) == PAGE_LIMIT and all(s.usable and len(s.tags) == 20 for s in servers)


def test_why_page_limit_is_not_the_apis_maximum():
    """1000 servers with 10 tags each are more than parse_json reads: the whole page would fail."""
    body = page(*[sdk_shaped(n, 10) for n in range(MAX_PAGE_SERVERS)], marker="x", count=5000)
    assert len(body) > MAX_JSON_BYTES
    with pytest.raises(ProtocolError, match="larger than"):
        parse_server_page(body)


@pytest.mark.parametrize(("marker", "expected"), [(None, None), ("", None), ("2102-A", "2102-A"), (42, "42")])
def test_next_marker_is_absent_empty_or_a_safe_value(marker, expected):
    body = {"servers": [], "page_info": {} if marker is None else {"next_marker": marker}}
    assert parse_server_page(json.dumps(body).encode()).next_marker == expected


def test_a_page_without_page_info_is_the_last():
    assert parse_server_page(b'{"servers": [{"id": "a"}]}').next_marker is None


def test_the_operation_names_the_errors():
    with pytest.raises(ProtocolError, match=r"^Discover: "):
        parse_server_page(b"[]", operation="Discover")


# -- entries ----------------------------------------------------------------------------------


def test_one_bad_entry_is_kept_with_its_reason_and_the_others_are_read():
    body = page(
        {"id": "2102-A-001", "name": "db-01"},
        {"id": "../../etc/cron.d/x", "name": "evil"},
        {"name": "no id"},
        "just a string",
        {"id": 12345},
        {"id": "2102-A-002", "name": "\x1b]0;pwned\x07"},
        {"id": "2102-A-003", "name": "n" * (MAX_NAME_CHARS + 1)},
        {"id": "-rf"},
        {"id": "2102-A-004"},
    )
    servers = parse_server_page(body).servers
    assert [s.usable for s in servers] == [True, False, False, False, False, False, False, False, True]
    assert servers[0] == DiscoveredServer("2102-A-001", "db-01")
    assert servers[1].problem == (
        "ListServers: server id '../../etc/cron.d/x' cannot be a file name: it contains a slash"
    )
    assert servers[1].name == "evil"  # what could be read is kept, for the report
    assert servers[2].problem == "ListServers: servers[2] has no id" and servers[2].id == ""
    assert servers[3].problem == "ListServers: servers[3] is a string, not an object"
    assert servers[4].problem == "ListServers: servers[4].id is a number, not a string"
    assert "servers[5].name holds a control or format character (U+001B)" in servers[5].problem
    assert servers[5].id == "2102-A-002"
    assert f"servers[6].name is longer than {MAX_NAME_CHARS} characters" in servers[6].problem
    assert "cannot be a file name: it starts with '-'" in servers[7].problem


def test_an_unusable_id_is_shown_escaped_never_raw():
    servers = parse_server_page(page({"id": "a/\x1b[2J\u202e"})).servers
    assert servers[0].id == "a/\\x1b[2J\\u202e"
    assert "\x1b" not in servers[0].problem and "\u202e" not in servers[0].problem


# -- tags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags",
    [
        [{"key": "rack", "value": "A12"}, {"key": "role", "value": "db"}],
        {"rack": "A12", "role": "db"},
        ["rack=A12", "role=db"],
        [{"key": "rack", "value": "A12"}, "role=db"],
    ],
)
def test_every_tag_shape_reads_the_same(tags):
    [server] = parse_server_page(page({"id": "s", "tags": tags})).servers
    assert server.usable
    assert dict(server.tags) == {"rack": "A12", "role": "db"}


def test_scalar_tag_values_become_text_as_json_writes_them():
    tags = {"slot": 7, "ratio": 1.5, "spare": True, "old": False, "note": None}
    [server] = parse_server_page(page({"id": "s", "tags": tags})).servers
    assert dict(server.tags) == {"slot": "7", "ratio": "1.5", "spare": "true", "old": "false", "note": ""}


def test_a_tag_string_without_equals_is_a_key_with_an_empty_value():
    [server] = parse_server_page(page({"id": "s", "tags": ["spare", "k=v=w"]})).servers
    assert dict(server.tags) == {"spare": "", "k": "v=w"}


def test_the_same_tag_twice_with_one_value_is_fine():
    [server] = parse_server_page(page({"id": "s", "tags": ["rack=A1", {"key": "rack", "value": "A1"}]})).servers
    assert server.usable and dict(server.tags) == {"rack": "A1"}


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({"rack": ["A", "B"]}, "tags['rack']: value is a list, not text"),
        ({"rack": {"row": 1}}, "value is an object"),
        ([{"value": "A1"}], "tags[0] has no key"),
        ([{"key": 5, "value": "A1"}], "tags[0].key is a number"),
        ([{"key": "", "value": "A1"}], "tags[0]: key is empty"),
        (["=A1"], "tags[0]: key is empty"),
        ([7], "tags[0] is a number, not an object with key and value"),
        ([["rack", "A1"]], "tags[0] is a list"),
        ("rack=A1", "tags is a string, not a list or a map"),
        ({"k" * (MAX_TAG_KEY_CHARS + 1): "v"}, f"key is longer than {MAX_TAG_KEY_CHARS}"),
        ({"k": "v" * (MAX_TAG_VALUE_CHARS + 1)}, f"value is longer than {MAX_TAG_VALUE_CHARS}"),
        ({"k": "a\nb"}, "value holds a control or format character (U+000A)"),
        ({f"k{n}": "v" for n in range(MAX_TAGS + 1)}, f"has {MAX_TAGS + 1} tags, more than {MAX_TAGS}"),
        (["rack=A1", "rack=B2"], "tags[1]: key 'rack' is given twice, with different values"),
    ],
)
def test_a_bad_tag_makes_that_server_unusable_with_the_reason(tags, words):
    [bad, good] = parse_server_page(page({"id": "s", "tags": tags}, {"id": "t", "tags": {"a": "b"}})).servers
    assert not bad.usable and bad.id == "s"
    assert bad.problem.startswith("ListServers: servers[0].tags")
    assert words in bad.problem
    assert good.usable


# -- paging -----------------------------------------------------------------------------------


def test_the_cursor_follows_markers_until_the_last_page():
    cursor = PageCursor()
    assert cursor.marker is None
    assert cursor.advance(ServerPage([], "a"))
    assert cursor.marker == "a"
    assert cursor.advance(ServerPage([], "b"))
    assert not cursor.advance(ServerPage([], None))
    assert cursor.pages == 3


@pytest.mark.parametrize("markers", [["a", "a"], ["a", "b", "c", "a"]])
def test_a_listing_that_loops_is_a_protocol_error(markers):
    cursor = PageCursor()
    for marker in markers[:-1]:
        assert cursor.advance(ServerPage([], marker))
    with pytest.raises(ProtocolError, match=f"next_marker '{markers[-1]}' was already followed"):
        cursor.advance(ServerPage([], markers[-1]))


def test_a_listing_that_never_ends_stops_at_max_pages():
    cursor = PageCursor(max_pages=3)
    assert cursor.advance(ServerPage([], "a"))
    assert cursor.advance(ServerPage([], "b"))
    with pytest.raises(ProtocolError, match="past 3 pages"):
        cursor.advance(ServerPage([], "c"))


# -- merging ----------------------------------------------------------------------------------


def found(server_id: str, name: str | None = None, problem: str | None = None, **tags: str) -> DiscoveredServer:
    return DiscoveredServer(server_id, name, tags, problem)


def test_listed_servers_come_first_then_discovered_ones_in_page_order():
    listed = (Server("b"), Server("a"))
    merged = merge_discovered(listed, [found("c"), found("a"), found("d"), found("c", "again")])
    assert [s.id for s in merged] == ["b", "a", "c", "d"]
    assert merged[2] == Server("c")  # the first entry of an id wins


def test_a_listed_servers_name_and_tags_win_and_fill_in_what_it_lacks():
    listed = (Server("a", "db-01", {"rack": "A12"}), Server("b"))
    merged = merge_discovered(listed, [found("a", "renamed", rack="Z9", role="db"), found("b", "web-01", rack="B1")])
    assert merged[0] == Server("a", "db-01", {"rack": "A12", "role": "db"})
    assert merged[1] == Server("b", "web-01", {"rack": "B1"})


def test_a_listed_server_the_listing_adds_nothing_to_is_kept_as_it_is():
    listed = (Server("a", "db-01", {"rack": "A12"}),)
    assert merge_discovered(listed, [found("a", "other", rack="Z")])[0] is listed[0]


def test_unusable_entries_never_join_and_are_reported_once_unless_listed():
    bad = found("x/y", problem="ListServers: server id 'x/y' cannot be a file name: it contains a slash")
    bad_tags = found("a", problem="ListServers: servers[1].tags[0] has no key")
    no_id = found("", problem="ListServers: servers[2] has no id")
    discovered = [bad, bad_tags, no_id, bad, found("c")]
    listed = (Server("a"),)
    assert [s.id for s in merge_discovered(listed, discovered)] == ["a", "c"]
    assert unusable(listed, discovered) == [bad, no_id]


ID = st.sampled_from("abcdef")


@PROPERTY
@given(
    st.lists(ID, unique=True, max_size=4).map(lambda ids: tuple(Server(i) for i in ids)),
    st.lists(st.builds(found, ID, st.none() | st.just("n"), st.none() | st.just("bad")), max_size=8),
)
def test_merging_keeps_each_id_once_listed_first(listed, discovered):
    merged = merge_discovered(listed, discovered)
    ids = [s.id for s in merged]
    extra = []
    for server in discovered:
        if server.usable and server.id not in extra and server.id not in [s.id for s in listed]:
            extra.append(server.id)
    assert ids == [s.id for s in listed] + extra


# -- discover: filters ------------------------------------------------------------------------


def test_discover_true_takes_every_server():
    assert discover_filter(True)(found("a"))


def test_discover_filter_matches_name_and_every_tag_by_glob():
    wanted = discover_filter({"name": "db-*", "tags": {"rack": "A1*", "role": "db"}})
    assert wanted(found("a", "db-01", rack="A12", role="db"))
    assert not wanted(found("a", "web-01", rack="A12", role="db"))
    assert not wanted(found("a", "db-01", rack="B12", role="db"))
    assert not wanted(found("a", "db-01", rack="A12"))  # no role tag at all
    assert not wanted(found("a", None, rack="A12", role="db"))  # no name
    assert discover_filter({"tags": {"rack": "*"}})(found("a", None, rack=""))
    assert discover_filter({})(found("a"))


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (False, "discover: expected true or a mapping, got a boolean"),
        ("db-*", "got a string"),
        ({"nmae": "x"}, "discover.nmae: unknown key"),
        ({"name": 5}, "discover.name: expected a glob (a string), got a number"),
        ({"name": "db-[0"}, "discover.name: the '[' at character 4 is never closed"),
        ({"tags": ["rack"]}, "discover.tags: expected a mapping, got a list"),
        ({"tags": {"rack": None}}, "discover.tags.rack: expected a glob"),
    ],
)
def test_a_wrong_discover_spec_is_a_usage_error(spec, words):
    with pytest.raises(UsageError) as caught:
        discover_filter(spec)
    assert words in str(caught.value)
    assert caught.value.hint


# -- over HTTP, against the simulator ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_simulators_fleet_is_discovered_page_by_page_and_selectable():
    async with Simulator(SimConfig(servers=2345)) as sim:
        headers = {"X-Auth-Token": sim.token, "Accept-Encoding": "identity"}
        url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        discovered: list[DiscoveredServer] = []
        sizes = []
        cursor = PageCursor()
        async with aiohttp.ClientSession(headers=headers, auto_decompress=False) as session:
            while True:
                params = {"limit": str(PAGE_LIMIT), **({"marker": cursor.marker} if cursor.marker else {})}
                async with session.get(url, params=params) as response:
                    assert response.status == 200
                    body = await response.read()
                sizes.append(len(body))
                result = parse_server_page(body)
                discovered += result.servers
                if not cursor.advance(result):
                    break
    assert cursor.pages == 5 and max(sizes) < MAX_JSON_BYTES
    assert [s.id for s in discovered] == sim.server_ids
    assert all(s.usable for s in discovered)
    assert discovered[0].tags["rack"] == "R000" and "role" in discovered[0].tags
    servers = merge_discovered((), discovered)
    targets = [(sim, server) for server in servers]  # the simulator has a project_id, as a Project does
    chosen = parse_selection(["tag:rack=R00[01]", "!name:node-0000"]).apply(targets)
    assert [server.name for _, server in chosen] == [f"node-{n:04d}" for n in range(1, 80)]


@pytest.mark.anyio
async def test_a_shard_keeps_only_its_discovered_servers_page_by_page():
    from collector.auth import StaticToken
    from collector.config.inventory import DiscoverSpec, Inventory, Project
    from collector.config.settings import Settings
    from collector.config.shards import Shard
    from collector.net.session import open_session
    from collector.run.prepare import prepare

    def ids(inventory: Inventory) -> list[str]:
        return [server.id for _, server in inventory.targets()]

    async with Simulator(SimConfig(servers=1234)) as sim:
        project = Project(sim.project_id, sim.url, StaticToken(sim.token, "test"), (), discover=DiscoverSpec())
        inventory = Inventory(Path("fleet.yaml").absolute(), (project,))
        async with open_session(connect_timeout=5, read_timeout=5) as session:
            whole, _, failed = await prepare(inventory, Settings(), session)
            shards = [(await prepare(inventory, Settings(), session, shard=Shard(k, 3)))[0] for k in range(3)]
    assert not failed and whole.server_count == 1234
    for index, kept in enumerate(shards):
        assert [s.id for s in kept.projects[0].servers] == [
            s.id for s in Shard(index, 3).select(whole).projects[0].servers
        ]
    assert sum(kept.server_count for kept in shards) == 1234
