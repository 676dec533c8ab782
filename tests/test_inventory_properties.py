"""The inventory loader on arbitrary input: it loads, or it says what is wrong, and nothing else.

Whatever the file holds (random bytes, YAML-looking token soup, or well-formed YAML with odd
values in the known keys), `load_inventory` returns an `Inventory` or raises `InventoryError`:
never a traceback for a user's typo.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import trustme
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.config.inventory import Inventory, load_inventory
from collector.errors import InventoryError

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=150)  # the rest is conftest's profile

ENVIRON = {
    "CLOUDDC_TOKEN": "t0k3n",
    "EMPTY": "",
    "SPACED": "two words",
    "HUAWEICLOUD_SDK_AK": "AK0",
    "HUAWEICLOUD_SDK_SK": "SK0",
    "PASSWORD": "pass word",
}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each example writes its inventory, next to the token files it may name."""
    folder = tmp_path_factory.mktemp("inventory")
    (folder / "token.txt").write_text("t0k3n\n")
    (folder / "empty.txt").write_text("")
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00")
    (folder / "folder").mkdir()
    trustme.CA().cert_pem.write_to_path(str(folder / "ca.pem"))
    (folder / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\n!\n-----END CERTIFICATE-----\n")
    return folder / "inventory.yaml"


def check(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        loaded = load_inventory(path, ENVIRON)
    except InventoryError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert isinstance(loaded, Inventory)


# -- YAML-looking token soup -------------------------------------------------------------------

_TOKENS = [
    *":-[]{},'\"#&*!|>%@`?\n \t\\",
    "endpoint",
    "auth",
    "token_env",
    "token_file",
    "project_id",
    "servers",
    "projects",
    "collector",
    "id",
    "name",
    "tags",
    "concurrency",
    "rate",
    "grace",
    "log_format",
    "progress",
    "max_archive_bytes",
    "CLOUDDC_TOKEN",
    "token.txt",
    "folder",
    "http://h",
    "region",
    "cn-east-3",
    "tls",
    "ca_bundle",
    "verify",
    "ca.pem",
    "discover",
    "aksk",
    "ak_env",
    "profile",
    "iam",
    "domain",
    "user",
    "password_env",
    "password_file",
    "pod_identity",
    "metadata",
    "HUAWEICLOUD_SDK_AK",
    "PASSWORD",
    "{}",
    "db-*",
    "https://api.example.com",
    "S1",
    "p1",
    "!!python/object:os.system",
    "!!int",
    "!!str",
    "!!binary",
    "!!float",
    "!!timestamp",
    "<<",
    "~",
    "null",
    "true",
    "1e999",
    ".nan",
    "-.inf",
    "0x",
    "0b1",
    "0o7",
    "1_000",
    "1:30",
    "2001-12-14",
    "&a",
    "*a",
    "---",
    "...",
    "\\0",
    "\\x1b",
    "\\ud800",
    "\\u202e",
    "\\U0010ffff",
    "\ufeff",
    "\x85",
    "\u2028",
    "9" * 50,
]
_TOP_LEVEL = "endpoint: http://h\nauth: {token_env: C}\nproject_id: p\nservers: [S1]\n"
_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=60).map("".join)

# -- well-formed YAML with odd values in the known keys ----------------------------------------

_ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "S1",
            "S2",
            "-S",
            ".S",
            "a/b",
            "..",
            "a\x00b",
            "a\u202eb",
            "\ud800",
            "x" * 300,
            "€" * 90,
            "token.txt",
            "empty.txt",
            "binary.txt",
            "folder",
            "missing.txt",
            "~",
            "~nobody-here\x00",
            "CLOUDDC_TOKEN",
            "EMPTY",
            "SPACED",
            "1BAD",
            "https://api.example.com",
            "http://h:99999",
            "json",
            "text",
            "cn-east-3",
            "CN-EAST-3",
            "ca.pem",
            "junk.pem",
            "db-*",
            "[",
            "https://iam.example.com",
            "HUAWEICLOUD_SDK_AK",
            "PASSWORD",
        ]
    ),
    st.dates(min_value=dt.date(1, 1, 1)),
)
_ODD_VALUES = st.recursive(
    _ODD_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


_DELETE = object()
_SETTING_NAMES = [
    "concurrency",
    "downloads",
    "rate",
    "max_rate",
    "poll_interval",
    "export_timeout",
    "read_timeout",
    "grace",
    "max_archive_bytes",
    "log_format",
    "progress",
    "bogus",
]


def _valid() -> dict:
    """An inventory that loads: each example then spoils a few of its values."""
    return {
        "endpoint": "https://api.example.com",
        "auth": {"token_env": "CLOUDDC_TOKEN"},
        "project_id": "p1",
        "servers": ["S1", {"id": "S2", "name": "n", "tags": {"rack": "A1"}}],
        "collector": {"rate": 5, "log_format": "json"},
        "region": "cn-east-3",
        "tls": {"ca_bundle": "ca.pem"},
        "discover": {"name": "S*", "tags": {"rack": "A*"}},
    }


_PLACES = [
    ("endpoint",),
    ("auth",),
    ("auth", "token_env"),
    ("auth", "token_file"),
    ("project_id",),
    ("servers",),
    ("servers", 0),
    ("servers", 1),
    ("servers", 1, "id"),
    ("servers", 1, "name"),
    ("servers", 1, "tags"),
    ("servers", 1, "tags", "rack"),
    ("collector",),
    ("projects",),
    ("region",),
    ("tls",),
    ("tls", "ca_bundle"),
    ("tls", "verify"),
    ("discover",),
    ("discover", "name"),
    ("discover", "tags"),
    ("discover", "tags", "rack"),
    *(("collector", name) for name in _SETTING_NAMES),
]
_EDIT_VALUES = st.one_of(_ODD_SCALARS, _ODD_SCALARS, _ODD_VALUES, st.just(_DELETE))
_NASTY_PATHS = st.sampled_from(
    [
        "a\x00b",
        "~\x00",
        "\ud800",
        "\udcff",
        "~",
        "~root",
        "/",
        ".",
        "..",
        "folder",
        "missing.txt",
        "token.txt",
        "binary.txt",
        "empty.txt",
        "x" * 5000,
        "a\nb",
        "\u202etxt.exe",
    ]
) | st.text(max_size=12)
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.floats(allow_nan=True, allow_infinity=True),
)
# Whole auth entries of every kind, with odd options: each replaces the auth given.
_OPTION_NAMES = st.sampled_from(
    [
        "ak_env",
        "sk_env",
        "security_token_env",
        "profile",
        "endpoint",
        "domain",
        "user",
        "password_env",
        "password_file",
        "bogus",
    ]
)
_AUTHS = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"aksk": _ODD_VALUES, "iam": _ODD_VALUES, "pod_identity": _ODD_VALUES, "metadata": _ODD_VALUES}
    ),
    st.builds(
        lambda kind, options: {kind: options},
        st.sampled_from(["aksk", "iam", "pod_identity", "metadata"]),
        st.dictionaries(_OPTION_NAMES, _ODD_SCALARS | _NASTY_PATHS, max_size=4),
    ),
    st.builds(
        lambda path, env: {"iam": {"domain": "d", "user": "u", "password_file": path, **env}},
        _NASTY_PATHS,
        st.sampled_from([{}, {"password_env": "PASSWORD"}]),
    ),
)
_EDITS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(_PLACES), _EDIT_VALUES),
        st.tuples(st.just(("auth", "token_file")), _NASTY_PATHS),
        st.tuples(st.just(("auth",)), _AUTHS),
        st.tuples(st.just(("tls", "ca_bundle")), _NASTY_PATHS),
        st.tuples(st.sampled_from([("collector", name) for name in _SETTING_NAMES]), _NUMBERS),
    ),
    min_size=1,
    max_size=3,
)


