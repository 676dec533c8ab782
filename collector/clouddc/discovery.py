"""Discovery's parsing half: what a ListServers page says, checked as hostile input.

Discovery asks CloudDC which servers a project has, instead of (or as well as) listing them in
the inventory: ``GET /v1/{project_id}/physicalservers?limit=500&marker=M`` (`PAGE_LIMIT`), following
``page_info.next_marker`` until it is absent or empty. The request lives with the API client;
this module turns each page into typed, bounded values, and decides how discovered servers
join the listed ones. It sends nothing.

What a page may do to us, and what happens:

- its shape is wrong (not an object, ``servers`` not a list, more than `MAX_PAGE_SERVERS`
  entries, a ``next_marker`` that is not a safe query value): `ProtocolError`, the listing of
  that project stops;
- one entry is wrong (no id, an id that cannot be a file name, a name or tag out of bounds):
  that entry comes back with its ``problem``, so the run can fail that one server with the
  reason and write nothing for it, while every other server is collected;
- its markers loop: `PageCursor` refuses a marker it has already followed.

Tags come in three shapes, all read into the same ``Mapping[str, str]`` as the inventory's
``tags``: CloudDC's list of ``{"key": ..., "value": ...}`` objects (the SDK's ``Tag``), the
list of ``"key=value"`` strings other Huawei Cloud listings use (ECS; also our simulator), or a
plain map. Numbers and booleans become text as JSON writes them, null the empty string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from collector.clouddc.replies import parse_json
from collector.config.inventory import Server
from collector.config.names import check_file_name
from collector.config.select import GLOB_HINT, Glob, glob_problem
from collector.errors import ProtocolError, UsageError
from collector.text import clean_text, kind_of, quoted, unsafe_char

__all__ = [
    "PAGE_LIMIT",
    "DiscoveredServer",
    "PageCursor",
    "ServerPage",
    "discover_filter",
    "merge_discovered",
    "parse_server_page",
    "unusable",
]

MAX_PAGE_SERVERS = 1000  # the API's own maximum for `limit`; a longer page is refused
# What to ask for. A page must fit `replies.MAX_JSON_BYTES` (1 MiB): a server as the SDK's
# PhysicalServer describes it is ~620 bytes plus ~45 per tag, so 1000 servers with 10 tags
# each would not fit, while 500 with 20 tags do (tests/test_discovery.py measures both).
PAGE_LIMIT = 500
MAX_NAME_CHARS = 255
MAX_TAGS = 64  # CloudDC allows 20 per resource; the rest is margin, not a promise
MAX_TAG_KEY_CHARS = 128  # CloudDC's documented limits (huaweicloudsdkclouddc Tag)
MAX_TAG_VALUE_CHARS = 255
MAX_MARKER_CHARS = 256  # a marker is a server id; ids are at most 128 characters
MAX_PAGES = 1000  # a million servers at 1000 a page; beyond that the listing is not ending

_NO_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DiscoveredServer:
    """One entry of a ListServers page.

    When `problem` is None, `id` is the server's id exactly as listed and safe as a file name
    (`collector.config.names.check_file_name`), and `name` and `tags` are within bounds. When
    `problem` is set, the entry cannot be collected: `problem` says why, in one line that
    names the operation, and `id` is only a printable rendering of what was listed ("" if
    nothing usable was), for messages and the report: never a file name. `name` and `tags`
    then hold what could be read.
    """

    id: str
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS, hash=False)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None

    def to_server(self) -> Server:
        """The inventory's `Server` for this entry; only for a usable one."""
        if self.problem is not None:
            raise ValueError(f"server {self.id!r} cannot be collected: {self.problem}")
        return Server(self.id, self.name, self.tags)


@dataclass(frozen=True, slots=True)
class ServerPage:
    """One page of a listing: its entries in the order listed, and where the next page starts.

    `next_marker` is None on the last page; otherwise it is printable ASCII without spaces, at
    most `MAX_MARKER_CHARS` long, ready to be sent as the ``marker`` query value.
    """

    servers: list[DiscoveredServer]
    next_marker: str | None


