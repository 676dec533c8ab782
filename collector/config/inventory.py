"""Load and check the inventory: which servers, in which projects, reached how.

The inventory is a YAML file; configs/example-inventory.yaml shows every key. The CLI loads it
once, before the event loop starts, into the frozen dataclasses below, and the sweep consumes
them. Everything is checked first, and every problem is reported at once: each names the
file, the line and the key path (``projects[1].servers[3].id``), with a hint, and nothing is
sent. A problem stops the check of its own part of the file only (one server, one setting, one
project's endpoint), so a bad server id does not hide the next one; a mapping's keys are
checked before its values, since a misspelt key makes its values meaningless. The credentials
and CA bundles the inventory names are looked at once the file itself is right.

Three modules do it, one job each: `collector.config.yamlnodes` reads the file's YAML nodes as
typed values (and why nodes rather than ``yaml.safe_load``); this one walks the inventory's
schema over them into the frozen dataclasses below; `collector.config.resolve` then makes the
credentials and TLS contexts the checked file names, the only part with side effects.

How a project is reached comes from its own keys, else from the top level's:

- ``endpoint``: the project's own ``endpoint``, else the one its own ``region`` gives
  (``https://clouddc.<region>.myhuaweicloud.com``), else the top level's ``endpoint``, else the
  one the top level's ``region`` gives. The nearer level wins; within a level, an explicit
  endpoint wins over a region (a region still names IAM's endpoint then).
- ``region``: the project's own, else the one in its own endpoint's host name, else the top
  level's, else the one in the top level's endpoint. It names IAM's endpoint for ``auth: {iam:
  ...}`` without one; None when nothing says.
- ``auth``, ``tls``, ``discover``: the project's own replaces the top level's wholesale.
  No ``auth`` anywhere leaves `Project.credentials` None: the run looks them up as the SDK does.

The ``collector:`` section's keys, kinds and checks are the settings' own
(`collector.config.settings`); the kinds of credentials and their options are
`collector.auth.chain`'s.
"""

from __future__ import annotations

import functools
import math
import os
import re
import ssl as ssl_
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml

from collector.auth import Credentials, region_of
from collector.auth.chain import OPTIONS as AUTH_OPTIONS
from collector.auth.chain import PATH_OPTIONS, SCALAR_KINDS
from collector.config.names import check_file_name
from collector.config.resolve import AuthSpec, Resolver, TlsSpec
from collector.config.settings import (
    BY_KEY,
    HINTS,
    BadValue,
    Deadline,
    FailureBudget,
    Kind,
    check_value,
    parse_budget,
    parse_deadline,
    size_in_bytes,
)
from collector.config.urls import url_problem
from collector.config.yamlnodes import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    STR,
    TIMESTAMP,
    Entry,
    NodeReader,
    Stopped,
    broken,
    compose,
    given,
    got,
    join,
    line_of,
)
from collector.errors import InventoryError, InventoryErrors
from collector.text import quoted

__all__ = [
    "PROJECT_ID_HINT",
    "RUN_TIME_LOOKUP",
    "DiscoverSpec",
    "Inventory",
    "Project",
    "Server",
    "endpoint_of",
    "load_inventory",
    "project_id_problem",
    "region_problem",
]

_NO_TAGS: Mapping[str, str] = MappingProxyType({})

# What `collector validate` prints for a project without auth (`Project.describe_credentials`).
RUN_TIME_LOOKUP = "looked up at run time: SDK environment, credentials file, pod identity, ECS metadata"


@dataclass(frozen=True, slots=True)
class Server:
    """One physical server. Its id also names its files, so it is checked to be safe for that."""

    id: str
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS, hash=False)


@dataclass(frozen=True, slots=True)
class DiscoverSpec:
    """Which servers of a project ListServers adds to the listed ones.

    ``discover: true`` is ``DiscoverSpec()``: every server. Otherwise `name` is a glob the
    server's name must match, and each of `tags` a glob its tag of that name must match (a
    server without that name or tag does not). Globs are fnmatch's, as written.
    """

    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS, hash=False)