def _spoiled(edits: list[tuple[tuple, object]], as_projects: bool) -> dict:
    """`_valid()` with each (place, value) edit made where the place still exists."""
    document = _valid()
    for place, edit in edits:
        *steps, last = place
        value = edit
        if (*steps, last) == ("auth", "token_file"):
            steps, last, value = [], "auth", {"token_file": edit}  # one token source, not two
        parent = document
        for step in steps:
            parent = _child(parent, step)
        if isinstance(parent, dict) and value is _DELETE:
            parent.pop(last, None)
        elif isinstance(parent, dict) or (isinstance(parent, list) and _child(parent, last) is not None):
            parent[last] = None if value is _DELETE else value
    if as_projects:
        moved = ("project_id", "servers", "region", "tls", "discover")
        project = {key: document.pop(key) for key in moved if key in document}
        document["projects"] = [project, {"project_id": "p2", "servers": ["S1"]}]
    return document


def _child(parent: object, step: str | int) -> object:
    if isinstance(parent, dict):
        return parent.get(step)
    if isinstance(parent, list) and isinstance(step, int) and step < len(parent):
        return parent[step]
    return None


_DOCUMENTS = st.builds(_spoiled, _EDITS, st.booleans())


def _dumped(value: object) -> bytes:
    """As YAML, surrogates and all: PyYAML writes a lone surrogate as a `\\ud800` escape."""
    return yaml.dump(value, allow_unicode=False, default_flow_style=None, sort_keys=False).encode()


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_load_or_raise_only_inventory_error(inventory, data):
    check(inventory, data)


@PROPERTY
@given(_SOUP)
@example('projects: [{project_id: p, endpoint: http://h, auth: {token_file: "a\\0b"}, servers: [S1]}]')
@example('endpoint: http://h\nauth: {token_file: "\\ud800"}\nproject_id: p\nservers: [S1]')
@example('endpoint: http://h\nauth: {token_file: "~\\0"}\nproject_id: p\nservers: [S1]')
@example('endpoint: http://h\ntls: {ca_bundle: "~\\0"}\nproject_id: p\nservers: [S1]')
@example(
    'region: cn-east-3\nauth: {iam: {domain: d, user: u, password_file: "\\ud800"}}\nproject_id: p\ndiscover: true'
)
@example('region: cn-east-3\nauth: {aksk: {profile: "~nobody-here/x"}}\nproject_id: p\ndiscover: {tags: {a: b}}')
@example(_TOP_LEVEL + "collector: {rate: 0x" + "f" * 300 + "}")  # past float's range
@example(_TOP_LEVEL + "collector: {grace: 1" + "0" * 5000 + "}")  # past int()'s 4300 digits
def test_yaml_token_soup_loads_or_raises_only_inventory_error(inventory, text):
    check(inventory, text.encode("utf-8", "surrogatepass"))


@PROPERTY
@given(_DOCUMENTS | _ODD_VALUES)
def test_odd_values_in_known_keys_load_or_raise_only_inventory_error(inventory, document):
    check(inventory, _dumped(document))
