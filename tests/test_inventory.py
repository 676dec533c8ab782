"""The inventory loader: what it accepts, and how it reports the first thing wrong.

Each bad inventory is a list of YAML lines, so the line an error must name is easy to count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _unprivileged import open_folder, unprivileged

from collector.auth import (
    CredentialsUnavailable,
    StaticToken,
    token_from_env,
    token_from_file,
)
from collector.config.inventory import Inventory, Server, load_inventory
from collector.errors import InventoryError, InventoryErrors

TOKEN = "tok-3f9a0c"
ENV = {"CLOUDDC_TOKEN": TOKEN}
ENDPOINT = "endpoint: https://api.example.com"
PROJECT = "project_id: p1"
AUTH = "auth: {token_env: CLOUDDC_TOKEN}"
HEAD = [ENDPOINT, PROJECT, AUTH]  # lines 1-3 of most single-project cases

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(folder: Path, lines: list[str], name: str = "inventory.yaml") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(folder: Path, lines: list[str], environ: dict[str, str] = ENV) -> Inventory:
    return load_inventory(write(folder, lines), environ)


def error_for(folder: Path, lines: list[str], environ: dict[str, str] = ENV) -> InventoryError:
    path = write(folder, lines)
    with pytest.raises(InventoryError) as info:
        load_inventory(path, environ)
    return info.value


def check(error: InventoryError, key: str | None, line: int | None, fragment: str) -> None:
    """One line naming file, line and key, in that order, with the fragment and a hint."""
    message = str(error)
    assert "\n" not in message
    assert (error.key, error.line) == (key, line), message
    where = "inventory.yaml" + (f":{line}" if line is not None else "") + (f": {key}" if key else "")
    assert where + ":" in message
    assert fragment in message
    assert error.hint and message.endswith(error.hint)


# -- what a good inventory gives ------------------------------------------------------------------


def test_single_project_with_bare_ids_and_entries(tmp_path):
    inventory = load(
        tmp_path,
        [
            *HEAD,
            "servers:",
            "  - 2102313YJK10N1000123",
            "  - id: 2102313YJK10N1000124",
            "    name: db-01",
            "    tags: {rack: A12, slot: 7, spare: true, serial: 007}",
            "  - {id: '0042'}",
        ],
    )
    [project] = inventory.projects
    assert project.project_id == "p1"
    assert project.endpoint == "https://api.example.com"
    assert project.servers == (
        Server("2102313YJK10N1000123"),
        Server(
            "2102313YJK10N1000124",
            "db-01",
            {"rack": "A12", "slot": "7", "spare": "true", "serial": "007"},
        ),
        Server("0042"),
    )
    assert inventory.server_count == 3
    assert [server.id for _, server in inventory.targets()] == [s.id for s in project.servers]
    assert dict(inventory.settings) == {}
    assert inventory.path == tmp_path / "inventory.yaml"


def test_multi_project_with_endpoint_and_auth_overrides(tmp_path):
    inventory = load(
        tmp_path,
        [
            ENDPOINT,
            AUTH,
            "projects:",
            "  - project_id: p1",
            "    servers: [S1, S2]",
            "  - project_id: p2",
            "    servers: [S3]",
            "  - project_id: p3",
            "    endpoint: http://127.0.0.1:8080/",
            "    auth: {token_env: OTHER_TOKEN}",
            "    servers: [S4]",
        ],
        environ={"CLOUDDC_TOKEN": TOKEN, "OTHER_TOKEN": "other"},
    )
    p1, p2, p3 = inventory.projects
    assert (p1.endpoint, p2.endpoint, p3.endpoint) == (
        "https://api.example.com",
        "https://api.example.com",
        "http://127.0.0.1:8080",
    )
    assert p1.credentials is p2.credentials  # one provider per auth spec
    assert p1.credentials.describe() == "token from $CLOUDDC_TOKEN"
    assert p3.credentials == StaticToken("other", source="$OTHER_TOKEN")
    assert [(p.project_id, s.id) for p, s in inventory.targets()] == [
        ("p1", "S1"),
        ("p1", "S2"),
        ("p2", "S3"),
        ("p3", "S4"),
    ]
    assert inventory.server_count == 4


def test_same_server_id_in_two_projects_is_allowed(tmp_path):
    inventory = load(
        tmp_path,
        [
            ENDPOINT,
            AUTH,
            "projects:",
            "  - {project_id: p1, servers: [S1]}",
            "  - {project_id: p2, servers: [S1]}",
        ],
    )
    assert inventory.server_count == 2


def test_anchors_and_aliases_are_allowed(tmp_path):
    inventory = load(
        tmp_path,
        [
            "endpoint: https://api.example.com",
            "auth: &auth {token_env: CLOUDDC_TOKEN}",
            "projects:",
            "  - {project_id: p1, auth: *auth, servers: &fleet [S1, S2]}",
            "  - {project_id: p2, servers: *fleet}",
        ],
    )
    assert [p.servers for p in inventory.projects] == [(Server("S1"), Server("S2"))] * 2


def test_token_file_is_relative_to_the_inventory_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "token").write_text(f"  {TOKEN}\n\n")
    monkeypatch.chdir(tmp_path)
    path = write(folder, [ENDPOINT, PROJECT, "auth: {token_file: secrets/token}", "servers: [S1]"])
    [project] = load_inventory(path, {}).projects
    assert project.credentials == StaticToken(TOKEN, source=str(folder / "secrets" / "token"))


def test_token_file_absolute_path(tmp_path):
    token_path = tmp_path / "token"
    token_path.write_text(TOKEN)
    auth = f"auth: {{token_file: '{token_path}'}}"
    [project] = load(tmp_path, [ENDPOINT, PROJECT, auth, "servers: [S1]"], environ={}).projects
    assert project.credentials.describe() == f"token from {token_path}"


def test_collector_settings_are_checked_and_typed(tmp_path):
    inventory = load(
        tmp_path,
        [
            *HEAD,
            "servers: [S1]",
            "collector:",
            "  concurrency: 64",
            "  downloads: 8",
            "  rate: 10",
            "  poll_interval: 0.5",
            "  export_timeout: 1800",
            "  read_timeout: 60",
            "  grace: 0",
            "  max_archive_bytes: 8589934592",
            "  log_format: json",
            "  progress: false",
        ],
    )
    assert dict(inventory.settings) == {
        "concurrency": 64,
        "downloads": 8,
        "rate": 10.0,
        "poll_interval": 0.5,
        "export_timeout": 1800.0,
        "read_timeout": 60.0,
        "grace": 0.0,
        "max_archive_bytes": 8589934592,
        "log_format": "json",
        "progress": False,
    }
    assert type(inventory.settings["rate"]) is float
    with pytest.raises(TypeError):
        inventory.settings["rate"] = 1  # type: ignore[index]


def test_empty_optional_keys_count_as_absent(tmp_path):
    lines = [*HEAD, "servers:", "  - {id: S1, name: null, tags:}", "collector:", "  # rate: 5"]
    inventory = load(tmp_path, lines)
    assert inventory.projects[0].servers == (Server("S1"),)
    assert dict(inventory.settings) == {}


def test_endpoint_may_be_http_with_a_path_and_loses_its_trailing_slash(tmp_path):
    lines = ["endpoint: HTTP://localhost:8080/clouddc//", PROJECT, AUTH, "servers: [S1]"]
    assert load(tmp_path, lines).projects[0].endpoint == "HTTP://localhost:8080/clouddc"


def test_id_of_128_characters_is_allowed(tmp_path):
    server_id = "A" * 128
    assert load(tmp_path, [*HEAD, f"servers: [{server_id}]"]).projects[0].servers[0].id == server_id


def test_environ_defaults_to_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDDC_TOKEN", "from-os")
    path = write(tmp_path, [*HEAD, "servers: [S1]"])
    assert load_inventory(str(path)).projects[0].credentials == StaticToken("from-os", "$CLOUDDC_TOKEN")


def test_unused_top_level_auth_is_not_resolved(tmp_path):
    lines = [
        ENDPOINT,
        AUTH,
        "projects:",
        "  - {project_id: p1, auth: {token_env: OTHER}, servers: [S1]}",
    ]
    [project] = load(tmp_path, lines, environ={"OTHER": "x"}).projects
    assert project.credentials.describe() == "token from $OTHER"


def test_file_problems_are_reported_before_a_missing_token(tmp_path):
    error = error_for(tmp_path, [*HEAD, "servers: [a/b]"], environ={})
    check(error, "servers[0]", 4, "slash")


def test_loaded_objects_are_frozen(tmp_path):
    inventory = load(tmp_path, [*HEAD, "servers: [{id: S1, tags: {a: b}}]"])
    server = inventory.projects[0].servers[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.id = "S2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        server.tags["a"] = "c"  # type: ignore[index]
    assert hash(server) == hash(Server("S1", tags={"a": "b"}))


@pytest.mark.parametrize("name", ["example-inventory.yaml", "multi-project.yaml"])
def test_example_configs_load(name):
    inventory = load_inventory(CONFIGS / name, {"CLOUDDC_TOKEN": "a", "CLOUDDC_TOKEN_AP": "b"})
    assert inventory.server_count > 0


def test_the_multi_project_example_discovers_in_a_region():
    inventory = load_inventory(CONFIGS / "multi-project.yaml", {"CLOUDDC_TOKEN": "a", "CLOUDDC_TOKEN_AP": "b"})
    last = inventory.projects[-1]
    assert (last.endpoint, last.servers) == ("https://clouddc.la-south-2.myhuaweicloud.com", ())
    assert last.discover is not None and last.discover.name == "db-*"


# -- the file itself ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "inventory.yaml", ENV)
    check(info.value, None, None, "no such file")


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "inventory.yaml").mkdir()
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "inventory.yaml", ENV)
    check(info.value, None, None, "is a directory")


# Loads the inventory named by argv[1] and prints the InventoryError it raised, as JSON.
LOAD_AND_SHOW = """
import json, sys
from collector.config.inventory import load_inventory
from collector.errors import InventoryError
try:
    load_inventory(sys.argv[1], {"CLOUDDC_TOKEN": "t"})