@dataclass(frozen=True, slots=True)
class Project:
    """One CloudDC project: where its API is, how to authenticate, which servers to collect.

    `credentials` None means the inventory gave no ``auth`` for it: look them up once at run
    time, before the first request, in the SDK's order (`collector.auth.default_chain`).
    `ssl` goes to every request (``ssl=`` of aiohttp): True verifies against the system's CAs,
    an `ssl.SSLContext` against the project's ``tls.ca_bundle`` only, False not at all; then
    `tls_verify` is False, and the run should say so. `servers` are the listed servers only;
    `discover`, when set, adds what ListServers finds at run time.
    """

    project_id: str
    endpoint: str  # absolute http(s) URL, no trailing slash
    credentials: Credentials | None = field(hash=False)  # may be shared with other projects
    servers: tuple[Server, ...]
    region: str | None = None  # "cn-east-3": given, or read from the endpoint's host name
    ssl: ssl_.SSLContext | bool = field(default=True, hash=False, compare=False)
    tls_verify: bool = True  # False for `tls: {verify: false}`
    discover: DiscoverSpec | None = None

    def describe_credentials(self) -> str:
        """Kind and source of the credentials, for `collector validate`; never a secret."""
        return RUN_TIME_LOOKUP if self.credentials is None else self.credentials.describe()


@dataclass(frozen=True, slots=True)
class Inventory:
    """The whole inventory, checked. `settings` is its `collector:` section, defaults for flags."""

    path: Path | None  # None: made from the command line's flags (`collector.config.flags`)
    projects: tuple[Project, ...]
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def server_count(self) -> int:
        """The servers listed in the file; those `discover` will find are not known yet."""
        return sum(len(project.servers) for project in self.projects)

    def targets(self) -> Iterator[tuple[Project, Server]]:
        """Every listed (project, server) pair, in inventory order."""
        for project in self.projects:
            for server in project.servers:
                yield project, server


def load_inventory(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    keep: Callable[[str, str], bool] | None = None,
) -> Inventory:
    """Read and check the inventory at `path`; raise `InventoryError` for a problem, or
    `InventoryErrors` holding every problem when there are several.

    With `keep` (a shard's `owns`), only the listed servers `keep(project_id, server_id)`
    takes are kept, as they are read: every entry is still checked, so every shard accepts
    or refuses the same file, but a shard holds only its own servers.

    Environment variables the ``auth`` entries name are looked up in `environ` (``os.environ``
    by default); relative paths (``token_file``, ``password_file``, ``ca_bundle``) start from
    the inventory's folder, and ``~`` expands. Credentials and CA bundles are read only for the
    settings some project uses, and after the rest of the file has been checked.
    """
    path = Path(path)
    loader = _Loader(path, os.environ if environ is None else environ, keep)
    if keep is None or _CParser is None:
        root = compose(path)
    else:
        root = compose(path, fast=functools.partial(_KeepingComposer, loader=loader))
        if not loader.streamed:  # libyaml gave up and the pure-Python parser composed it all
            loader.problems.clear()
            loader.seen.clear()
    try:
        return loader.inventory(root)
    except InventoryError as exc:
        loader.problems.append(exc)
    except Stopped:
        pass
    finally:
        # Every server id read, for telling a duplicate: 25 MB at 100,000 servers, held in the
        # loader's reference cycles until the collector's next full pass (a shard's RSS, issue 14).
        loader.seen.clear()
    # A default shared by several projects may be resolved more than once (an IAM entry for
    # each region): the same problem is reported once.
    unique = {str(problem): problem for problem in loader.problems}.values()
    problems = sorted(unique, key=lambda problem: problem.line or 0)
    raise problems[0] if len(problems) == 1 else InventoryErrors(problems)


# Keys allowed in each kind of mapping, in the order the hints list them.
_TOP_KEYS = ("endpoint", "region", "auth", "tls", "project_id", "servers", "discover", "projects", "collector")
_PROJECT_KEYS = ("project_id", "endpoint", "region", "auth", "tls", "servers", "discover")
_SERVER_KEYS = ("id", "name", "tags")
# The kinds of credentials and their options are `collector.auth.chain`'s, declared once there.
_AUTH_KINDS = tuple(AUTH_OPTIONS)
_TLS_KEYS = ("ca_bundle", "verify")
_DISCOVER_KEYS = ("name", "tags")

# The `collector:` section's keys and kinds are the settings' own: see collector.config.settings.

