"""The inventory's credentials, regions, TLS settings and discovery: what loads into what, and
where each mistake is reported.

Each inventory is a list of YAML lines, so the line an error must name is easy to count.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
import yarl
from aiohttp import web

from collector.auth import AkSk, IamPassword, Request, StaticToken
from collector.clouddc.api import CloudDC
from collector.config.inventory import DiscoverSpec, Inventory, Project, load_inventory
from collector.control.throttle import RateLimiter, RetryPolicy
from collector.errors import InventoryError, InventoryErrors, TLSFailed

ENDPOINT = "endpoint: https://api.example.com"
PROJECT = "project_id: p1"
SERVERS = "servers: [S1]"

AK, SK, STS = "AKVISIBLEONLYHERE01", "sk-secret-value-02", "sts-secret-value-03"
PASSWORD = "pw secret value 04"
TOKEN = "tok-secret-value-05"
SDK_KEYS = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}


def write(folder: Path, lines: list[str], name: str = "inventory.yaml") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(folder: Path, lines: list[str], environ: dict[str, str] | None = None) -> Inventory:
    return load_inventory(write(folder, lines), {} if environ is None else environ)


def only(folder: Path, lines: list[str], environ: dict[str, str] | None = None) -> Project:
    [project] = load(folder, lines, environ).projects
    return project


def error_for(folder: Path, lines: list[str], environ: dict[str, str] | None = None) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(folder, lines, environ)
    return info.value


def check(error: InventoryError, key: str | None, line: int | None, fragment: str) -> None:
    """One problem, naming file, line and key, in that order, with the fragment and a hint."""
    assert not isinstance(error, InventoryErrors), str(error)
    message = str(error)
    assert "\n" not in message
    assert (error.key, error.line) == (key, line), message
    where = "inventory.yaml" + (f":{line}" if line is not None else "") + (f": {key}" if key else "")
    assert where + ":" in message
    assert fragment in message
    assert error.hint and message.endswith(error.hint)


async def authorization(credentials: object) -> dict[str, str]:
    """The headers `credentials` put on a request: proves which secret it holds."""
    request = Request("GET", yarl.URL("https://api.example.com/v1/p1/x"), {"Host": "api.example.com"})
    await credentials.apply(request)  # type: ignore[attr-defined]
    return request.headers


# -- every kind of auth ---------------------------------------------------------------------------


def test_token_env_and_token_file_load_as_before(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    lines = [
        ENDPOINT,
        "auth: {token_file: token}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, auth: {token_env: T}, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines, {"T": TOKEN}).projects
    assert p1.credentials == StaticToken(TOKEN, source=str(tmp_path / "token"))
    assert p2.credentials == StaticToken(TOKEN, source="$T")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "auth", ["auth: {aksk: {}}", "auth: {aksk: }", "auth:\n  aksk:"], ids=["empty", "null", "bare"]
)
async def test_aksk_without_options_reads_the_sdk_variables(tmp_path, auth):
    project = only(tmp_path, [ENDPOINT, PROJECT, auth, SERVERS], SDK_KEYS)
    assert isinstance(project.credentials, AkSk)
    assert project.credentials.describe() == "AK/SK from $HUAWEICLOUD_SDK_AK"
    headers = await authorization(project.credentials)
    assert f"Access={AK}," in headers["Authorization"]
    assert "X-Security-Token" not in headers


@pytest.mark.anyio
async def test_aksk_without_options_takes_the_sdk_security_token_when_set(tmp_path):
    environ = {**SDK_KEYS, "HUAWEICLOUD_SDK_SECURITY_TOKEN": STS}
    project = only(tmp_path, [ENDPOINT, PROJECT, "auth: {aksk: {}}", SERVERS], environ)
    assert project.credentials.describe() == "temporary AK/SK from $HUAWEICLOUD_SDK_AK"
    assert (await authorization(project.credentials))["X-Security-Token"] == STS


@pytest.mark.anyio
async def test_aksk_from_named_variables(tmp_path):
    auth = "auth: {aksk: {ak_env: MY_AK, sk_env: MY_SK, security_token_env: MY_STS}}"
    environ = {"MY_AK": AK, "MY_SK": SK, "MY_STS": STS, "HUAWEICLOUD_SDK_AK": "other"}
    project = only(tmp_path, [ENDPOINT, PROJECT, auth, SERVERS], environ)
    assert project.credentials.describe() == "temporary AK/SK from $MY_AK"
    headers = await authorization(project.credentials)
    assert f"Access={AK}," in headers["Authorization"] and headers["X-Security-Token"] == STS


@pytest.mark.anyio
async def test_aksk_from_a_profile_of_the_sdk_credentials_file(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[basic]\nak = nope\nsk = nope\n\n[ops]\nak = {AK}\nsk = {SK}\n")
    environ = {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(credentials)}
    project = only(tmp_path, [ENDPOINT, PROJECT, "auth: {aksk: {profile: ops}}", SERVERS], environ)
    assert project.credentials.describe() == f"AK/SK from [ops] of {credentials}"
    assert f"Access={AK}," in (await authorization(project.credentials))["Authorization"]


def test_iam_with_a_password_variable_and_its_endpoint_from_the_region(tmp_path):
    lines = ["region: cn-east-3", PROJECT, "auth: {iam: {domain: acme, user: bob, password_env: IAM_PW}}", SERVERS]
    project = only(tmp_path, lines, {"IAM_PW": PASSWORD})
    assert isinstance(project.credentials, IamPassword)
    assert project.credentials.describe() == (
        "IAM token of user bob (account acme) from https://iam.cn-east-3.myhuaweicloud.com, password from $IAM_PW"
    )


def test_iam_with_a_password_file_relative_to_the_inventory_and_its_own_endpoint(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text(PASSWORD + "\n")
    auth = [
        "auth:",
        "  iam:",
        "    endpoint: https://iam.example.com",
        "    domain: acme",
        "    user: bob",
        "    password_file: secrets/pw",
    ]
    project = only(tmp_path, ["region: cn-east-3", PROJECT, *auth, SERVERS])
    assert str(project.credentials.endpoint) == "https://iam.example.com"
    assert project.credentials.describe().endswith(f"password from {tmp_path / 'secrets' / 'pw'}")


def test_iam_endpoint_follows_the_region_in_the_endpoints_host_name(tmp_path):
    lines = [
        "endpoint: https://clouddc.ap-southeast-1.myhuaweicloud.com",
        PROJECT,
        "auth: {iam: {domain: acme, user: bob, password_env: IAM_PW}}",
        SERVERS,
    ]
    project = only(tmp_path, lines, {"IAM_PW": PASSWORD})
    assert project.region == "ap-southeast-1"
    assert str(project.credentials.endpoint) == "https://iam.ap-southeast-1.myhuaweicloud.com"


def test_pod_identity_from_the_environment_cce_sets(tmp_path):
    (tmp_path / "sa-token").write_text("eyJ.sa.token\n")
    environ = {
        "HC_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/v1/credentials",
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tmp_path / "sa-token"),
    }
    project = only(tmp_path, [ENDPOINT, PROJECT, "auth: {pod_identity: {}}", SERVERS], environ)
    assert isinstance(project.credentials, AkSk)
    assert project.credentials.describe() == "temporary AK/SK from CCE pod identity (169.254.170.2)"


@pytest.mark.parametrize(
    ("auth", "described"),
    [
        ("{metadata: {}}", "temporary AK/SK from the ECS metadata service (the server's agency)"),
        ("{metadata: {endpoint: 'http://127.0.0.1:9'}}", "at http://127.0.0.1:9"),
    ],
    ids=["default", "own-endpoint"],
)
def test_metadata_needs_nothing_until_the_run(tmp_path, auth, described):
    project = only(tmp_path, [ENDPOINT, PROJECT, f"auth: {auth}", SERVERS])
    assert isinstance(project.credentials, AkSk)
    assert described in project.credentials.describe()


# -- sharing and overrides ------------------------------------------------------------------------


def test_one_provider_per_entry_shared_by_the_projects_using_it(tmp_path):
    lines = [
        ENDPOINT,
        "auth: {aksk: {}}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, servers: [S2]}",
        "  - {project_id: p3, auth: {aksk: {}}, servers: [S3]}",
        "  - {project_id: p4, auth: {aksk: {ak_env: A2, sk_env: S2}}, servers: [S4]}",
    ]
    p1, p2, p3, p4 = load(tmp_path, lines, {**SDK_KEYS, "A2": "ak2", "S2": "sk2"}).projects
    assert p1.credentials is p2.credentials is p3.credentials
    assert p4.credentials is not p1.credentials
    assert p4.credentials.describe() == "AK/SK from $A2"


def test_iam_without_its_own_endpoint_gets_one_provider_per_region(tmp_path):
    lines = [
        "region: cn-east-3",
        "auth: {iam: {domain: acme, user: bob, password_env: IAM_PW}}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, servers: [S2]}",
        "  - {project_id: p3, region: cn-north-4, servers: [S3]}",
    ]
    p1, p2, p3 = load(tmp_path, lines, {"IAM_PW": PASSWORD}).projects
    assert p1.credentials is p2.credentials
    assert str(p3.credentials.endpoint) == "https://iam.cn-north-4.myhuaweicloud.com"
    assert str(p1.credentials.endpoint) == "https://iam.cn-east-3.myhuaweicloud.com"


def test_iam_with_its_own_endpoint_is_shared_across_regions(tmp_path):
    lines = [
        "region: cn-east-3",
        "auth: {iam: {endpoint: 'https://iam.example.com', domain: acme, user: bob, password_env: IAM_PW}}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, region: cn-north-4, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines, {"IAM_PW": PASSWORD}).projects
    assert p1.credentials is p2.credentials


def test_projects_without_auth_anywhere_look_them_up_at_run_time(tmp_path):
    lines = [
        ENDPOINT,
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, auth: {token_env: T}, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines, {"T": TOKEN}).projects
    assert p1.credentials is None
    assert p1.describe_credentials() == (
        "looked up at run time: SDK environment, credentials file, pod identity, ECS metadata"
    )
    assert p2.describe_credentials() == "token from $T"


def test_no_auth_reads_no_environment_at_load_time(tmp_path):
    """Nothing set, no credentials file, not in a pod: still loads; the run decides."""
    assert only(tmp_path, [ENDPOINT, PROJECT, SERVERS], {}).credentials is None


# -- auth mistakes, each on its own key and line --------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "environ", "key", "line", "fragment"),
    [
        pytest.param(["auth: {akskk: {}}"], {}, "auth.akskk", 3, "did you mean aksk?", id="kind-typo"),
        pytest.param(["auth: {aksk: {}, iam: {}}"], {}, "auth.iam", 3, "give aksk or iam, not both", id="two-kinds"),
        pytest.param(["auth: {}"], {}, "auth", 3, "no token given", id="none"),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: A", "    sk_evn: S"],
            {},
            "auth.aksk.sk_evn",
            6,
            "did you mean sk_env?",
            id="option-typo",
        ),
        pytest.param(
            ["auth:", "  pod_identity:", "    uri: http://x"],
            {},
            "auth.pod_identity.uri",
            5,
            "unknown key",
            id="pod-identity-takes-no-options",
        ),
        pytest.param(["auth: {aksk: [A, B]}"], {}, "auth.aksk", 3, "expected a mapping, got a list", id="aksk-list"),
        pytest.param(["auth: {aksk: env}"], {}, "auth.aksk", 3, "expected a mapping, got the string", id="aksk-str"),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: 42"], {}, "auth.aksk.ak_env", 5, "expected a string", id="option-int"
        ),
        pytest.param(["auth:", "  aksk:", "    ak_env: ' '"], {}, "auth.aksk.ak_env", 5, "is empty", id="option-blank"),
        pytest.param(["auth:", "  aksk:", "    ak_env:"], {}, "auth.aksk.ak_env", 5, "got nothing", id="option-null"),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: A", "    sk_env: S"],
            {"A": AK},
            "auth.aksk.sk_env",
            6,
            "environment variable S is not set",
            id="sk-unset",
        ),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: A", "    sk_env: S"],
            {"A": AK, "S": "two words"},
            "auth.aksk.sk_env",
            6,
            "more than one word",
            id="sk-two-words",
        ),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: A"], {}, "auth.aksk.sk_env", 4, "sk_env is missing", id="sk-env-missing"
        ),
        pytest.param(
            ["auth:", "  aksk: {}"],
            {},
            "auth.aksk.ak_env",
            4,
            "HUAWEICLOUD_SDK_AK is not set",
            id="sdk-variables-unset",
        ),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: $A", "    sk_env: S"],
            {},
            "auth.aksk.ak_env",
            5,
            "not a valid environment variable name",
            id="dollar",
        ),
        pytest.param(
            ["auth:", "  aksk:", "    ak_env: A", "    sk_env: S", "    profile: ops"],
            {},
            "auth.aksk.profile",
            7,
            "cannot be combined",
            id="profile-and-variables",
        ),
        pytest.param(
            ["auth:", "  aksk:", "    profile: ops"],
            {},
            "auth.aksk.profile",
            5,
            "no credentials file",
            id="profile-without-home",
        ),
        pytest.param(
            ["auth:", "  iam:", "    user: bob", "    password_env: P"],
            {"P": PASSWORD},
            "auth.iam.domain",
            4,
            "domain is missing",
            id="iam-no-domain",
        ),
        pytest.param(
            ["auth:", "  iam:", "    domain: acme", "    user: bob"],
            {},
            "auth.iam.password_env",
            4,
            "exactly one of password_env and password_file",
            id="iam-no-password",
        ),
        pytest.param(
            ["auth:", "  iam:", "    domain: acme", "    user: bob", "    password_env: P"],
            {},
            "auth.iam.password_env",
            7,
            "environment variable P is not set",
            id="iam-password-unset",
        ),
        pytest.param(
            ["auth:", "  iam:", "    domain: acme", "    user: bob", "    password_file: pw"],
            {},
            "auth.iam.password_file",
            7,
            "does not exist",
            id="iam-password-file-missing",
        ),
        pytest.param(
            [
                "auth:",
                "  iam:",
                "    endpoint: http://iam.example.com",
                "    domain: acme",
                "    user: bob",
                "    password_env: P",
            ],
            {"P": PASSWORD},
            "auth.iam.endpoint",
            5,
            "must be https",
            id="iam-http-endpoint",
        ),
        pytest.param(
            ["auth:", "  pod_identity: {}"],
            {},
            "auth.pod_identity",
            4,
            "not a pod with CCE pod identity",
            id="not-a-pod",
        ),
        pytest.param(
            ["auth:", "  metadata:", "    endpoint: ftp://x"],
            {},
            "auth.metadata.endpoint",
            5,
            "not an http(s) URL",
            id="metadata-endpoint",
        ),
        pytest.param(
            ["auth:", "  iam:", "    domain: acme", "    user: bob", '    password_file: "a\\0b"'],
            {},
            "auth.iam.password_file",
            7,
            "not a usable path",
            id="nul-in-path",
        ),
    ],
)
def test_bad_auth_points_at_the_option(tmp_path, auth, environ, key, line, fragment):
    check(error_for(tmp_path, [ENDPOINT, PROJECT, *auth, SERVERS], environ), key, line, fragment)


def test_iam_without_an_endpoint_or_a_region_says_either_will_do(tmp_path):
    lines = [ENDPOINT, PROJECT, "auth:", "  iam: {domain: acme, user: bob, password_env: P}", SERVERS]
    error = error_for(tmp_path, lines, {"P": PASSWORD})
    check(error, "auth.iam.endpoint", 4, "no IAM endpoint, and no region")
    assert "region" in error.hint


def test_every_project_with_a_broken_auth_is_reported_and_a_shared_one_once(tmp_path):
    lines = [
        "region: cn-east-3",
        "auth: {iam: {domain: acme, user: bob, password_env: P}}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, region: cn-north-4, servers: [S2]}",
        "  - {project_id: p3, auth: {aksk: {ak_env: A, sk_env: S}}, servers: [S3]}",
    ]
    with pytest.raises(InventoryErrors) as info:
        load(tmp_path, lines, {})
    assert [(p.key, p.line) for p in info.value.problems] == [
        ("auth.iam.password_env", 2),
        ("projects[2].auth.aksk.ak_env", 6),
    ]


# -- secrets --------------------------------------------------------------------------------------

SECRETS = (AK, SK, STS, PASSWORD, TOKEN, "two words secret 06", "line-one-secret-07")


@pytest.mark.parametrize(
    ("auth", "environ", "files"),
    [
        pytest.param("{token_env: T}", {"T": "two words secret 06"}, {}, id="token-two-words"),
        pytest.param(
            "{aksk: {}}", {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": "two words secret 06"}, {}, id="sk-two-words"
        ),
        pytest.param(
            "{aksk: {}}",
            {**SDK_KEYS, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "two words secret 06"},
            {},
            id="security-token-two-words",
        ),
        pytest.param("{aksk: {ak_env: A, sk_env: S}}", {"A": AK}, {}, id="sk-unset"),
        pytest.param(
            "{iam: {domain: d, user: u, password_file: pw}}",
            {},
            {"pw": f"{PASSWORD}\nline-one-secret-07\n"},
            id="password-two-lines",
        ),
        pytest.param(
            "{iam: {domain: d, user: u, password_env: P}}",
            {"P": f"{PASSWORD}\x07"},
            {},
            id="password-control-character",
        ),
        pytest.param(
            "{aksk: {profile: basic}}",
            {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": "creds"},
            {"creds": f"[basic]\nak = {AK}\nsk = two words secret 06\nline-one-secret-07\n"},
            id="profile-bad-line",
        ),
        pytest.param("{token_file: tok}", {}, {"tok": f"{TOKEN}\nline-one-secret-07\n"}, id="token-file-two-lines"),
    ],
)
def test_no_secret_in_any_error(tmp_path, monkeypatch, auth, environ, files):
    monkeypatch.chdir(tmp_path)  # the credentials file's path in `environ` is relative
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    lines = ["region: cn-east-3", PROJECT, f"auth: {auth}", SERVERS]
    error = error_for(tmp_path, lines, environ)
    assert error.key is not None and error.key.startswith("auth.")
    shown = f"{error} {error.hint} {error!r}"
    for secret in SECRETS:
        assert secret not in shown


@pytest.mark.anyio
async def test_no_secret_in_the_repr_of_a_loaded_inventory(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "tok").write_text(TOKEN)
    lines = [
        "region: cn-east-3",
        "projects:",
        "  - {project_id: p1, auth: {aksk: {security_token_env: STS, ak_env: A, sk_env: S}}, servers: [S1]}",
        "  - {project_id: p2, auth: {iam: {domain: d, user: u, password_file: pw}}, servers: [S2]}",
        "  - {project_id: p3, auth: {iam: {domain: d, user: u, password_env: P}}, servers: [S3]}",
        "  - {project_id: p4, auth: {token_file: tok}, servers: [S4]}",
        "  - {project_id: p5, auth: {token_env: T}, servers: [S5]}",
        "  - {project_id: p6, servers: [S6]}",
    ]
    inventory = load(tmp_path, lines, {"A": AK, "S": SK, "STS": STS, "P": PASSWORD, "T": TOKEN})
    await authorization(inventory.projects[0].credentials)  # keys in use, still not shown
    shown = repr(inventory) + "".join(project.describe_credentials() for project in inventory.projects)
    for secret in SECRETS:
        assert secret not in shown
    assert "p6" in shown  # the repr is not empty


# -- region and endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "own", "endpoint", "region"),
    [
        pytest.param(
            ["region: cn-east-3"], [], "https://clouddc.cn-east-3.myhuaweicloud.com", "cn-east-3", id="top-region"
        ),
        pytest.param(
            [],
            ["    region: la-south-2"],
            "https://clouddc.la-south-2.myhuaweicloud.com",
            "la-south-2",
            id="own-region",
        ),
        pytest.param(
            ["region: cn-east-3", "endpoint: https://proxy.example.com"],
            [],
            "https://proxy.example.com",
            "cn-east-3",
            id="top-endpoint-wins-over-top-region",
        ),
        pytest.param(
            ["endpoint: https://clouddc.cn-east-3.myhuaweicloud.com"],
            ["    region: cn-north-4"],
            "https://clouddc.cn-north-4.myhuaweicloud.com",
            "cn-north-4",
            id="own-region-wins-over-top-endpoint",
        ),
        pytest.param(
            ["region: cn-east-3"],
            ["    endpoint: http://127.0.0.1:8080"],
            "http://127.0.0.1:8080",
            "cn-east-3",
            id="own-endpoint-wins-region-from-top",
        ),
        pytest.param(
            ["region: cn-east-3"],
            ["    endpoint: https://clouddc.ap-southeast-1.myhuaweicloud.com"],
            "https://clouddc.ap-southeast-1.myhuaweicloud.com",
            "ap-southeast-1",
            id="own-endpoint-names-its-region",
        ),
        pytest.param(
            ["endpoint: https://clouddc.cn-east-3.myhuaweicloud.com"],
            ["    endpoint: https://own.example.com", "    region: me-east-1"],
            "https://own.example.com",
            "me-east-1",
            id="own-endpoint-wins-over-own-region",
        ),
        pytest.param(["endpoint: https://api.example.com"], [], "https://api.example.com", None, id="no-region"),
        pytest.param(
            ["region: xx-unknown-99"],
            [],
            "https://clouddc.xx-unknown-99.myhuaweicloud.com",
            "xx-unknown-99",
            id="unknown-region-is-fine",
        ),
    ],
)
def test_endpoint_and_region_from_the_nearest_level(tmp_path, top, own, endpoint, region):
    lines = [*top, "projects:", "  - project_id: p1", *own, "    servers: [S1]"]
    project = only(tmp_path, lines)
    assert (project.endpoint, project.region) == (endpoint, region)


def test_region_at_the_top_level_of_a_single_project(tmp_path):
    project = only(tmp_path, ["region: ap-southeast-3", PROJECT, SERVERS])
    assert project.endpoint == "https://clouddc.ap-southeast-3.myhuaweicloud.com"
    assert project.region == "ap-southeast-3"


@pytest.mark.parametrize(
    ("value", "fragment", "hint"),
    [
        pytest.param("CN-East-3", "is not a region's ID", "like cn-east-3", id="capitals"),
        pytest.param("cn_east_3", "is not a region's ID", "like cn-east-3", id="underscores"),
        pytest.param("cn-east", "is not a region's ID", "like cn-east-3", id="no-number"),
        pytest.param("'https://clouddc.cn-east-3.myhuaweicloud.com'", "is not a region's ID", "region's ID", id="url"),
        pytest.param("3", "expected a string", "quote it", id="int"),
    ],
)
def test_malformed_region(tmp_path, value, fragment, hint):
    error = error_for(tmp_path, [PROJECT, SERVERS, f"region: {value}"])
    check(error, "region", 3, fragment)
    assert hint in error.hint


def test_region_contradicting_the_endpoint_beside_it(tmp_path):
    lines = [
        "projects:",
        "  - project_id: p1",
        "    endpoint: https://clouddc.cn-east-3.myhuaweicloud.com",
        "    region: cn-north-4",
        "    servers: [S1]",
    ]
    check(error_for(tmp_path, lines), "projects[0].region", 4, "is not the region of the endpoint beside it")


def test_neither_endpoint_nor_region_names_both_in_the_hint(tmp_path):
    error = error_for(tmp_path, ["projects:", "  - {project_id: p1, servers: [S1]}"])
    check(error, "projects[0].endpoint", 2, "required but missing")
    assert "region: cn-east-3" in error.hint


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def ca_file(folder: Path, ca: trustme.CA, name: str = "ca.pem") -> Path:
    path = folder / name
    ca.cert_pem.write_to_path(str(path))
    return path


def test_tls_defaults_to_verifying_against_the_system(tmp_path):
    project = only(tmp_path, [ENDPOINT, PROJECT, SERVERS])
    assert (project.ssl, project.tls_verify) == (True, True)


def test_ca_bundle_is_relative_to_the_inventory_and_shared(tmp_path, ca):
    (tmp_path / "certs").mkdir()
    ca_file(tmp_path / "certs", ca)
    lines = [
        ENDPOINT,
        "tls: {ca_bundle: certs/ca.pem}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, tls: {ca_bundle: certs/ca.pem}, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines).projects
    assert isinstance(p1.ssl, ssl.SSLContext) and p1.tls_verify
    assert p1.ssl is p2.ssl
    assert p1.ssl.verify_mode == ssl.CERT_REQUIRED and p1.ssl.check_hostname


def test_ca_bundle_with_a_tilde_expands(tmp_path, ca, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ca_file(tmp_path, ca)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = only(elsewhere, [ENDPOINT, PROJECT, "tls: {ca_bundle: ~/ca.pem}", SERVERS])
    assert isinstance(project.ssl, ssl.SSLContext)


def test_a_projects_tls_replaces_the_top_levels_wholesale(tmp_path, ca):
    ca_file(tmp_path, ca)
    lines = [
        ENDPOINT,
        "tls: {ca_bundle: ca.pem}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, tls: {verify: false}, servers: [S2]}",
        "  - {project_id: p3, tls: {}, servers: [S3]}",
        "  - {project_id: p4, tls: , servers: [S4]}",
    ]
    p1, p2, p3, p4 = load(tmp_path, lines).projects
    assert isinstance(p1.ssl, ssl.SSLContext) and p1.tls_verify
    assert (p2.ssl, p2.tls_verify) == (False, False)
    assert (p3.ssl, p3.tls_verify) == (True, True)
    assert p4.ssl is p1.ssl  # empty counts as absent: the top level's


def test_verify_false_at_the_top_level_and_a_project_verifying_again(tmp_path):
    lines = [
        ENDPOINT,
        "tls: {verify: false}",
        "projects:",
        "  - {project_id: p1, servers: [S1]}",
        "  - {project_id: p2, tls: {verify: true}, servers: [S2]}",
    ]
    p1, p2 = load(tmp_path, lines).projects
    assert (p1.ssl, p1.tls_verify, p2.ssl, p2.tls_verify) == (False, False, True, True)


@pytest.mark.parametrize(
    ("tls", "key", "fragment"),
    [
        pytest.param("{ca_bundle: missing.pem}", "tls.ca_bundle", "does not exist", id="missing"),
        pytest.param("{ca_bundle: folder}", "tls.ca_bundle", "is a directory", id="directory"),
        pytest.param("{ca_bundle: empty.pem}", "tls.ca_bundle", "holds no usable PEM certificate", id="empty"),
        pytest.param("{ca_bundle: junk.pem}", "tls.ca_bundle", "holds no usable PEM certificate", id="not-pem"),
        pytest.param("{ca_bundle: ''}", "tls.ca_bundle", "is empty", id="empty-path"),
        pytest.param("{ca_bundle: 42}", "tls.ca_bundle", "expected a string", id="int-path"),
        pytest.param("{verify: 'no'}", "tls.verify", "expected true or false", id="verify-string"),
        pytest.param("{verfiy: false}", "tls.verfiy", "did you mean verify?", id="typo"),
        pytest.param("{ca_bundle: ca.pem, verify: false}", "tls.verify", "leaves ca_bundle unused", id="both"),
        pytest.param("insecure", "tls", "expected a mapping", id="string"),
    ],
)
def test_bad_tls(tmp_path, ca, tls, key, fragment):
    ca_file(tmp_path, ca)
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.pem").write_text("")
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    check(error_for(tmp_path, [ENDPOINT, PROJECT, f"tls: {tls}", SERVERS]), key, 3, fragment)


def test_a_broken_ca_bundle_in_an_unused_default_is_not_read(tmp_path):
    lines = [
        ENDPOINT,
        "tls: {ca_bundle: missing.pem}",
        "projects:",
        "  - {project_id: p1, tls: {verify: true}, servers: [S1]}",
    ]
    assert only(tmp_path, lines).ssl is True


@pytest.mark.anyio
async def test_the_ca_bundle_is_what_lets_the_client_reach_a_private_ca_server(tmp_path, ca):
    """A real TLS server whose certificate only the bundle vouches for: the project with the
    bundle gets its answer, the project without it fails the handshake."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file(tmp_path, ca)

    async def servers(request: web.Request) -> web.Response:
        return web.json_response({"servers": [], "count": 0, "project": request.match_info["project"]})

    app = web.Application()
    app.router.add_get("/v1/{project}/physicalservers", servers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
        host, port = runner.addresses[0][:2]
        lines = [
            f"endpoint: https://{host}:{port}",
            "auth: {token_env: T}",
            "projects:",
            "  - {project_id: trusted, tls: {ca_bundle: ca.pem}, servers: [S1]}",
            "  - {project_id: system, servers: [S1]}",
        ]
        trusted, system = load(tmp_path, lines, {"T": TOKEN}).projects
        policy = RetryPolicy(base=0.01, cap=0.01, max_attempts=1)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=5)
        async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:

            def client(project: Project) -> CloudDC:
                return CloudDC.alone(
                    session,
                    project.endpoint,
                    project.project_id,
                    project.credentials,
                    limiter=RateLimiter(1000),
                    policy=policy,
                    ssl=project.ssl,
                )

            assert b'"project": "trusted"' in await client(trusted).list_servers_page()
            with pytest.raises(TLSFailed):
                await client(system).list_servers_page()
    finally:
        await runner.cleanup()