except InventoryError as error:
    print(json.dumps({"path": str(error.path), "message": error.message, "key": error.key,
                      "line": error.line, "hint": error.hint}))
"""


def test_unreadable_file():
    """A real mode-0000 file, read by an unprivileged process: as root (CI), the loader runs as
    uid 65534, since root reads any file whatever its mode."""
    with open_folder("collector-inventory-") as folder:
        path = write(folder, [*HEAD, "servers: [S1]"])
        path.chmod(0)
        done = subprocess.run(
            unprivileged([sys.executable, "-c", LOAD_AND_SHOW, str(path)], 65534),
            capture_output=True,
            text=True,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=60,
            check=False,
        )
    assert done.returncode == 0 and done.stdout, done.stderr
    seen = json.loads(done.stdout)
    assert seen["path"] == str(path)
    error = InventoryError(
        path.name, seen["message"].removeprefix(f"{path}: "), key=seen["key"], line=seen["line"], hint=seen["hint"]
    )
    check(error, None, None, "cannot be read (Permission denied)")


def test_file_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_bytes(b"endpoint: https://api.example.com\nproject_id: p\xe9\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path, ENV)
    check(info.value, None, 2, "not UTF-8")


def test_control_character_in_file(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(f"{ENDPOINT}\n{PROJECT}\n{AUTH}\nservers: [S\x071]\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path, ENV)
    check(info.value, None, 4, "'\\x07' is not allowed")


@pytest.mark.parametrize(
    ("lines", "key", "line", "fragment"),
    [
        pytest.param([""], None, None, "empty", id="empty-file"),
        pytest.param(["# nothing yet", ""], None, None, "empty", id="only-comments"),
        pytest.param(["- a", "- b"], None, 1, "expected a mapping, got a list", id="top-level-list"),
        pytest.param(["just text"], None, 1, "expected a mapping, got the string", id="top-level-scalar"),
        pytest.param(
            [*HEAD, "servers: [S1]", "name: a: b"],
            None,
            5,
            "mapping values are not allowed",
            id="syntax",
        ),
        pytest.param([*HEAD, "servers:", "  - S1", " - S2"], None, 6, "not valid YAML", id="bad-indent"),
        pytest.param([*HEAD, "servers: [S1", "collector: {}"], None, 5, "not valid YAML", id="unclosed-flow"),
        pytest.param([*HEAD, "servers:", "\t- S1"], None, 5, "'\\t'", id="tab"),
        pytest.param(
            [*HEAD, "servers: [S1]", "---", "servers: [S2]"],
            None,
            5,
            "single document",
            id="two-docs",
        ),
        pytest.param(
            [*HEAD, "servers: !!python/object/apply:os.system [echo hi]"],
            "servers",
            4,
            "tag !!python/object/apply:os.system is not allowed",
            id="python-tag",
        ),
        pytest.param(
            [ENDPOINT, PROJECT, "auth: {token_env: !env CLOUDDC_TOKEN}", "servers: [S1]"],
            "auth.token_env",
            3,
            "tag !env is not allowed",
            id="custom-tag",
        ),
        pytest.param([*HEAD, "servers: [!!binary U0Ex]"], "servers[0]", 4, "!!binary", id="binary-tag"),
        pytest.param([*HEAD, "servers: !!set {S1}"], "servers", 4, "!!set", id="set-tag"),
        pytest.param(
            [*HEAD, "servers: [S1]", "collector: {concurrency: !!int nope}"],
            "collector.concurrency",
            5,
            "expected a whole number",
            id="explicit-int-tag-on-text",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - <<: {name: x}", "    id: S1"],
            "servers[0]['<<']",
            5,
            "merge keys are not supported",
            id="merge-key",
        ),
        pytest.param(
            [*HEAD, "servers: [S1]", "project_id: p2"],
            "project_id",
            5,
            "first given on line 2",
            id="dup-top-key",
        ),
    ],
)
def test_unusable_yaml(tmp_path, lines, key, line, fragment):
    check(error_for(tmp_path, lines), key, line, fragment)


def test_tab_indentation_gets_a_hint_about_tabs(tmp_path):
    error = error_for(tmp_path, [*HEAD, "servers:", "\t- S1"])
    assert "tabs" in error.hint


# -- structure and keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "key", "line", "fragment"),
    [
        pytest.param([*HEAD, "server:", "  - S1"], "server", 4, "did you mean servers?", id="top-typo"),
        pytest.param([*HEAD, "servers: [S1]", "zone: blue"], "zone", 5, "allowed here are", id="top-unknown"),
        pytest.param(
            [*HEAD, "servers: [S1]", "projects:", "  - {project_id: p2, servers: [S2]}"],
            "project_id",
            2,
            "cannot be used together with projects",
            id="both-forms",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "servers: [S1]", "projects: [{project_id: p2, servers: [S2]}]"],
            "servers",
            3,
            "cannot be used together with projects",
            id="servers-and-projects",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "collector: {concurrency: 1}"],
            None,
            None,
            "no servers",
            id="neither-form",
        ),
        pytest.param([*HEAD], "servers", None, "required but missing", id="project-id-without-servers"),
        pytest.param(
            [ENDPOINT, AUTH, "servers: [S1]"],
            "project_id",
            None,
            "required but missing",
            id="servers-without-project-id",
        ),
        pytest.param(
            [*HEAD, "servers: S1"],
            "servers",
            4,
            "expected a list, got the string 'S1'",
            id="servers-not-list",
        ),
        pytest.param([*HEAD, "servers: []"], "servers", 4, "the list is empty", id="servers-empty"),
        pytest.param([*HEAD, "servers:"], "servers", 4, "expected a list, got nothing", id="servers-null"),
        pytest.param(
            [ENDPOINT, AUTH, "projects: []"],
            "projects",
            3,
            "the list is empty",
            id="projects-empty",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "projects: {p1: [S1]}"],
            "projects",
            3,
            "expected a list",
            id="projects-not-list",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "projects:", "  - p1"],
            "projects[0]",
            4,
            "expected a mapping",
            id="project-not-mapping",
        ),
        pytest.param(
            [
                ENDPOINT,
                AUTH,
                "projects:",
                "  - project_id: p1",
                "    servers: [S1]",
                "  - project_id: p2",
            ],
            "projects[1].servers",
            6,
            "required but missing",
            id="project-without-servers",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "projects:", "  - project_id: p1", "    servers: []"],
            "projects[0].servers",
            5,
            "the list is empty",
            id="project-with-empty-servers",
        ),
        pytest.param(
            [ENDPOINT, AUTH, "projects:", "  - servers: [S1]"],
            "projects[0].project_id",
            4,
            "required but missing",
            id="project-without-project-id",
        ),
        pytest.param(
            [
                ENDPOINT,
                AUTH,
                "projects:",
                "  - project_id: p1",
                "    endpiont: https://x",
                "    servers: [S1]",
            ],
            "projects[0].endpiont",
            5,
            "did you mean endpoint?",
            id="project-typo",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - S1", "  - id: S2", "    nmae: db"],
            "servers[1].nmae",
            7,
            "did you mean name?",
            id="server-typo",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - [S1]"],
            "servers[0]",
            5,
            "expected a mapping, got a list",
            id="server-list",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - name: db"],
            "servers[0].id",
            5,
            "required but missing",
            id="server-no-id",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - id: S1", "    id: S2"],
            "servers[0].id",
            6,
            "first given on line 5",
            id="dup-server-key",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - 2102313"],
            "servers[0]",
            5,
            "got the integer 2102313",
            id="bare-int-id",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - id: 0123"],
            "servers[0].id",
            5,
            'quote it, "0123", so YAML keeps it as written',
            id="int-id",
        ),
        pytest.param([*HEAD, "servers:", "  - 1.5"], "servers[0]", 5, "got the number 1.5", id="float-id"),
        pytest.param([*HEAD, "servers:", "  - id:"], "servers[0].id", 5, "got nothing", id="null-id"),
        pytest.param([*HEAD, "servers:", "  -"], "servers[0]", 5, "got nothing", id="empty-item"),
        pytest.param(
            [*HEAD, "servers:", "  - {id: S1, name: 42}"],
            "servers[0].name",
            5,
            "expected a string",
            id="name-int",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - {id: S1, tags: [a]}"],
            "servers[0].tags",
            5,
            "expected a mapping",
            id="tags-list",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - id: S1", "    tags:", "      rack: [1, 2]"],
            "servers[0].tags.rack",
            7,
            "expected a value, got a list",
            id="tag-value-list",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - {id: S1, tags: {rack: }}"],
            "servers[0].tags.rack",
            5,
            "got nothing",
            id="tag-value-null",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - {id: S1, tags: {rack: a, rack: b}}"],
            "servers[0].tags.rack",
            5,
            "duplicate key",
            id="dup-tag",
        ),
        pytest.param(
            [*HEAD, "servers:", "  - S1", "  - S2", "  - id: S1"],
            "servers[2]",
            7,
            "server S1 is listed twice in project p1 (first on line 5)",
            id="dup-server",
        ),
        pytest.param(
            [
                ENDPOINT,
                AUTH,
                "projects:",
                "  - {project_id: p1, servers: [S1]}",
                "  - {project_id: p1, servers: [S1]}",
            ],
            "projects[1].servers[0]",
            5,
            "(first on line 4)",
            id="dup-server-across-entries",
        ),
    ],
)
def test_bad_structure(tmp_path, lines, key, line, fragment):
    check(error_for(tmp_path, lines), key, line, fragment)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param('""', "it is empty", id="empty"),
        pytest.param('"a/b"', "it contains a slash", id="slash"),
        pytest.param(r'"a\\b"', "it contains a slash", id="backslash"),
        pytest.param('"."', "it starts with '.'", id="dot"),
        pytest.param('".."', "it contains '..'", id="dotdot"),
        pytest.param('"a..b"', "it contains '..'", id="inner-dotdot"),
        pytest.param('".hidden"', "it starts with '.'", id="leading-dot"),
        pytest.param('"-rf"', "it starts with '-'", id="leading-dash"),
        pytest.param(r'"a\0b"', "control character", id="nul"),
        pytest.param(r'"a\tb"', "control character", id="tab"),
        pytest.param(r'"a\nb"', "control character", id="newline"),
        pytest.param(r'"a\x1bb"', "control character", id="escape"),
        pytest.param(r'"a\x7fb"', "control character", id="delete"),
        pytest.param("A" * 129, "longer than 128 characters", id="too-long"),
    ],
)
def test_server_id_unsafe_as_file_name(tmp_path, value, fragment):
    error = error_for(tmp_path, [*HEAD, "servers:", "  - S0", f"  - id: {value}"])
    check(error, "servers[1].id", 6, fragment)
    assert "file name" in error.hint


# -- endpoint and project_id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        pytest.param("ftp://api.example.com", "must start with https://", id="ftp"),
        pytest.param("api.example.com", "must start with https://", id="no-scheme"),
        pytest.param("localhost:8080", "must start with https://", id="host-port-only"),
        pytest.param("https://", "no host", id="no-host"),
        pytest.param("https://api.example.com/?region=x", "query or fragment", id="query"),
        pytest.param("https://api.example.com/?", "query or fragment", id="empty-query"),
        pytest.param("https://api.example.com/#top", "query or fragment", id="fragment"),
        pytest.param("https://user:secret@api.example.com", "user name or password", id="userinfo"),
        pytest.param("'https://api.example.com/a b'", "spaces", id="space"),
        pytest.param("https://api.example.com:99999", "not a valid URL", id="bad-port"),
        pytest.param("8080", "expected a string, got the integer 8080", id="int"),
        pytest.param("", "expected a string, got nothing", id="null"),
    ],
)
def test_bad_endpoint(tmp_path, endpoint, fragment):
    error = error_for(tmp_path, [PROJECT, AUTH, f"endpoint: {endpoint}", "servers: [S1]"])
    check(error, "endpoint", 3, fragment)
    assert "secret" not in str(error)


def test_endpoint_missing_at_top_level(tmp_path):
    check(
        error_for(tmp_path, [PROJECT, AUTH, "servers: [S1]"]),
        "endpoint",
        None,
        "required but missing",
    )


def test_endpoint_missing_in_a_project_without_a_default(tmp_path):
    lines = [AUTH, "projects:", "  - project_id: p1", "    servers: [S1]"]
    error = error_for(tmp_path, lines)
    check(error, "projects[0].endpoint", 3, "required but missing")
    assert "top level" in error.hint


def test_bad_endpoint_override_in_a_project(tmp_path):
    lines = [
        ENDPOINT,
        AUTH,
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, endpoint: clouddc.example.com, servers: [S2]}",
    ]
    check(error_for(tmp_path, lines), "projects[1].endpoint", 5, "must start with https://")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param('""', "project_id '' is empty", id="empty"),
        pytest.param("p/1", "may hold only letters, digits", id="slash"),
        pytest.param("'p 1'", "may hold only letters, digits", id="space"),
        pytest.param("12345", 'quote it, "12345", so YAML keeps it as written', id="int"),
        pytest.param("[p1]", "expected a string, got a list", id="list"),
    ],
)
def test_bad_project_id(tmp_path, value, fragment):
    error = error_for(tmp_path, [ENDPOINT, f"project_id: {value}", AUTH, "servers: [S1]"])
    check(error, "project_id", 2, fragment)


# -- auth and tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "environ", "key", "fragment"),
    [
        pytest.param("CLOUDDC_TOKEN", ENV, "auth", "expected a mapping, got the string", id="not-mapping"),
        pytest.param("{}", ENV, "auth", "no token given", id="empty-mapping"),
        pytest.param("{token_env: A, token_file: b}", ENV, "auth.token_file", "not both", id="both"),
        pytest.param("{token: abc}", ENV, "auth.token", "did you mean token_", id="typo"),
        pytest.param(
            "{token_env: CLOUDDC_TOKEN}",
            {},
            "auth.token_env",
            "CLOUDDC_TOKEN is not set",
            id="unset",
        ),
        pytest.param(
            "{token_env: CLOUDDC_TOKEN}",
            {"CLOUDDC_TOKEN": " \n"},
            "auth.token_env",
            "is empty",
            id="empty-value",
        ),
        pytest.param(
            "{token_env: CLOUDDC_TOKEN}",
            {"CLOUDDC_TOKEN": "two words"},
            "auth.token_env",
            "more than one word",
            id="value-with-space",
        ),
        pytest.param(
            "{token_env: $CLOUDDC_TOKEN}",
            ENV,
            "auth.token_env",
            "not a valid environment variable name",
            id="dollar",
        ),
        pytest.param("{token_env: ''}", ENV, "auth.token_env", "is empty", id="empty-name"),
        pytest.param("{token_env: 42}", ENV, "auth.token_env", "expected a string", id="int-name"),
        pytest.param(
            "{token_file: missing.token}",
            ENV,
            "auth.token_file",
            "does not exist",
            id="file-missing",
        ),
    ],
)
def test_bad_auth(tmp_path, auth, environ, key, fragment):
    error = error_for(tmp_path, [ENDPOINT, PROJECT, f"auth: {auth}", "servers: [S1]"], environ)
    check(error, key, 3, fragment)
    assert "two words" not in str(error)


def test_no_auth_at_all_leaves_the_credentials_to_the_run(tmp_path):
    [project] = load(tmp_path, [ENDPOINT, PROJECT, "servers: [S1]"], environ={}).projects
    assert project.credentials is None
    assert project.describe_credentials().startswith("looked up at run time: SDK environment")


def test_a_project_without_auth_and_without_a_default_leaves_them_to_the_run(tmp_path):
    lines = [
        ENDPOINT,
        "projects:",
        "  - project_id: p1",
        "    servers: [S1]",
        "  - {project_id: p2, auth: {token_env: CLOUDDC_TOKEN}, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines).projects
    assert p1.credentials is None
    assert p2.credentials == StaticToken(TOKEN, source="$CLOUDDC_TOKEN")


def test_unset_variable_of_a_project_override_names_that_project(tmp_path):
    lines = [
        ENDPOINT,
        AUTH,
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - project_id: p2",
        "    auth: {token_env: AP_TOKEN}",
        "    servers: [S2]",
    ]
    check(error_for(tmp_path, lines), "projects[1].auth.token_env", 6, "AP_TOKEN is not set")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"  \n\n", "is empty", id="blank"),
        pytest.param(b"", "is empty", id="zero-bytes"),
        pytest.param(b"tok-1\ntok-2\n", "more than one word", id="two-lines"),
        pytest.param(b"\xff\xfe", "is not text", id="binary"),
    ],
)
def test_bad_token_file(tmp_path, content, fragment):
    (tmp_path / "token").write_bytes(content)
    error = error_for(tmp_path, [ENDPOINT, PROJECT, "auth: {token_file: token}", "servers: [S1]"], {})
    check(error, "auth.token_file", 3, fragment)
    assert "tok-1" not in str(error)


def test_token_file_that_is_a_directory(tmp_path):
    (tmp_path / "secrets").mkdir()
    error = error_for(tmp_path, [ENDPOINT, PROJECT, "auth: {token_file: secrets}", "servers: [S1]"], {})
    check(error, "auth.token_file", 3, "is a directory")


def test_token_pasted_in_place_of_a_variable_name_is_not_echoed(tmp_path):
    pasted = "MIIZ" + "a1B2c3D4" * 10
    error = error_for(tmp_path, [ENDPOINT, PROJECT, f"auth: {{token_env: {pasted}}}", "servers: [S1]"])
    check(error, "auth.token_env", 3, "not a valid environment variable name")
    assert pasted not in str(error)


# -- collector settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        pytest.param("concurrency: true", "expected a whole number, got the boolean true", id="bool-for-int"),
        pytest.param("concurrency: 0", "must be at least 1, got 0", id="zero-concurrency"),
        pytest.param("concurrency: '8'", "got the string '8'", id="quoted-int"),
        pytest.param("concurrency: 1.5", "got the number 1.5", id="float-for-int"),
        pytest.param("downloads: -2", "must be at least 1", id="negative-downloads"),
        pytest.param("max_archive_bytes: 0", "must be at least 1", id="zero-max-archive"),
        pytest.param(
            "max_archive_bytes: lots",
            "expected a size like 512M or 8G, got the string 'lots'",
            id="size-not-a-size",
        ),
        pytest.param("max_archive_bytes: 1.5", "got the number 1.5", id="size-fraction-of-a-byte"),
        pytest.param("max_archive_bytes: 0K", "must be at least 1, got 0K", id="size-zero-with-unit"),
        pytest.param("rate: 0", "must be a number more than 0", id="zero-rate"),
        pytest.param("rate: -1.5", "must be a number more than 0", id="negative-rate"),
        pytest.param("rate: yes", "expected a number, got the boolean yes", id="bool-for-number"),
        pytest.param("poll_interval: fast", "expected a number", id="text-for-number"),
        pytest.param("export_timeout: .inf", "must be a number more than 0, got .inf", id="infinite"),
        pytest.param("read_timeout: .nan", "must be a number more than 0", id="nan"),
        pytest.param("grace: -1", "must be a number 0 or more", id="negative-grace"),
        pytest.param("log_format: xml", "'xml' is not one of text, json", id="log-format"),
        pytest.param("log_format: jsno", "did you mean json?", id="log-format-typo"),
        pytest.param("progress: 'yes'", "expected true or false, got the string 'yes'", id="quoted-bool"),
        pytest.param("progress: 1", "expected true or false, got the integer 1", id="int-for-bool"),
        pytest.param("concurency: 8", "did you mean concurrency?", id="typo"),
        pytest.param("poll-interval: 2", "did you mean poll_interval?", id="dashes"),
    ],
)
def test_bad_collector_setting(tmp_path, setting, fragment):
    error = error_for(tmp_path, [*HEAD, "servers: [S1]", "collector:", "  # flag defaults", f"  {setting}"])
    check(error, "collector." + setting.partition(":")[0], 7, fragment)


def test_collector_section_not_a_mapping(tmp_path):
    check(
        error_for(tmp_path, [*HEAD, "servers: [S1]", "collector: 64"]),
        "collector",
        5,
        "expected a mapping",
    )


# -- credentials ----------------------------------------------------------------------------------


def test_static_token_never_shows_the_token():
    token = StaticToken(TOKEN, source="$CLOUDDC_TOKEN")
    assert TOKEN not in repr(token)
    assert TOKEN not in str(token)
    assert token.describe() == "token from $CLOUDDC_TOKEN"


def test_static_token_headers():
    token = StaticToken(TOKEN, source="$CLOUDDC_TOKEN")
    headers = asyncio.run(token.headers("GET", "https://api.example.com/v1/x"))
    assert headers == {"X-Auth-Token": TOKEN}


def test_token_from_env_strips_whitespace():
    assert token_from_env("T", {"T": f" {TOKEN}\n"}) == StaticToken(TOKEN, "$T")


def test_token_from_file_strips_whitespace_and_bom(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    assert token_from_file(path) == StaticToken(TOKEN, str(path))


def test_unusable_tokens_raise_without_the_secret(tmp_path):
    with pytest.raises(CredentialsUnavailable) as info:
        token_from_env("T", {"T": "se cret"})
    assert "se cret" not in str(info.value) and info.value.hint
    with pytest.raises(CredentialsUnavailable) as info:
        token_from_file(tmp_path / "absent")
    assert "does not exist" in str(info.value)


# -- every problem at once ------------------------------------------------------------------------


def problems_for(folder: Path, lines: list[str], environ: dict[str, str] = ENV) -> InventoryErrors:
    path = write(folder, lines)
    with pytest.raises(InventoryErrors) as info:
        load_inventory(path, environ)
    return info.value


def test_every_bad_server_and_setting_is_reported_in_one_go_in_file_order(tmp_path):
    error = problems_for(
        tmp_path,
        [
            *HEAD,
            "servers:",
            "  - S1",
            "  - ../x",
            "  - {id: S2, nmae: db}",
            "  - S3",
            "  - S1",
            "collector:",
            "  concurrency: 0",
            "  rate: 10",
            "  grace: soon",
        ],
    )
    where = [(p.key, p.line) for p in error.problems]
    assert where == [
        ("servers[1]", 6),
        ("servers[2].nmae", 7),
        ("servers[4]", 9),
        ("collector.concurrency", 11),
        ("collector.grace", 13),
    ]
    for problem in error.problems:
        check(problem, problem.key, problem.line, "")
    lines = str(error).splitlines()
    assert lines == [str(p) for p in error.problems]
    assert lines[2] == (
        "inventory.yaml:9: servers[4]: server S1 is listed twice in project p1"
        " (first on line 5); remove one of the two entries"
    ).replace("inventory.yaml", str(tmp_path / "inventory.yaml"))
    # The error itself reads as its first problem, for whoever looks at one only.
    assert (error.key, error.line) == ("servers[1]", 6)


def test_problems_in_different_projects_are_all_reported(tmp_path):
    lines = [
        ENDPOINT,
        AUTH,
        "projects:",
        "  - {project_id: p1, endpoint: ftp://x, servers: [S1]}",
        "  - {project_id: 'p 2', servers: [S1, S1]}",
        "  - {project_id: p3, auth: {token: x}, servers: ['-rf']}",
    ]
    where = [(p.key, p.line) for p in problems_for(tmp_path, lines).problems]
    assert where == [
        ("projects[0].endpoint", 4),
        ("projects[1].project_id", 5),
        ("projects[1].servers[1]", 5),
        ("projects[2].auth.token", 6),
        ("projects[2].servers[0]", 6),
    ]


def test_a_broken_default_is_reported_once_not_again_by_each_project_using_it(tmp_path):
    lines = [
        "endpoint: ftp://x",
        "auth: {token: x}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, servers: [S2]}",
    ]
    assert [p.key for p in problems_for(tmp_path, lines).problems] == ["endpoint", "auth.token"]


def test_every_unset_token_variable_is_reported_once_the_file_is_right(tmp_path):
    lines = [
        ENDPOINT,
        "auth: {token_env: TOKEN_A}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, servers: [S2]}",
        "  - {project_id: p3, auth: {token_env: TOKEN_B}, servers: [S3]}",
    ]
    problems = problems_for(tmp_path, lines, environ={}).problems
    assert [(p.key, p.line) for p in problems] == [("auth.token_env", 2), ("projects[2].auth.token_env", 6)]


def test_many_problems_print_twenty_lines_and_a_count(tmp_path):
    error = problems_for(tmp_path, [*HEAD, "servers:", *(f"  - ../s{n}" for n in range(25))])
    assert len(error.problems) == 25
    lines = error.lines()
    assert len(lines) == 21
    assert lines[:20] == [str(p) for p in error.problems[:20]]
    assert lines[20] == "... and 5 more"


def test_sizes_in_the_collector_section_read_like_the_flag(tmp_path):
    for text, value in [
        ("8G", 8 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5GiB", 3 * 512 * 1024**2),
        ("1048576", 1024**2),
        ("'65536'", 65536),
    ]:
        lines = [*HEAD, "servers: [S1]", "collector:", f"  max_archive_bytes: {text}"]
        assert load(tmp_path, lines).settings["max_archive_bytes"] == value, text