def parse_server_page(body: bytes, *, operation: str = "ListServers") -> ServerPage:
    """The page in a ListServers answer's `body`, or `ProtocolError` if its shape is wrong.

    Decoded with `collector.clouddc.replies.parse_json` (size, depth and numbers bounded there). A
    malformed entry does not fail the page: it is returned with its `problem`. Never raises
    anything but `ProtocolError`.
    """
    value = parse_json(body, operation=operation)
    if not isinstance(value, dict):
        raise ProtocolError(f"{operation}: expected a JSON object, got {kind_of(value)}")
    entries = value.get("servers")
    if not isinstance(entries, list):
        got = "no servers" if entries is None else f"servers as {kind_of(entries)}"
        raise ProtocolError(f"{operation}: expected a list of servers, got {got}")
    if len(entries) > MAX_PAGE_SERVERS:
        raise ProtocolError(
            f"{operation}: a page of {len(entries)} servers, more than the API's maximum of {MAX_PAGE_SERVERS}"
        )
    servers = [_entry(entry, index, operation) for index, entry in enumerate(entries)]
    return ServerPage(servers, _next_marker(value.get("page_info"), operation))


def _next_marker(page_info: object, operation: str) -> str | None:
    if page_info is None:
        return None
    if not isinstance(page_info, dict):
        raise ProtocolError(f"{operation}: expected page_info as an object, got {kind_of(page_info)}")
    marker = page_info.get("next_marker")
    if marker is None or marker == "":
        return None
    if isinstance(marker, int) and not isinstance(marker, bool):
        marker = str(marker)  # parse_json bounds its digits
    if not isinstance(marker, str):
        raise ProtocolError(f"{operation}: next_marker is {kind_of(marker)}, not a string")
    if len(marker) > MAX_MARKER_CHARS:
        raise ProtocolError(f"{operation}: next_marker is longer than {MAX_MARKER_CHARS} characters")
    if unsafe_char(marker, spaces=False, unprintable=False, non_ascii=False) is not None:
        # Only printable ASCII: the marker goes back into a query string, and into the
        # canonical request an AK/SK signature covers; nothing there should need judgement.
        raise ProtocolError(
            f"{operation}: next_marker {quoted(marker, 60)} holds spaces, control or non-ASCII characters"
        )
    return marker


def _entry(entry: object, index: int, operation: str) -> DiscoveredServer:
    """One entry, checked; the first problem found is the one reported."""
    where = f"{operation}: servers[{index}]"
    if not isinstance(entry, dict):
        return DiscoveredServer("", problem=f"{where} is {kind_of(entry)}, not an object")
    raw_id = entry.get("id")
    problems = []
    if isinstance(raw_id, str):
        server_id = raw_id
        reason = check_file_name(raw_id)
        if reason:
            problems.append(f"{operation}: server id {quoted(raw_id, 60)} cannot be a file name: {reason}")
    else:
        server_id = ""
        problems.append(f"{where} has no id" if raw_id is None else f"{where}.id is {kind_of(raw_id)}, not a string")
    name, problem = _name(entry.get("name"))
    if problem:
        problems.append(f"{where}.name {problem}")
    tags, problem = _tags(entry.get("tags"))
    if problem:
        problems.append(f"{where}.tags{problem}")
    if problems:
        return DiscoveredServer(clean_text(server_id, 140), name, tags, problems[0])
    return DiscoveredServer(server_id, name, tags)