# -- discover -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("discover", "expected"),
    [
        pytest.param("true", DiscoverSpec(), id="true"),
        pytest.param("{}", DiscoverSpec(), id="empty-mapping"),
        pytest.param("{name: 'db-*'}", DiscoverSpec("db-*"), id="name"),
        pytest.param("{tags: {rack: 'A1*', role: db}}", DiscoverSpec(None, {"rack": "A1*", "role": "db"}), id="tags"),
        pytest.param("{name: 'db-*', tags: {rack: 7}}", DiscoverSpec("db-*", {"rack": "7"}), id="both"),
        pytest.param("{name: , tags: }", DiscoverSpec(), id="nulls"),
    ],
)
def test_discover_shapes_and_servers_may_be_left_out(tmp_path, discover, expected):
    project = only(tmp_path, [ENDPOINT, "auth: {token_env: T}", PROJECT, f"discover: {discover}"], {"T": TOKEN})
    assert project.discover == expected
    assert project.servers == ()


def test_discover_false_is_none_and_servers_are_required_again(tmp_path):
    assert only(tmp_path, [ENDPOINT, PROJECT, SERVERS, "discover: false"]).discover is None
    check(error_for(tmp_path, [ENDPOINT, PROJECT, "discover: false"]), "servers", None, "required but missing")


