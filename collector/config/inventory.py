"""Load and check the inventory: which servers, in which projects, reached how.

The inventory is a YAML file; configs/example-inventory.yaml shows every key. The CLI loads it
once, before the event loop starts, into the frozen dataclasses below, and the sweep consumes
them. Everything is checked first, and every problem is reported at once: each names the
file, the line and the key path (``projects[1].servers[3].id``), with a hint, and nothing is
sent. A problem stops the check of its own part of the file only (one server, one setting, one
project's endpoint), so a bad server id does not hide the next one; a mapping's keys are
checked before its values, since a misspelt key makes its values meaningless. The credentials
and CA bundles the inventory names are looked at once the file itself is right.

The file is composed into YAML nodes and walked here rather than handed to ``yaml.safe_load``:
nodes keep their line numbers for the errors, duplicate keys can be refused (a constructed dict
silently keeps the last one), and no tag beyond plain YAML can construct anything.

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

This is the one place the credentials the inventory names are read, from ``environ`` or from
files (`collector.auth.provider_from_spec`, which sends nothing).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import ssl as ssl_
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import yaml

from collector.auth import OPTIONS as _AUTH_OPTIONS
from collector.auth import Credentials, CredentialsUnavailable, provider_from_spec, region_of
from collector.config.names import check_file_name
from collector.config.settings import BY_KEY as _SETTINGS
from collector.config.settings import FailureBudget, Kind, parse_budget, size_in_bytes
from collector.errors import InventoryError, InventoryErrors
from collector.text import quoted, unsafe_char

__all__ = ["RUN_TIME_LOOKUP", "DiscoverSpec", "Inventory", "Project", "Server", "load_inventory"]

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

    path: Path
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


def load_inventory(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Inventory:
    """Read and check the inventory at `path`; raise `InventoryError` for a problem, or
    `InventoryErrors` holding every problem when there are several.

    Environment variables the ``auth`` entries name are looked up in `environ` (``os.environ``
    by default); relative paths (``token_file``, ``password_file``, ``ca_bundle``) start from
    the inventory's folder, and ``~`` expands. Credentials and CA bundles are read only for the
    settings some project uses, and after the rest of the file has been checked.
    """
    path = Path(path)
    root = _compose(path)
    loader = _Loader(path, os.environ if environ is None else environ)
    try:
        return loader.inventory(root)
    except InventoryError as exc:
        loader.problems.append(exc)
    except _Stopped:
        pass
    # A default shared by several projects may be resolved more than once (an IAM entry for
    # each region): the same problem is reported once.
    unique = {str(problem): problem for problem in loader.problems}.values()
    problems = sorted(unique, key=lambda problem: problem.line or 0)
    raise problems[0] if len(problems) == 1 else InventoryErrors(problems)


# Keys allowed in each kind of mapping, in the order the hints list them.
_TOP_KEYS = ("endpoint", "region", "auth", "tls", "project_id", "servers", "discover", "projects", "collector")
_PROJECT_KEYS = ("project_id", "endpoint", "region", "auth", "tls", "servers", "discover")
_SERVER_KEYS = ("id", "name", "tags")
_AUTH_KINDS = ("token_env", "token_file", "aksk", "iam", "pod_identity", "metadata")
_AUTH_OPTION_ORDER = (
    "ak_env",
    "sk_env",
    "security_token_env",
    "profile",
    "endpoint",
    "domain",
    "user",
    "password_env",
    "password_file",
)
_TLS_KEYS = ("ca_bundle", "verify")
_DISCOVER_KEYS = ("name", "tags")
# Kinds given as a single string, and the option of `provider_from_spec` that string is.
_SCALAR_AUTH = {"token_env": "name", "token_file": "path"}
_PATH_OPTIONS = frozenset({"password_file"})

# The `collector:` section's keys and kinds are the settings' own: see collector.config.settings.

_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")
_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d+")
_EXAMPLE_ENDPOINT = "https://clouddc.cn-east-3.myhuaweicloud.com"
_AUTH_EXAMPLE = "auth: {token_env: CLOUDDC_TOKEN} or auth: {token_file: <path>}"
_AUTH_KINDS_HINT = (
    "give one of token_env, token_file, aksk, iam, pod_identity or metadata, as in"
    " configs/example-inventory.yaml; or remove auth to look credentials up as the SDK does"
)
_DISCOVER_HINT = 'write discover: true, or discover: {name: "db-*", tags: {rack: "A1*"}}'

_YAML = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_YAML + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MAP, _SEQ, _MERGE = (_YAML + t for t in ("timestamp", "map", "seq", "merge"))
# The tags plain YAML resolves to by itself; any other (!!python/..., !!binary, !custom) is refused.
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP})
_KINDS = {_INT: "the integer", _FLOAT: "the number", _BOOL: "the boolean", _TIMESTAMP: "the date"}

_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _endpoint_of(region: str) -> str:
    return f"https://clouddc.{region}.myhuaweicloud.com"


def _compose_text(text: str) -> yaml.Node | None:
    """Compose with libyaml where PyYAML has it (three times faster on a 10,000-server file).

    libyaml refuses a few corners the pure-Python parser accepts (``{tags:}``), and words its
    errors differently; so on any complaint the pure-Python parser decides, and its message
    is the one the user sees.
    """
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.compose(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _compose(path: Path) -> yaml.Node:
    """The file's YAML node tree; every way of not getting one is an `InventoryError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(path, "no such file", hint="check the inventory's path") from None
    except IsADirectoryError:
        raise InventoryError(path, "is a directory", hint="give the inventory file's path") from None
    except OSError as exc:
        raise InventoryError(
            path, f"cannot be read ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(path, "not UTF-8 text", line=line, hint="save the file as UTF-8") from None
    try:
        root = _compose_text(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ", ".join(part for part in (exc.context, exc.problem) if part).replace("\n", " ")
        hint = (
            "indent with spaces, not tabs"
            if "'\\t'" in detail
            else "check the indentation, colons and quotes on that line and the one before"
        )
        raise InventoryError(
            path, f"not valid YAML: {detail}", line=mark.line + 1 if mark else None, hint=hint
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise InventoryError(path, f"character {char!r} is not allowed in YAML", line=line, hint="remove it") from None
    except RecursionError:
        raise InventoryError(path, "nested too deeply", hint="see configs/example-inventory.yaml") from None
    if root is None:
        raise InventoryError(path, "the file is empty", hint="see configs/example-inventory.yaml")
    return root


class _Entry(NamedTuple):
    key: yaml.Node
    value: yaml.Node


@dataclass(frozen=True, slots=True)
class _AuthSpec:
    """An auth entry, checked but not yet turned into credentials."""

    kind: str  # one of _AUTH_KINDS
    options: tuple[tuple[str, str], ...]  # for provider_from_spec; paths resolved already
    key: str  # "projects[1].auth.aksk"
    node: yaml.Node  # where a problem with the entry as a whole points
    option_keys: Mapping[str, yaml.Node] = field(hash=False, compare=False)  # each option's key

    def where(self, option: str | None) -> tuple[str, yaml.Node]:
        """The key path and node a problem with `option` points at."""
        if option is None or self.kind in _SCALAR_AUTH:
            return self.key, self.node
        return _join(self.key, option), self.option_keys.get(option, self.node)


@dataclass(frozen=True, slots=True)
class _TlsSpec:
    """A tls mapping, checked; the CA bundle not yet read."""

    verify: bool
    ca_bundle: str | None  # resolved against the inventory's folder
    key: str  # "tls.ca_bundle"
    node: yaml.Node | None


class _Level(NamedTuple):
    """What one level, the top or a project, says about reaching its API: None where it says
    nothing, `_BROKEN` where what it says is wrong. `discover` is `_UNSET` when not given, as
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
    auth: _AuthSpec | None
    tls: _TlsSpec | None
    discover: DiscoverSpec | None
    servers: tuple[Server, ...]


class _Stopped(Exception):
    """A part of the file has problems, already recorded: stop checking that part."""


class _Broken:
    """What a part of the file stands for once it has a problem, so later checks stay quiet
    about it (a project whose default endpoint is wrong is not also "missing" one)."""

    def __repr__(self) -> str:
        return "<broken>"


_BROKEN: Any = _Broken()
_UNSET: Any = object()
_T = TypeVar("_T")


def _first(*candidates: Any) -> Any:
    """The first candidate that says something; `_Stopped` if that one is broken."""
    for candidate in candidates:
        if candidate is _BROKEN:
            raise _Stopped
        if candidate is not None:
            return candidate
    return None


def _derived(region: Any, derive: Callable[[str], str | None]) -> Any:
    return region if region is None or region is _BROKEN else derive(region)


class _Loader:
    """Walks the node tree, checking as it goes. A `key` is a path like ``servers[3].id``.

    A check raises `InventoryError` at the first problem in its part of the file; `part`
    records it and goes on with the next part.
    """

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.folder = path.parent.absolute()
        self.environ = environ
        self.seen: dict[tuple[str, str], tuple[str, int]] = {}  # (project, id) -> first key, line
        self.providers: dict[tuple[Any, ...], Credentials] = {}
        self.contexts: dict[str, ssl_.SSLContext] = {}  # CA bundle path -> its context
        self.problems: list[InventoryError] = []

    def error(self, node: yaml.Node | None, key: str | None, message: str, hint: str) -> InventoryError:
        line = None if node is None else _line(node)
        return InventoryError(self.path, message, key=key or None, line=line, hint=hint)

    def part(self, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """`check(...)`, or `_BROKEN` once its problems are recorded."""
        try:
            return check(*args, **kwargs)
        except InventoryError as exc:
            self.problems.append(exc)
        except _Stopped:
            pass
        return _BROKEN

    def stop_if_any(self) -> None:
        if self.problems:
            raise _Stopped

    # -- the inventory's structure --------------------------------------------------------------

    def inventory(self, root: yaml.Node) -> Inventory:
        hint = "the inventory is a mapping, as in configs/example-inventory.yaml"
        top = self.mapping(root, "", _TOP_KEYS, hint=hint)
        defaults = self.level(top, "")
        drafts = self.part(self.drafts, top, defaults)
        collector = _given(top, "collector")
        settings = {} if collector is None else self.part(self.settings, collector)
        self.stop_if_any()
        # Credentials and CA bundles last: a broken file is reported before a missing variable.
        for draft in drafts:
            if draft.auth is not None and self.provider_key(draft.auth, draft.region) not in self.providers:
                self.part(self.credentials, draft.auth, draft.region)
            if draft.tls is not None and draft.tls.ca_bundle is not None:
                self.part(self.ssl_context, draft.tls)
        self.stop_if_any()
        projects = tuple(self.finished(draft) for draft in drafts)
        return Inventory(self.path, projects, MappingProxyType(settings))

    def finished(self, draft: _ProjectDraft) -> Project:
        credentials = None if draft.auth is None else self.credentials(draft.auth, draft.region)
        tls = draft.tls
        if tls is None:
            ssl, verify = True, True
        elif not tls.verify:
            ssl, verify = False, False
        else:
            ssl, verify = True if tls.ca_bundle is None else self.ssl_context(tls), True
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

    def level(self, fields: Mapping[str, _Entry], key: str) -> _Level:
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
        fields: Mapping[str, _Entry],
        key: str,
        name: str,
        check: Callable[[yaml.Node, str], Any],
        *,
        null_is_absent: bool = False,
        unset: Any = None,
    ) -> Any:
        node = _given(fields, name) if null_is_absent else fields[name].value if name in fields else None
        return unset if node is None else self.part(check, node, _join(key, name))

    def same_region(self, fields: Mapping[str, _Entry], key: str, endpoint: str, region: str) -> str:
        """A region that contradicts the endpoint beside it is a mistake in one of them."""
        named = region_of(endpoint)
        if named is not None and named != region:
            raise self.error(
                fields["region"].value,
                _join(key, "region"),
                f"region {region} is not the region of the endpoint beside it ({named})",
                hint="make them agree, or remove one: an endpoint wins over a region",
            )
        return region

    def drafts(self, top: Mapping[str, _Entry], defaults: _Level) -> list[_ProjectDraft]:
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
        fields: Mapping[str, _Entry],
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
        within = project_id if project_id is not _BROKEN else f"\0{key}"
        servers = self.part(self.servers_field, fields, node, key, within, discover)
        if _BROKEN in (project_id, endpoint, region, auth, tls, discover, servers):
            raise _Stopped
        return _ProjectDraft(project_id, endpoint, region, auth, tls, discover, servers)

    def project_id_field(self, fields: Mapping[str, _Entry], node: yaml.Node | None, key: str) -> str:
        hint = "give the project's ID, project_id: <id>"
        id_node = self.required(fields, node, key, "project_id", hint=hint)
        return self.project_id(id_node, _join(key, "project_id"))

    def endpoint_field(self, node: yaml.Node | None, key: str, own: _Level, defaults: _Level, where: str) -> str:
        endpoint = _first(
            own.endpoint, _derived(own.region, _endpoint_of), defaults.endpoint, _derived(defaults.region, _endpoint_of)
        )
        if endpoint is None:
            raise self.error(
                node,
                _join(key, "endpoint"),
                "required but missing",
                hint=f"give the API's base URL, like endpoint: {_EXAMPLE_ENDPOINT}, or its region,"
                f" like region: cn-east-3, {where}",
            )
        return endpoint

    def servers_field(
        self,
        fields: Mapping[str, _Entry],
        node: yaml.Node | None,
        key: str,
        project_id: str,
        discover: DiscoverSpec | None,
    ) -> tuple[Server, ...]:
        if discover is _BROKEN and _given(fields, "servers") is None:
            raise _Stopped  # whether servers may be left out is not known
        if discover is not None and discover is not _BROKEN:
            servers_node = _given(fields, "servers")
            if servers_node is None:
                return ()
            return self.servers(servers_node, _join(key, "servers"), project_id, empty_allowed=True)
        hint = "list the ids of the servers to collect, or set discover: true"
        servers_node = self.required(fields, node, key, "servers", hint=hint)
        return self.servers(servers_node, _join(key, "servers"), project_id)

    def servers(self, node: yaml.Node, key: str, project_id: str, *, empty_allowed: bool = False) -> tuple[Server, ...]:
        hint = "servers is a list of server ids, one '- <id>' per line"
        items = self.sequence(node, key, hint=hint)
        if not items and not empty_allowed:
            hint = "list at least one server, set discover: true, or remove the project"
            raise self.error(node, key, "the list is empty", hint=hint)
        servers = [
            self.part(self.listed_server, item, f"{key}[{index}]", project_id) for index, item in enumerate(items)
        ]
        if _BROKEN in servers:
            raise _Stopped
        return tuple(servers)

    def listed_server(self, node: yaml.Node, key: str, project_id: str) -> Server:
        """One entry of a servers list, checked, and not listed before in its project."""
        server = self.server(node, key)
        first = self.seen.get((project_id, server.id))
        if first is not None:
            shown = "this project" if project_id.startswith("\0") else f"project {project_id}"
            raise self.error(
                node,
                key,
                f"server {server.id} is listed twice in {shown} (first at {first[0]}, line {first[1]})",
                hint="remove one of the two entries",
            )
        self.seen[project_id, server.id] = (key, _line(node))
        return server

    def server(self, node: yaml.Node, key: str) -> Server:
        if isinstance(node, yaml.ScalarNode):
            return Server(self.server_id(node, key))
        hint = "write a server as '- <id>' or '- {id: <id>, name: <name>, tags: {...}}'"
        fields = self.mapping(node, key, _SERVER_KEYS, hint=hint)
        id_node = self.part(self.required, fields, node, key, "id", hint=hint)
        server_id = _BROKEN if id_node is _BROKEN else self.part(self.server_id, id_node, _join(key, "id"))
        name, tags = _given(fields, "name"), _given(fields, "tags")
        name = None if name is None else self.part(self.string, name, _join(key, "name"))
        tags = _NO_TAGS if tags is None else self.part(self.tags, tags, _join(key, "tags"))
        if _BROKEN in (server_id, name, tags):
            raise _Stopped
        return Server(server_id, name, tags)

    def settings(self, node: yaml.Node) -> dict[str, Any]:
        hint = "collector is a mapping of options, like concurrency: 64"
        fields = self.mapping(node, "collector", _SETTINGS, hint=hint)
        settings = {name: self.part(self.setting, name, entry.value) for name, entry in fields.items()}
        if _BROKEN in settings.values():
            raise _Stopped
        return settings

    def setting(self, name: str, node: yaml.Node) -> Any:
        key = _join("collector", name)
        option = _SETTINGS[name]
        match option.kind:
            case Kind.COUNT:
                return self.integer(node, key, minimum=1)
            case Kind.POSITIVE:
                return self.number(node, key, zero_allowed=False)
            case Kind.NON_NEGATIVE:
                return self.number(node, key, zero_allowed=True)
            case Kind.SIZE:
                return self.size(node, key)
            case Kind.CHOICE:
                return self.choice(node, key, option.choices)
            case Kind.SWITCH:
                return self.boolean(node, key)
            case Kind.BUDGET:
                return self.budget(node, key)
            case Kind.TEXT:
                text = self.string(node, key)
                if not text.strip():
                    raise self.error(node, key, "is empty", hint="give a value, or remove it")
                return text
        raise AssertionError(f"no way to read a {option.kind} from YAML")

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
        if not _PROJECT_ID.fullmatch(project_id):
            problem = "is empty" if not project_id else "may hold only letters, digits, '_' and '-'"
            raise self.error(
                node,
                key,
                f"project_id {quoted(project_id)} {problem}",
                hint="give the project's ID as the console shows it under My Credentials",
            )
        return project_id

    def endpoint(self, node: yaml.Node, key: str) -> str:
        url = self.string(node, key)
        problem = _url_problem(url)
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
        if not _REGION.fullmatch(region):
            lower = region.strip().lower()
            example = lower if _REGION.fullmatch(lower) else "cn-east-3"
            raise self.error(
                node,
                key,
                f"region {quoted(region)} is not a region's ID",
                hint=f"give the region's ID as in its endpoints' host names, like {example}",
            )
        return region

    def auth(self, node: yaml.Node, key: str) -> _AuthSpec:
        fields = self.mapping(node, key, _AUTH_KINDS, hint=f"write {_AUTH_EXAMPLE}")
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
                _join(key, second),
                f"give {first} or {second}, not both",
                hint="remove one of them",
            )
        [(kind, entry)] = fields.items()
        child = _join(key, kind)
        if kind in _SCALAR_AUTH:
            value = self.string(entry.value, child)
            if not value:
                raise self.error(entry.value, child, "is empty", hint=f"write {_AUTH_EXAMPLE}")
            if kind == "token_file":
                value = self.file_path(entry.value, child, value, hint="give the path of the file holding the token")
            return _AuthSpec(kind, ((_SCALAR_AUTH[kind], value),), child, entry.value, {})
        options = {} if entry.value.tag == _NULL else self.auth_options(entry.value, child, kind)
        option_keys = {name: option.key for name, option in options.items()}
        values = {
            name: self.part(self.auth_option, option.value, _join(child, name), name)
            for name, option in options.items()
        }
        if _BROKEN in values.values():
            raise _Stopped
        return _AuthSpec(kind, tuple(values.items()), child, entry.key, MappingProxyType(option_keys))

    def auth_options(self, node: yaml.Node, key: str, kind: str) -> dict[str, _Entry]:
        allowed = [name for name in _AUTH_OPTION_ORDER if name in _AUTH_OPTIONS[kind]]
        if allowed:
            hint = f"{kind} is a mapping of its options: " + ", ".join(allowed)
        else:
            hint = f"{kind} takes no options: write {kind}: {{}}"
        return self.mapping(node, key, allowed, hint=hint)

    def auth_option(self, node: yaml.Node, key: str, name: str) -> str:
        value = self.string(node, key)
        if not value.strip():
            raise self.error(node, key, "is empty", hint="give a value, or remove the option")
        if name in _PATH_OPTIONS:
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

    def provider_key(self, spec: _AuthSpec, region: str | None) -> tuple[Any, ...]:
        """One provider per distinct entry; an IAM entry without its own endpoint per region too."""
        uses_region = spec.kind == "iam" and "endpoint" not in dict(spec.options)
        return (spec.kind, spec.options, region if uses_region else None)

    def credentials(self, spec: _AuthSpec, region: str | None) -> Credentials:
        """The provider for `spec` in `region`, shared by the projects using the same."""
        cache_key = self.provider_key(spec, region)
        if cache_key not in self.providers:
            options = dict(spec.options)
            try:
                provider = provider_from_spec(
                    spec.kind, options, environ=self.environ, base_dir=self.folder, region=region
                )
            except CredentialsUnavailable as exc:
                key, node = spec.where(exc.option)
                hint = exc.hint
                if spec.kind == "iam" and exc.option == "endpoint" and "endpoint" not in options:
                    hint = "give endpoint: https://iam.<region>.myhuaweicloud.com, or the project's region"
                raise self.error(node, key, exc.message, hint=hint) from None
            self.providers[cache_key] = provider
        return self.providers[cache_key]

    def tls(self, node: yaml.Node, key: str) -> _TlsSpec:
        hint = "tls is a mapping: {ca_bundle: <path>} to trust a private CA, or {verify: false}"
        fields = self.mapping(node, key, _TLS_KEYS, hint=hint)
        verify_node, bundle_node = _given(fields, "verify"), _given(fields, "ca_bundle")
        verify = True if verify_node is None else self.part(self.boolean, verify_node, _join(key, "verify"))
        bundle = None if bundle_node is None else self.part(self.ca_bundle, bundle_node, _join(key, "ca_bundle"))
        if _BROKEN in (verify, bundle):
            raise _Stopped
        if bundle is not None and not verify:
            raise self.error(
                fields["verify"].key,
                _join(key, "verify"),
                "verify: false leaves ca_bundle unused",
                hint="remove ca_bundle to skip verification, or remove verify: false to verify against the bundle",
            )
        return _TlsSpec(verify, bundle, _join(key, "ca_bundle"), bundle_node)

    def ca_bundle(self, node: yaml.Node, key: str) -> str:
        hint = "give the path of a PEM file of CA certificates"
        value = self.string(node, key)
        if not value:
            raise self.error(node, key, "is empty", hint=hint)
        return self.file_path(node, key, value, hint=hint)

    def ssl_context(self, spec: _TlsSpec) -> ssl_.SSLContext:
        """A context that trusts the CA bundle only, one per bundle; every way of not getting
        one is an error on the ca_bundle line."""
        path = spec.ca_bundle
        assert path is not None
        if path not in self.contexts:
            hint = "give the path of a PEM file of CA certificates (a relative path starts from the inventory's folder)"
            try:
                self.contexts[path] = ssl_.create_default_context(cafile=path)
            except FileNotFoundError:
                raise self.error(spec.node, spec.key, f"CA bundle {path} does not exist", hint=hint) from None
            except IsADirectoryError:
                raise self.error(spec.node, spec.key, f"CA bundle {path} is a directory", hint=hint) from None
            except ssl_.SSLError as exc:
                reason = exc.reason or type(exc).__name__
                message = f"CA bundle {path} holds no usable PEM certificate ({reason})"
                raise self.error(spec.node, spec.key, message, hint=hint) from None
            except OSError as exc:
                message = f"CA bundle {path} cannot be read ({exc.strerror or type(exc).__name__})"
                raise self.error(spec.node, spec.key, message, hint="check the file's permissions") from None
        return self.contexts[path]

    def discover(self, node: yaml.Node, key: str) -> DiscoverSpec | None:
        self.plain(node, key)
        if node.tag == _BOOL:
            return DiscoverSpec() if self.boolean(node, key) else None
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected true, false or a mapping, got {_got(node)}", hint=_DISCOVER_HINT)
        fields = self.mapping(node, key, _DISCOVER_KEYS, hint=_DISCOVER_HINT)
        name_node, tags_node = _given(fields, "name"), _given(fields, "tags")
        name = None if name_node is None else self.part(self.glob, name_node, _join(key, "name"))
        tags = _NO_TAGS
        if tags_node is not None:
            hint = 'tags is a mapping of tag names to globs, like {rack: "A1*"}'
            tags = self.part(self.tags, tags_node, _join(key, "tags"), hint=hint)
        if _BROKEN in (name, tags):
            raise _Stopped
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
        return MappingProxyType({name: self.tag_value(entry.value, _join(key, name)) for name, entry in fields.items()})

    def tag_value(self, node: yaml.Node, key: str) -> str:
        self.plain(node, key)
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL:
            hint = "give a single value, like rack: A12"
            raise self.error(node, key, f"expected a value, got {_got(node)}", hint=hint)
        return node.value  # as written, so `rack: 007` stays "007"

    # -- YAML types ------------------------------------------------------------------------------

    def plain(self, node: yaml.Node, key: str) -> None:
        """Refuse any tag plain YAML would not give this node by itself."""
        if isinstance(node, yaml.MappingNode):
            allowed: Collection[str] = (_MAP,)
        elif isinstance(node, yaml.SequenceNode):
            allowed = (_SEQ,)
        else:
            allowed = _SCALAR_TAGS
        if node.tag not in allowed:
            raise self.error(
                node,
                key,
                f"the YAML tag {node.tag.replace(_YAML, '!!')} is not allowed",
                hint="remove the tag: plain strings, numbers, lists and mappings are enough",
            )

    def mapping(self, node: yaml.Node, key: str, allowed: Collection[str] | None, *, hint: str) -> dict[str, _Entry]:
        """The mapping's entries by name; `allowed` None lets any name through."""
        self.plain(node, key)
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, got {_got(node)}", hint=hint)
        entries: dict[str, _Entry] = {}
        problems = []
        for key_node, value_node in node.value:
            try:
                name = self.entry_name(key_node, key, entries, allowed, hint=hint)
            except InventoryError as exc:
                problems.append(exc)  # every key of this mapping is checked, then we stop
                continue
            entries[name] = _Entry(key_node, value_node)
        if problems:
            self.problems.extend(problems)
            raise _Stopped
        return entries

    def entry_name(
        self,
        key_node: yaml.Node,
        key: str,
        entries: Mapping[str, _Entry],
        allowed: Collection[str] | None,
        *,
        hint: str,
    ) -> str:
        if key_node.tag == _MERGE:
            raise self.error(
                key_node,
                _join(key, "<<"),
                "merge keys are not supported",
                hint="write the keys out (an alias, *name, can still stand for a whole value)",
            )
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, key, f"expected a name as key, got {_got(key_node)}", hint=hint)
        self.plain(key_node, key)
        name = key_node.value
        child = _join(key, name)
        if name in entries:
            raise self.error(
                key_node,
                child,
                f"duplicate key, first given on line {_line(entries[name].key)}",
                hint="keep only one of them",
            )
        if allowed is not None and name not in allowed:
            raise self.error(key_node, child, "unknown key", hint=_did_you_mean(name, allowed))
        return name

    def sequence(self, node: yaml.Node, key: str, *, hint: str) -> list[yaml.Node]:
        self.plain(node, key)
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, f"expected a list, got {_got(node)}", hint=hint)
        return node.value

    def string(self, node: yaml.Node, key: str) -> str:
        self.plain(node, key)
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return node.value
        if not isinstance(node, yaml.ScalarNode):
            hint = "give a single string"
        elif node.tag == _NULL:
            hint = "give a value here, or remove it"
        else:
            # YAML reads 0123 as the integer 83 and 1e3 as 1000.0: only quotes keep it as written.
            hint = f'quote it, "{node.value}", so YAML keeps it as written'
        raise self.error(node, key, f"expected a string, got {_got(node)}", hint=hint)

    def integer(self, node: yaml.Node, key: str, *, minimum: int) -> int:
        hint = f"give a whole number, at least {minimum}"
        value = self.typed(node, key, (_INT,), "a whole number", hint=hint)
        if value < minimum:
            raise self.error(node, key, f"must be at least {minimum}, got {value}", hint=hint)
        return value

    def number(self, node: yaml.Node, key: str, *, zero_allowed: bool) -> float:
        bound = "0 or more" if zero_allowed else "more than 0"
        hint = f"give a number, {bound}"
        try:
            value = float(self.typed(node, key, (_INT, _FLOAT), "a number", hint=hint))
        except OverflowError:  # an integer beyond float's range, 0xfff...: refused below
            value = math.inf
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
            raise self.error(node, key, f"must be a number {bound}, got {node.value}", hint=hint)
        return value

    def size(self, node: yaml.Node, key: str) -> int:
        """Bytes, as a whole number or as on the command line: ``512M``, ``8G``."""
        hint = "give a number of bytes, or a size like 512M or 8G"
        self.plain(node, key)
        if node.tag == _STR:
            value = size_in_bytes(node.value)
            if value is None:
                message = f"expected a size like 512M or 8G, got {_got(node)}"
                raise self.error(node, key, message, hint=hint)
        else:
            value = self.typed(node, key, (_INT,), "a number of bytes or a size like 8G", hint=hint)
        if value < 1:
            raise self.error(node, key, f"must be at least 1, got {node.value}", hint=hint)
        return value

    def budget(self, node: yaml.Node, key: str) -> FailureBudget:
        """A count of servers (`5`) or a share of them (`"5%"`)."""
        self.plain(node, key)
        if isinstance(node, yaml.ScalarNode) and node.tag in (_INT, _STR):
            try:
                return parse_budget(node.value)
            except ValueError:
                pass
        hint = 'give a number of servers, like 5, or a share, like "5%"'
        raise self.error(node, key, f"expected a number or a share, got {_got(node)}", hint=hint)

    def boolean(self, node: yaml.Node, key: str) -> bool:
        return self.typed(node, key, (_BOOL,), "true or false", hint="write true or false")

    def typed(self, node: yaml.Node, key: str, tags: Collection[str], expected: str, *, hint: str) -> Any:
        """The Python value of a scalar tagged as one of `tags`.

        Tags, not Python types, decide: YAML's `true` is a bool even though Python's bool is an int.
        """
        self.plain(node, key)
        if node.tag in tags:
            try:
                return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
            except (ValueError, KeyError, IndexError):  # an explicit tag on a bad value: !!int abc
                pass
        raise self.error(node, key, f"expected {expected}, got {_got(node)}", hint=hint)

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(node, key)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"did you mean {close[0]}?" if close else "use one of " + ", ".join(choices)
            message = f"{quoted(value)} is not one of {', '.join(choices)}"
            raise self.error(node, key, message, hint=hint)
        return value

    def required(
        self,
        fields: Mapping[str, _Entry],
        node: yaml.Node | None,
        key: str,
        name: str,
        *,
        hint: str,
    ) -> yaml.Node:
        if name not in fields:
            raise self.error(node, _join(key, name), "required but missing", hint=hint)
        return fields[name].value


def _given(fields: Mapping[str, _Entry], name: str) -> yaml.Node | None:
    """The value of an optional key, or None if it is absent or empty (null).

    Empty counts as absent so that a section with every line commented out, or a generated
    inventory writing ``name: null``, means what it looks like.
    """
    entry = fields.get(name)
    return None if entry is None or entry.value.tag == _NULL else entry.value


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be an endpoint, or None if it can."""
    if unsafe_char(url, spaces=False, unprintable=False) is not None:
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is what raises for a bad one
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with https:// (or http://)"
    if not parts.hostname:
        return "it has no host"
    if "@" in parts.netloc:
        return "it holds a user name or password (credentials go under auth)"
    if "?" in url or "#" in url:
        return "it has a query or fragment"
    return None


def _did_you_mean(name: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    if close:
        return f"did you mean {close[0]}?"
    if not allowed:
        return "no keys are allowed here: write {}"
    return "the keys allowed here are " + ", ".join(allowed)


def _join(parent: str, name: str) -> str:
    part = name if _PLAIN_NAME.fullmatch(name) else f"[{name!r}]"
    if not parent:
        return part
    return f"{parent}{part}" if part.startswith("[") else f"{parent}.{part}"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _got(node: yaml.Node) -> str:
    """What `node` is, for "expected X, got Y"."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    if node.tag == _STR:
        return f"the string {quoted(node.value)}"
    shown = node.value if len(node.value) <= 40 and node.value.isprintable() else quoted(node.value)
    return f"{_KINDS.get(node.tag, 'the value')} {shown}"