def _name(value: object) -> tuple[str | None, str | None]:
    """(name, None), or (None, what is wrong with it)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"is {kind_of(value)}, not a string"
    problem = _text_problem(value, MAX_NAME_CHARS)
    return (None, problem) if problem else (value, None)


def _tags(value: object) -> tuple[Mapping[str, str], str | None]:
    """(tags, None), or (the tags read before the problem, what is wrong: "[2] has no key")."""
    if value is None:
        return _NO_TAGS, None
    if not isinstance(value, (list, dict)):
        return _NO_TAGS, f" is {kind_of(value)}, not a list or a map"
    if len(value) > MAX_TAGS:
        return _NO_TAGS, f" has {len(value)} tags, more than {MAX_TAGS}"
    tags: dict[str, str] = {}
    try:
        if isinstance(value, dict):
            for key, raw in value.items():
                _add_tag(tags, f"[{quoted(key, 20)}]", key, raw)
        else:
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _add_tag(tags, f"[{index}]", item.get("key"), item.get("value"))
                elif isinstance(item, str):
                    key, _, text = item.partition("=")
                    _add_tag(tags, f"[{index}]", key, text)
                else:
                    raise _BadTag(f"[{index}] is {kind_of(item)}, not an object with key and value")
    except _BadTag as exc:
        return MappingProxyType(tags), str(exc)
    return MappingProxyType(tags), None


class _BadTag(Exception):
    """What is wrong with one tag; ends the reading of that server's tags."""


def _add_tag(tags: dict[str, str], where: str, key: object, raw: object) -> None:
    if not isinstance(key, str):
        raise _BadTag(f"{where} has no key" if key is None else f"{where}.key is {kind_of(key)}, not a string")
    problem = "is empty" if not key else _text_problem(key, MAX_TAG_KEY_CHARS)
    if problem:
        raise _BadTag(f"{where}: key {problem}")
    text = _tag_value(raw)
    if text is None:
        raise _BadTag(f"{where}: value is {kind_of(raw)}, not text")
    problem = _text_problem(text, MAX_TAG_VALUE_CHARS)
    if problem:
        raise _BadTag(f"{where}: value {problem}")
    if tags.setdefault(key, text) != text:
        raise _BadTag(f"{where}: key {quoted(key, 40)} is given twice, with different values")