def test_discover_with_listed_and_empty_servers(tmp_path):
    lines = [
        ENDPOINT,
        "discover: {name: 'db-*'}",
        "projects:",
        "  - {project_id: p1, servers: [S1, S2]}",
        "  - {project_id: p2, servers: []}",
        "  - {project_id: p3, servers: }",
        "  - {project_id: p4, discover: true}",
        "  - {project_id: p5, discover: false, servers: [S5]}",
    ]
    inventory = load(tmp_path, lines)
    _p1, _p2, _p3, _p4, _p5 = inventory.projects
    assert [p.discover for p in inventory.projects] == [DiscoverSpec("db-*")] * 3 + [DiscoverSpec(), None]
    assert [len(p.servers) for p in inventory.projects] == [2, 0, 0, 0, 1]
    assert inventory.server_count == 3  # listed servers only
    assert [(p.project_id, s.id) for p, s in inventory.targets()] == [("p1", "S1"), ("p1", "S2"), ("p5", "S5")]


def test_a_project_that_stops_discovering_must_list_its_servers(tmp_path):
    lines = [ENDPOINT, "discover: true", "projects:", "  - {project_id: p1}", "  - {project_id: p2, discover: false}"]
    check(error_for(tmp_path, lines), "projects[1].servers", 5, "required but missing")