_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]+")
_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d+")
_EXAMPLE_ENDPOINT = "https://clouddc.cn-east-3.myhuaweicloud.com"
_AUTH_EXAMPLE = "auth: {token_env: CLOUDDC_TOKEN} or auth: {token_file: <path>}"
_AUTH_KINDS_HINT = (
    f"give one of {', '.join(_AUTH_KINDS[:-1])} or {_AUTH_KINDS[-1]}, as in"
    " configs/example-inventory.yaml; or remove auth to look credentials up as the SDK does"
)
_DISCOVER_HINT = 'write discover: true, or discover: {name: "db-*", tags: {rack: "A1*"}}'


class _KeptServers(yaml.SequenceNode):
    """A servers list read as it was composed (`_KeepingComposer`): every entry checked, only
    the kept ones here (`servers`, with `Broken` for an entry with problems), `count` listed."""

    servers: list[Any]
    count: int


_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)  # libyaml's, when PyYAML has it


class _KeepingComposer(yaml.composer.Composer, _CParser or object, yaml.resolver.Resolver):  # type: ignore[misc]  # a base known at run time
    """libyaml's events composed into nodes, except a project's servers list: each entry is
    checked by the loader as soon as it is composed and dropped unless `_Loader.keep` takes
    it, so a shard of a 100,000-server inventory never holds the other shards' nodes.

    Only where the list's project is known already (its project_id comes before servers, as
    in every inventory we write) and the list has no anchor; anywhere else, nodes as usual.
    """

    def __init__(self, stream: str, loader: _Loader) -> None:
        _CParser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.loader = loader
        self.path: list[tuple[Any, Any]] = []  # (parent, index) of each node being composed

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        self.loader.streamed = True
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.path.append((parent, index))
        try:
            return super().compose_node(parent, index)
        finally:
            self.path.pop()

    def compose_sequence_node(self, anchor: Any) -> Any:
        where = self.servers_list() if anchor is None else None
        if where is None:
            return super().compose_sequence_node(anchor)
        key, project_id = where
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start.implicit)  # type: ignore[no-untyped-call]  # PyYAML's stubs
        node = _KeptServers(tag, [], start.start_mark, None, flow_style=start.flow_style)
        node.servers, node.count = [], 0
        loader = self.loader
        while not self.check_event(yaml.SequenceEndEvent):
            item = self.compose_node(node, node.count)
            server = loader.part(loader.listed_server, item, f"{key}[{node.count}]", project_id)
            if broken(server) or loader.keep is None or loader.keep(project_id, server.id):
                node.servers.append(server)
            node.count += 1
        node.end_mark = self.get_event().end_mark
        return node

    def servers_list(self) -> tuple[str, str] | None:
        """The key path and project id of the servers list about to be composed, if it is one
        to keep from: the top level's, or that of an entry of the top level's projects."""
        path = self.path
        if len(path) == 2:
            prefix = ""
        elif len(path) == 4 and isinstance(path[2][1], int) and _is_key(path[1][1], "projects"):
            prefix = f"projects[{path[2][1]}]"
        else:
            return None
        parent, index = path[-1]
        if not _is_key(index, "servers") or not isinstance(parent, yaml.MappingNode):
            return None
        for key_node, value_node in parent.value:
            if _is_key(key_node, "project_id") and isinstance(value_node, yaml.ScalarNode):
                try:
                    return join(prefix, "servers"), self.loader.project_id(value_node, join(prefix, "project_id"))
                except InventoryError:
                    return None
        return None


def _is_key(node: Any, name: str) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == STR and node.value == name


def _endpoint_of(region: str) -> str:
    return f"https://clouddc.{region}.myhuaweicloud.com"


class _Level(NamedTuple):
    """What one level, the top or a project, says about reaching its API: None where it says
    nothing, `BROKEN` where what it says is wrong. `discover` is `_UNSET` when not given, as
    ``discover: false`` (None) replaces the top level's."""

    endpoint: Any = None
    region: Any = None
    auth: Any = None
    tls: Any = None
    discover: Any = None


@dataclass(frozen=True, slots=True)
class _ProjectDraft:
    project_id: str
    endpoint: str
    region: str | None
    auth: AuthSpec | None
    tls: TlsSpec | None
    discover: DiscoverSpec | None
    servers: tuple[Server, ...]


_UNSET: Any = object()


def _first(*candidates: Any) -> Any:
    """The first candidate that says something; `Stopped` if that one is broken."""
    for candidate in candidates:
        if broken(candidate):
            raise Stopped
        if candidate is not None:
            return candidate
    return None


def _derived(region: Any, derive: Callable[[str], str | None]) -> Any:
    return region if region is None or broken(region) else derive(region)