def _tag_value(value: object) -> str | None:
    """A tag value as text: strings as they are, numbers and booleans as JSON writes them,
    null as "" (the tag is there, without a value); None for a list or an object."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # parse_json bounds numbers to 40 characters and refuses NaN and inf
    if isinstance(value, str):
        return value
    return None


def _text_problem(text: str, limit: int) -> str | None:
    """Why a name or tag from the API is unfit for our reports and terminals, or None."""
    if len(text) > limit:
        return f"is longer than {limit} characters"
    found = unsafe_char(text)  # what a person may name a server with stays (see unsafe_char)
    if found is not None:
        return f"holds a control or format character (U+{ord(found[0]):04X})"
    return None


class PageCursor:
    """Follows ``next_marker`` from page to page, and stops a listing that never ends.

        cursor = PageCursor()
        while True:
            page = parse_server_page(await list_servers(limit=PAGE_LIMIT, marker=cursor.marker))
            ...
            if not cursor.advance(page):
                break

    `advance` raises `ProtocolError` when a page hands back a marker already followed (a
    server that loops, whether back to the previous page or further) or when the listing
    runs past `max_pages`.
    """

    def __init__(self, *, max_pages: int = MAX_PAGES, operation: str = "ListServers") -> None:
        self.marker: str | None = None  # what the next request sends; None for the first page
        self.pages = 0
        self.max_pages = max_pages
        self.operation = operation
        self._followed: set[str] = set()

    def advance(self, page: ServerPage) -> bool:
        """Take `page` as read; True if another page is to be asked for, at `self.marker`."""
        self.pages += 1
        marker = page.next_marker
        if marker is None:
            return False
        if marker in self._followed:
            raise ProtocolError(
                f"{self.operation}: next_marker {quoted(marker, 60)} was already followed"
                f" (page {self.pages}): the listing loops"
            )
        if self.pages >= self.max_pages:
            raise ProtocolError(f"{self.operation}: the listing goes on past {self.max_pages} pages")
        self._followed.add(marker)
        self.marker = marker
        return True


def merge_discovered(listed: tuple[Server, ...], discovered: Iterable[DiscoveredServer]) -> tuple[Server, ...]:
    """The servers to sweep in one project: the listed ones, then the discovered ones.

    Listed servers keep their place and their own name and tags; what the listing knows and
    the inventory does not (a name, a tag key it left out) fills in. Discovered servers that
    are not listed follow, in the order listed by the API, each once (the first entry of an
    id wins). Unusable entries are left out here: see `unusable`.
    """
    found: dict[str, DiscoveredServer] = {}
    for server in discovered:
        if server.problem is None:
            found.setdefault(server.id, server)
    merged: list[Server] = []
    for entry in listed:
        extra = found.pop(entry.id, None)
        merged.append(entry if extra is None else _filled(entry, extra))
    merged.extend(server.to_server() for server in found.values())
    return tuple(merged)


def _filled(server: Server, extra: DiscoveredServer) -> Server:
    name = server.name if server.name is not None else extra.name
    if name == server.name and extra.tags.keys() <= server.tags.keys():
        return server
    return Server(server.id, name, MappingProxyType({**extra.tags, **server.tags}))


def unusable(listed: tuple[Server, ...], discovered: Iterable[DiscoveredServer]) -> list[DiscoveredServer]:
    """The unusable entries the run should report as failed: each `problem` once, leaving out
    those whose id the inventory lists (that server is collected as listed)."""
    listed_ids = {server.id for server in listed}
    seen: set[tuple[str, str]] = set()
    result = []
    for server in discovered:
        if server.problem is None or (server.id and server.id in listed_ids):
            continue
        key = (server.id, server.problem)
        if key not in seen:
            seen.add(key)
            result.append(server)
    return result


_FILTER_KEYS = ("name", "tags")


def discover_filter(spec: object) -> Callable[[DiscoveredServer], bool]:
    """The inventory's ``discover:`` as a predicate on discovered servers, or `UsageError`.

    ``discover: true`` takes every server listed. ``discover: {name: "db-*", tags: {rack:
    "A1*"}}`` takes those whose name and every given tag match the globs (`collector.config.select`'s
    globs: case-sensitive, anchored); a server without a name or without one of the tags does
    not match. The error names the key under ``discover``; the inventory adds file and line.
    """
    if spec is True:
        return _everything
    if not isinstance(spec, Mapping):
        raise UsageError(
            f"discover: expected true or a mapping, got {kind_of(spec)}",
            hint='write discover: true, or discover: {name: "db-*", tags: {rack: "A1*"}}',
        )
    for key in spec:
        if key not in _FILTER_KEYS:
            raise UsageError(
                f"discover.{clean_text(key, 40)}: unknown key",
                hint="discover takes name (a glob) and tags (a mapping of tag names to globs)",
            )
    name = None if spec.get("name") is None else _filter_glob(spec["name"], "discover.name")
    tags = spec.get("tags")
    if tags is None:
        tags = {}
    if not isinstance(tags, Mapping):
        raise UsageError(
            f"discover.tags: expected a mapping, got {kind_of(tags)}",
            hint='write tags: {rack: "A1*"}',
        )
    tag_globs = {str(key): _filter_glob(value, f"discover.tags.{clean_text(key, 40)}") for key, value in tags.items()}

    def wanted(server: DiscoveredServer) -> bool:
        if name is not None and not name(server.name):
            return False
        return all(glob(server.tags.get(key)) for key, glob in tag_globs.items())

    return wanted


def _everything(server: DiscoveredServer) -> bool:
    return True


def _filter_glob(value: object, key: str) -> Glob:
    if not isinstance(value, str):
        raise UsageError(f"{key}: expected a glob (a string), got {kind_of(value)}", hint='quote it, like "db-*"')
    problem = glob_problem(value)
    if problem:
        raise UsageError(f"{key}: {problem}", hint=GLOB_HINT)
    return Glob(value)