@pytest.mark.parametrize(
    ("discover", "key", "fragment"),
    [
        pytest.param("'yes'", "discover", "expected true, false or a mapping, got the string 'yes'", id="string"),
        pytest.param("[db-*]", "discover", "expected true, false or a mapping, got a list", id="list"),
        pytest.param("1", "discover", "got the integer 1", id="int"),
        pytest.param("{nmae: 'db-*'}", "discover.nmae", "did you mean name?", id="typo"),
        pytest.param("{name: [a, b]}", "discover.name", "expected a string, got a list", id="name-list"),
        pytest.param("{name: 12}", "discover.name", "quote it", id="name-int"),
        pytest.param("{name: ''}", "discover.name", "is empty", id="name-empty"),
        pytest.param("{tags: [rack]}", "discover.tags", "expected a mapping, got a list", id="tags-list"),
        pytest.param("{tags: {rack: [A1, A2]}}", "discover.tags.rack", "expected a value", id="tag-glob-list"),
        pytest.param("!!set {a}", "discover", "YAML tag !!set is not allowed", id="tagged"),
    ],
)
def test_bad_discover(tmp_path, discover, key, fragment):
    check(error_for(tmp_path, [ENDPOINT, PROJECT, SERVERS, f"discover: {discover}"]), key, 4, fragment)


def test_a_broken_discover_does_not_also_complain_about_missing_servers(tmp_path):
    check(error_for(tmp_path, [ENDPOINT, PROJECT, "discover: {nmae: x}"]), "discover.nmae", 3, "did you mean")


def test_discover_spec_is_frozen_and_hashable():
    spec = DiscoverSpec("db-*", {"rack": "A1*"})
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    assert hash(spec) == hash(DiscoverSpec("db-*", {"rack": "A1*"}))


# -- all of it, reported at once ------------------------------------------------------------------


def test_problems_in_every_new_key_are_reported_together_in_file_order(tmp_path):
    lines = [
        "region: cn_east_3",
        "auth: {aksk: {ak_evn: A}}",
        "tls: {verify: maybe}",
        "discover: {nmae: x}",
        "projects:",
        "  - {project_id: p1, region: CN-1, servers: [S1]}",
    ]
    with pytest.raises(InventoryErrors) as info:
        load(tmp_path, lines)
    assert [(p.key, p.line) for p in info.value.problems] == [
        ("region", 1),
        ("auth.aksk.ak_evn", 2),
        ("tls.verify", 3),
        ("discover.nmae", 4),
        ("projects[0].region", 6),
    ]