class _Loader(NodeReader):
    """Walks the inventory's schema over the node tree, checking as it goes; then has the
    `Resolver` make the credentials and TLS contexts the checked file names."""

    def __init__(self, path: Path, environ: Mapping[str, str], keep: Callable[[str, str], bool] | None = None) -> None:
        super().__init__(path)
        self.keep = keep
        self.streamed = False  # the file was composed by `_KeepingComposer`, entries checked
        self.folder = path.parent.absolute()
        # project -> id -> the line it was first listed on (only the line: at 100,000 servers
        # each byte here is 100 KB of a shard's peak while it reads, issue 14)
        self.seen: dict[str, dict[str, int]] = {}
        self.resolver = Resolver(self, environ, self.folder)

    # -- the inventory's structure --------------------------------------------------------------

    def inventory(self, root: yaml.Node) -> Inventory:
        hint = "the inventory is a mapping, as in configs/example-inventory.yaml"
        top = self.mapping(root, "", _TOP_KEYS, hint=hint)
        defaults = self.level(top, "")
        drafts = self.part(self.drafts, top, defaults)
        collector = given(top, "collector")
        settings = {} if collector is None else self.part(self.settings, collector)
        self.stop_if_any()
        # Credentials and CA bundles last: a broken file is reported before a missing variable.
        for draft in drafts:
            self.resolver.check(draft.auth, draft.region, draft.tls)
        self.stop_if_any()
        projects = tuple(self.finished(draft) for draft in drafts)
        return Inventory(self.path, projects, MappingProxyType(settings))

    def finished(self, draft: _ProjectDraft) -> Project:
        credentials = None if draft.auth is None else self.resolver.credentials(draft.auth, draft.region)
        ssl, verify = self.resolver.connection(draft.tls)
        return Project(
            draft.project_id,
            draft.endpoint,
            credentials,
            draft.servers,
            region=draft.region,
            ssl=ssl,
            tls_verify=verify,
            discover=draft.discover,
        )

    def level(self, fields: Mapping[str, Entry], key: str) -> _Level:
        """The endpoint, region, auth, tls and discover one level gives, each checked apart."""
        endpoint = self.optional(fields, key, "endpoint", self.endpoint)
        region = self.optional(fields, key, "region", self.region, null_is_absent=True)
        if isinstance(endpoint, str) and isinstance(region, str):
            region = self.part(self.same_region, fields, key, endpoint, region)
        auth = self.optional(fields, key, "auth", self.auth)
        tls = self.optional(fields, key, "tls", self.tls, null_is_absent=True)
        discover = self.optional(fields, key, "discover", self.discover, null_is_absent=True, unset=_UNSET)
        return _Level(endpoint, region, auth, tls, discover)

    def optional(
        self,
        fields: Mapping[str, Entry],
        key: str,
        name: str,
        check: Callable[[yaml.Node, str], Any],
        *,
        null_is_absent: bool = False,
        unset: Any = None,
    ) -> Any:
        node = given(fields, name) if null_is_absent else fields[name].value if name in fields else None
        return unset if node is None else self.part(check, node, join(key, name))

    def same_region(self, fields: Mapping[str, Entry], key: str, endpoint: str, region: str) -> str:
        """A region that contradicts the endpoint beside it is a mistake in one of them."""
        named = region_of(endpoint)
        if named is not None and named != region:
            raise self.error(
                fields["region"].value,
                join(key, "region"),
                f"region {region} is not the region of the endpoint beside it ({named})",
                hint="make them agree, or remove one: an endpoint wins over a region",
            )
        return region

    def drafts(self, top: Mapping[str, Entry], defaults: _Level) -> list[_ProjectDraft]:
        """Every project, from `projects:` or from the top level's own project_id and servers."""
        if "projects" in top:
            for name in ("project_id", "servers"):
                if name in top:
                    raise self.error(
                        top[name].key,
                        name,
                        "cannot be used together with projects",
                        hint="move it into an entry under projects, or drop projects",
                    )
            return self.projects(top["projects"].value, defaults)
        if "project_id" in top or "servers" in top:
            # The top level is itself the only project; its own keys are the defaults parsed above.
            own = {name: top[name] for name in ("project_id", "servers") if name in top}
            return [self.project_fields(own, None, "", _Level(discover=_UNSET), defaults)]
        hint = "give project_id and servers (or discover), or a list of projects"
        raise self.error(None, None, "no servers listed", hint=hint)

    def projects(self, node: yaml.Node, defaults: _Level) -> list[_ProjectDraft]:
        hint = "projects is a list of mappings, each with project_id and servers"
        items = self.sequence(node, "projects", hint=hint)
        if not items:
            raise self.error(node, "projects", "the list is empty", hint=hint)
        drafts = [self.part(self.project, item, f"projects[{index}]", defaults) for index, item in enumerate(items)]
        self.stop_if_any()
        return drafts

    def project(self, node: yaml.Node, key: str, defaults: _Level) -> _ProjectDraft:
        hint = "projects is a list of mappings, each with project_id and servers"
        fields = self.mapping(node, key, _PROJECT_KEYS, hint=hint)
        return self.project_fields(fields, node, key, self.level(fields, key), defaults)

    def project_fields(
        self,
        fields: Mapping[str, Entry],
        node: yaml.Node | None,
        key: str,
        own: _Level,
        defaults: _Level,
    ) -> _ProjectDraft:
        """One project from its fields and its own level; `node` is None for the single project
        at the top level, whose level is `defaults`.

        Its id, endpoint, auth and servers are checked apart: a problem in one does not hide
        a problem in another.
        """
        where = "here or at the top level" if node is not None else "at the top level"
        project_id = self.part(self.project_id_field, fields, node, key)
        endpoint = self.part(self.endpoint_field, node, key, own, defaults, where)
        region = self.part(
            _first,
            own.region,
            _derived(own.endpoint, region_of),
            defaults.region,
            _derived(defaults.endpoint, region_of),
        )
        auth = self.part(_first, own.auth if "auth" in fields else defaults.auth)
        tls = self.part(_first, own.tls, defaults.tls)
        discover = defaults.discover if own.discover is _UNSET else own.discover
        discover = None if discover is _UNSET else discover
        # Duplicates are found within a project; a broken id makes a project of its own.
        within = project_id if not broken(project_id) else f"\0{key}"
        servers = self.part(self.servers_field, fields, node, key, within, discover)
        if broken(project_id, endpoint, region, auth, tls, discover, servers):
            raise Stopped
        return _ProjectDraft(project_id, endpoint, region, auth, tls, discover, servers)

    def project_id_field(self, fields: Mapping[str, Entry], node: yaml.Node | None, key: str) -> str:
        hint = "give the project's ID, project_id: <id>"
        id_node = self.required(fields, node, key, "project_id", hint=hint)
        return self.project_id(id_node, join(key, "project_id"))

    def endpoint_field(self, node: yaml.Node | None, key: str, own: _Level, defaults: _Level, where: str) -> str:
        endpoint: str | None = _first(
            own.endpoint, _derived(own.region, endpoint_of), defaults.endpoint, _derived(defaults.region, endpoint_of)
        )
        if endpoint is None:
            raise self.error(
                node,
                join(key, "endpoint"),
                "required but missing",
                hint=f"give the API's base URL, like endpoint: {_EXAMPLE_ENDPOINT}, or its region,"
                f" like region: cn-east-3, {where}",
            )
        return endpoint

    def servers_field(
        self,
        fields: Mapping[str, Entry],
        node: yaml.Node | None,
        key: str,
        project_id: str,
        discover: DiscoverSpec | None,
    ) -> tuple[Server, ...]:
        if broken(discover) and given(fields, "servers") is None:
            raise Stopped  # whether servers may be left out is not known
        if discover is not None and not broken(discover):
            servers_node = given(fields, "servers")
            if servers_node is None:
                return ()
            return self.servers(servers_node, join(key, "servers"), project_id, empty_allowed=True)
        hint = "list the ids of the servers to collect, or set discover: true"
        servers_node = self.required(fields, node, key, "servers", hint=hint)
        return self.servers(servers_node, join(key, "servers"), project_id)

    def servers(self, node: yaml.Node, key: str, project_id: str, *, empty_allowed: bool = False) -> tuple[Server, ...]:
        hint = "servers is a list of server ids, one '- <id>' per line"
        items = self.sequence(node, key, hint=hint)
        if isinstance(node, _KeptServers):  # checked and kept as it was composed
            if not node.count and not empty_allowed:
                hint = "list at least one server, set discover: true, or remove the project"
                raise self.error(node, key, "the list is empty", hint=hint)
            if broken(*node.servers):
                raise Stopped
            return tuple(node.servers)
        if not items and not empty_allowed:
            hint = "list at least one server, set discover: true, or remove the project"
            raise self.error(node, key, "the list is empty", hint=hint)
        servers = [
            self.part(self.listed_server, item, f"{key}[{index}]", project_id) for index, item in enumerate(items)
        ]
        if broken(*servers):
            raise Stopped
        if self.keep is not None and not project_id.startswith("\0"):
            return tuple(server for server in servers if self.keep(project_id, server.id))
        return tuple(servers)

    def listed_server(self, node: yaml.Node, key: str, project_id: str) -> Server:
        """One entry of a servers list, checked, and not listed before in its project."""
        server = self.server(node, key)
        seen = self.seen.setdefault(project_id, {})
        first = seen.get(server.id)
        if first is not None:
            shown = "this project" if project_id.startswith("\0") else f"project {project_id}"
            raise self.error(
                node,
                key,
                f"server {server.id} is listed twice in {shown} (first on line {first})",
                hint="remove one of the two entries",
            )
        seen[server.id] = line_of(node)
        return server

    def server(self, node: yaml.Node, key: str) -> Server:
        if isinstance(node, yaml.ScalarNode):
            return Server(self.server_id(node, key))
        hint = "write a server as '- <id>' or '- {id: <id>, name: <name>, tags: {...}}'"
        fields = self.mapping(node, key, _SERVER_KEYS, hint=hint)
        server_id = self.part(
            lambda: self.server_id(self.required(fields, node, key, "id", hint=hint), join(key, "id"))
        )
        name_node, tags_node = given(fields, "name"), given(fields, "tags")
        name = None if name_node is None else self.part(self.string, name_node, join(key, "name"))
        tags = _NO_TAGS if tags_node is None else self.part(self.tags, tags_node, join(key, "tags"))
        if broken(server_id, name, tags):
            raise Stopped
        return Server(server_id, name, tags)

    def settings(self, node: yaml.Node) -> dict[str, Any]:
        hint = "collector is a mapping of options, like concurrency: 64"
        fields = self.mapping(node, "collector", BY_KEY, hint=hint)
        settings = {name: self.part(self.setting, name, entry.value) for name, entry in fields.items()}
        if broken(*settings.values()):
            raise Stopped
        return settings

    def setting(self, name: str, node: yaml.Node) -> Any:
        """One setting of the ``collector:`` section: read here as its kind's YAML type, then
        checked by the settings' own `check_value`, as a flag's text is."""
        key = join("collector", name)
        option = BY_KEY[name]
        kind = option.kind
        hint = HINTS.get(kind, "")
        value: Any
        if kind is Kind.SWITCH:
            return self.boolean(node, key)
        if kind is Kind.BUDGET:
            return self.budget(node, key)
        if kind is Kind.DEADLINE:
            return self.deadline(node, key)
        if kind is Kind.COUNT:
            value = self.typed(node, key, (INT,), "a whole number", hint=hint)
        elif kind in (Kind.POSITIVE, Kind.NON_NEGATIVE):
            try:
                value = float(self.typed(node, key, (INT, FLOAT), "a number", hint=hint))
            except OverflowError:  # an integer beyond float's range, 0xfff...: refused by the check
                value = math.inf
        elif kind is Kind.SIZE:
            value = self.size(node, key, hint=hint)
        elif kind in (Kind.CHOICE, Kind.TEXT):
            value = self.string(node, key)
        else:
            raise AssertionError(f"no way to read a {kind} from YAML")
        try:
            return check_value(kind, value, node.value, option.choices)
        except BadValue as exc:
            raise self.error(node, key, str(exc), hint=exc.hint) from None

    def size(self, node: yaml.Node, key: str, *, hint: str) -> int:
        """Bytes, as a whole number or as on the command line: ``512M``, ``8G``."""
        self.plain(node, key)
        if node.tag == STR:
            value = size_in_bytes(node.value)
            if value is None:
                raise self.error(node, key, f"expected a size like 512M or 8G, got {got(node)}", hint=hint)
            return value
        return int(self.typed(node, key, (INT,), "a number of bytes or a size like 8G", hint=hint))

    def budget(self, node: yaml.Node, key: str) -> FailureBudget:
        """A count of servers (`5`) or a share of them (`"5%"`), as the settings parse one."""
        self.plain(node, key)
        if isinstance(node, yaml.ScalarNode) and node.tag in (INT, STR):
            try:
                return parse_budget(node.value)
            except ValueError:
                pass
        message = f"expected a number or a share, got {got(node)}"
        raise self.error(node, key, message, hint=HINTS[Kind.BUDGET])

    def deadline(self, node: yaml.Node, key: str) -> Deadline:
        """A duration (`15m`, or seconds as a number) or a time with its zone, as the flag reads it."""
        self.plain(node, key)
        if isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT, STR, TIMESTAMP):
            try:
                return parse_deadline(node.value)
            except ValueError as exc:
                raise self.error(node, key, str(exc), hint=HINTS[Kind.DEADLINE]) from None
        raise self.error(node, key, f"expected a duration or a time, got {got(node)}", hint=HINTS[Kind.DEADLINE])

    # -- single values -------------------------------------------------------------------------

    def server_id(self, node: yaml.Node, key: str) -> str:
        server_id = self.string(node, key)
        problem = check_file_name(server_id)
        if problem:
            raise self.error(
                node,
                key,
                f"server id {quoted(server_id)} cannot be a file name: {problem}",
                hint="server ids are used as file names: give the id exactly as CloudDC lists it",
            )
        return server_id

    def project_id(self, node: yaml.Node, key: str) -> str:
        project_id = self.string(node, key)
        problem = project_id_problem(project_id)
        if problem:
            raise self.error(node, key, f"project_id {problem}", hint=PROJECT_ID_HINT)
        return project_id

    def endpoint(self, node: yaml.Node, key: str) -> str:
        url = self.string(node, key)
        problem = url_problem(url)
        if problem:
            raise self.error(
                node,
                key,
                f"not a usable endpoint: {problem}",
                hint=f"give the API's base URL, like {_EXAMPLE_ENDPOINT}",
            )
        return url.rstrip("/")

    def region(self, node: yaml.Node, key: str) -> str:
        region = self.string(node, key)
        problem = region_problem(region)
        if problem:
            raise self.error(node, key, problem[0], hint=problem[1])
        return region

    def auth(self, node: yaml.Node, key: str) -> AuthSpec:
        fields = self.mapping(node, key, _AUTH_KINDS, hint=f"write {_AUTH_EXAMPLE}")
        if not fields and self.incomplete(fields):
            raise Stopped  # its one key was misspelt, and that is reported
        if not fields:
            raise self.error(
                node,
                key,
                "no token given, nor keys or any other credentials",
                hint=_AUTH_KINDS_HINT,
            )
        if len(fields) > 1:
            first, second = list(fields)[:2]
            raise self.error(
                fields[second].key,
                join(key, second),
                f"give {first} or {second}, not both",
                hint="remove one of them",
            )
        [(kind, entry)] = fields.items()
        child = join(key, kind)
        if kind in SCALAR_KINDS:
            value = self.string(entry.value, child)
            if not value:
                raise self.error(entry.value, child, "is empty", hint=f"write {_AUTH_EXAMPLE}")
            if kind == "token_file":
                value = self.file_path(entry.value, child, value, hint="give the path of the file holding the token")
            [option] = AUTH_OPTIONS[kind]  # the string is the kind's one option
            return AuthSpec(kind, ((option, value),), child, entry.value, {})
        options = {} if entry.value.tag == NULL else self.auth_options(entry.value, child, kind)
        option_keys = {name: option.key for name, option in options.items()}
        values = {
            name: self.part(self.auth_option, option.value, join(child, name), name) for name, option in options.items()
        }
        if broken(*values.values()):
            raise Stopped
        return AuthSpec(kind, tuple(values.items()), child, entry.key, MappingProxyType(option_keys))

    def auth_options(self, node: yaml.Node, key: str, kind: str) -> dict[str, Entry]:
        allowed = AUTH_OPTIONS[kind]
        if allowed:
            hint = f"{kind} is a mapping of its options: " + ", ".join(allowed)
        else:
            hint = f"{kind} takes no options: write {kind}: {{}}"
        return self.mapping(node, key, allowed, hint=hint)

    def auth_option(self, node: yaml.Node, key: str, name: str) -> str:
        value = self.string(node, key)
        if not value.strip():
            raise self.error(node, key, "is empty", hint="give a value, or remove the option")
        if name in PATH_OPTIONS:
            return self.file_path(node, key, value, hint="give the path of the file holding the password")
        if "\x00" in value or not _encodable(value):
            raise self.error(node, key, "not usable text (a NUL or lone surrogate)", hint="give the value as text")
        return value

    def file_path(self, node: yaml.Node, key: str, value: str, *, hint: str) -> str:
        """`value` as an absolute path: ``~`` expanded, relative to the inventory's folder."""
        if "\x00" in value or not _encodable(value):  # open() and expanduser() would raise
            raise self.error(node, key, "not a usable path (a NUL or lone surrogate)", hint=hint)
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else self.folder / path)

    def tls(self, node: yaml.Node, key: str) -> TlsSpec:
        hint = "tls is a mapping: {ca_bundle: <path>} to trust a private CA, or {verify: false}"
        fields = self.mapping(node, key, _TLS_KEYS, hint=hint)
        verify_node, bundle_node = given(fields, "verify"), given(fields, "ca_bundle")
        verify = True if verify_node is None else self.part(self.boolean, verify_node, join(key, "verify"))
        bundle = None if bundle_node is None else self.part(self.ca_bundle, bundle_node, join(key, "ca_bundle"))
        if broken(verify, bundle):
            raise Stopped
        if bundle is not None and not verify:
            raise self.error(
                fields["verify"].key,
                join(key, "verify"),
                "verify: false leaves ca_bundle unused",
                hint="remove ca_bundle to skip verification, or remove verify: false to verify against the bundle",
            )
        return TlsSpec(verify, bundle, join(key, "ca_bundle"), bundle_node)

    def ca_bundle(self, node: yaml.Node, key: str) -> str:
        hint = "give the path of a PEM file of CA certificates"
        value = self.string(node, key)
        if not value:
            raise self.error(node, key, "is empty", hint=hint)
        return self.file_path(node, key, value, hint=hint)

    def discover(self, node: yaml.Node, key: str) -> DiscoverSpec | None:
        self.plain(node, key)
        if node.tag == BOOL:
            return DiscoverSpec() if self.boolean(node, key) else None
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected true, false or a mapping, got {got(node)}", hint=_DISCOVER_HINT)
        fields = self.mapping(node, key, _DISCOVER_KEYS, hint=_DISCOVER_HINT)
        name_node, tags_node = given(fields, "name"), given(fields, "tags")
        name = None if name_node is None else self.part(self.glob, name_node, join(key, "name"))
        tags = _NO_TAGS
        if tags_node is not None:
            hint = 'tags is a mapping of tag names to globs, like {rack: "A1*"}'
            tags = self.part(self.tags, tags_node, join(key, "tags"), hint=hint)
        if broken(name, tags):
            raise Stopped
        return DiscoverSpec(name, tags)

    def glob(self, node: yaml.Node, key: str) -> str:
        value = self.string(node, key)
        if not value:
            raise self.error(node, key, "is empty", hint='give a glob, like "db-*", or remove it')
        return value

    def tags(
        self, node: yaml.Node, key: str, *, hint: str = "tags is a mapping of names to values, like {rack: A12}"
    ) -> Mapping[str, str]:
        fields = self.mapping(node, key, None, hint=hint)
        return MappingProxyType({name: self.tag_value(entry.value, join(key, name)) for name, entry in fields.items()})

    def tag_value(self, node: yaml.Node, key: str) -> str:
        self.plain(node, key)
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL:
            hint = "give a single value, like rack: A12"
            raise self.error(node, key, f"expected a value, got {got(node)}", hint=hint)
        value: str = node.value  # as written, so `rack: 007` stays "007"
        return value


PROJECT_ID_HINT = "give the project's ID as the console shows it under My Credentials"


def project_id_problem(project_id: str) -> str | None:
    """What is wrong with a project id (``'a b' may hold only letters, ...``), or None."""
    if _PROJECT_ID.fullmatch(project_id):
        return None
    return f"{quoted(project_id)} " + ("is empty" if not project_id else "may hold only letters, digits, '_' and '-'")


def region_problem(region: str) -> tuple[str, str] | None:
    """What is wrong with a region's ID, and a hint, or None."""
    if _REGION.fullmatch(region):
        return None
    lower = region.strip().lower()
    example = lower if _REGION.fullmatch(lower) else "cn-east-3"
    return (
        f"region {quoted(region)} is not a region's ID",
        f"give the region's ID as in its endpoints' host names, like {example}",
    )


def endpoint_of(region: str) -> str:
    """The CloudDC endpoint of a region."""
    return f"https://clouddc.{region}.myhuaweicloud.com"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
