"""From an inventory's auth entry, or from where the SDK looks, to a provider; and no secret
in any repr, description or message on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yarl

from collector.auth import (
    OPTIONS,
    AkSk,
    CredentialsUnavailable,
    IamPassword,
    Request,
    StaticToken,
    default_chain,
    provider_from_spec,
)
from collector.auth.profile import read_profile
from collector.auth.protocol import host_header

pytestmark = pytest.mark.timeout(20)

AK, SK, TOKEN = "AKSECRETVALUE0001", "SKsecretvalue0123456789", "STSsecuritytokenvalue"
IAM_TOKEN, PASSWORD = "MIIiamtokensecret", "pass word secret!"
SECRETS = (AK, SK, TOKEN, IAM_TOKEN, PASSWORD)


def spec(
    kind: str, options: dict[str, str], environ: dict[str, str] | None = None, base_dir: Path = Path("/"), **kwargs
):
    return provider_from_spec(kind, options, environ=environ or {}, base_dir=base_dir, **kwargs)


def unavailable(
    kind: str, options: dict[str, str], environ: dict[str, str] | None = None, base_dir: Path = Path("/"), **kwargs
) -> CredentialsUnavailable:
    with pytest.raises(CredentialsUnavailable) as info:
        spec(kind, options, environ, base_dir, **kwargs)
    assert_no_secret(info.value.message, info.value.hint, str(info.value), repr(info.value))
    return info.value


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, (secret, text)
            assert secret[:12] not in text, (secret, text)


def write_profile(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


async def sign_one(provider) -> dict[str, str]:
    url = yarl.URL("https://clouddc.cn-east-3.myhuaweicloud.com/v1/p1/physicalservers")
    request = Request("GET", url, {"Host": host_header(url)}, project_id="p1")
    await provider.apply(request)
    return request.headers


# -- each kind ----------------------------------------------------------------------------------------


def test_every_kind_has_its_options_listed():
    assert set(OPTIONS) == {"token_env", "token_file", "aksk", "iam", "pod_identity", "metadata"}


def test_token_env_and_token_file(tmp_path):
    assert spec("token_env", {"name": "T"}, {"T": IAM_TOKEN}) == StaticToken(IAM_TOKEN, "$T")
    (tmp_path / "tok").write_text(IAM_TOKEN + "\n")
    provider = spec("token_file", {"path": "tok"}, base_dir=tmp_path)
    assert provider == StaticToken(IAM_TOKEN, str(tmp_path / "tok"))
    assert provider.describe() == f"token from {tmp_path / 'tok'}"


@pytest.mark.anyio
async def test_aksk_from_the_sdks_variables_with_and_without_a_security_token():
    plain = spec("aksk", {}, {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK})
    assert plain.describe() == "AK/SK from $HUAWEICLOUD_SDK_AK"
    assert "X-Security-Token" not in await sign_one(plain)
    temporary = spec(
        "aksk", {}, {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN}
    )
    assert temporary.describe() == "temporary AK/SK from $HUAWEICLOUD_SDK_AK"
    headers = await sign_one(temporary)
    assert headers["X-Security-Token"] == TOKEN
    assert headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, ")


@pytest.mark.anyio
async def test_aksk_from_named_variables_and_a_401_is_final():
    provider = spec(
        "aksk",
        {"ak_env": "MY_AK", "sk_env": "MY_SK", "security_token_env": "MY_TOKEN"},
        {"MY_AK": AK, "MY_SK": SK, "MY_TOKEN": TOKEN},
    )
    assert provider.describe() == "temporary AK/SK from $MY_AK"
    # Named variables do not pick up the SDK's security token, which belongs to the SDK's keys.
    named = spec(
        "aksk",
        {"ak_env": "MY_AK", "sk_env": "MY_SK"},
        {"MY_AK": AK, "MY_SK": SK, "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN},
    )
    assert named.describe() == "AK/SK from $MY_AK"
    url = yarl.URL("https://clouddc.example/v1/p1/x")
    generation = await provider.apply(Request("GET", url, {"Host": "clouddc.example"}))
    assert await provider.rejected(generation) is False


@pytest.mark.parametrize(
    "options, environ, option, words",
    [
        ({}, {"HUAWEICLOUD_SDK_AK": AK}, "sk_env", "HUAWEICLOUD_SDK_SK is not set"),
        ({"ak_env": "A"}, {}, "sk_env", "sk_env is missing"),
        ({"ak_env": "A", "sk_env": "S"}, {"A": AK, "S": f"{SK} {SK}"}, "sk_env", "more than one word"),
        (
            {"ak_env": "A", "sk_env": "S", "security_token_env": "T"},
            {"A": AK, "S": SK},
            "security_token_env",
            "T is not set",
        ),
        ({"ak_env": AK + "x" * 60, "sk_env": "S"}, {}, "ak_env", "not a valid environment variable name"),
        ({"profile": "basic", "ak_env": "A", "sk_env": "S"}, {}, "profile", "cannot be combined"),
        ({"region": "x"}, {}, "region", "aksk has no option region"),
    ],
)
def test_aksk_problems_name_the_option_and_never_the_value(options, environ, option, words):
    error = unavailable("aksk", options, environ)
    assert words in error.message
    assert error.option == option


def test_aksk_profile_reads_the_sdks_credentials_file(tmp_path):
    write_profile(
        tmp_path / ".huaweicloud" / "credentials",
        f"[basic]\nak = {AK}\nsk = {SK}\nproject_id = p1\n\n[other]\nak = X\nsk = Y\n",
    )
    provider = spec("aksk", {"profile": "basic"}, {"HOME": str(tmp_path)})
    assert provider.describe() == f"AK/SK from [basic] of {tmp_path / '.huaweicloud' / 'credentials'}"
    elsewhere = write_profile(tmp_path / "creds.ini", f"[ops]\nak = {AK}\nsk = {SK}\nsecurity_token = {TOKEN}\n")
    provider = spec("aksk", {"profile": "ops"}, {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(elsewhere)})
    assert provider.describe() == f"temporary AK/SK from [ops] of {elsewhere}"


def test_profile_is_read_as_the_sdk_reads_it(tmp_path, monkeypatch):
    from huaweicloudsdkcore.auth.provider import ProfileCredentialProvider

    path = write_profile(
        tmp_path / "credentials",
        f"[DEFAULT]\nproject_id = p-default\n[basic]\nAK = {AK}\nsk:   {SK}  \n"
        f"security_token = {TOKEN}\niam_endpoint = https://iam.example\n",
    )
    monkeypatch.setenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE", str(path))
    theirs = ProfileCredentialProvider.get_basic().get_credentials()
    ours = read_profile(path, "basic")
    assert (ours.keys.access, ours.keys.secret, ours.keys.security_token, ours.project_id) == (
        theirs.ak,
        theirs.sk,
        theirs.security_token,
        theirs.project_id,
    )


@pytest.mark.parametrize(
    "body, words",
    [
        (f"ak = {AK}\n", "line 1 comes before any [section]"),
        (f"[basic]\nak = {AK}\n{SK}\n", "line 3 is not 'name = value'"),
        (f"[basic]\nak = {AK}\nak = {SK}\n", "ak appears twice in [basic]"),
        (f"[basic]\nak = {AK}\nsk = {SK}%x\n", "has a '%' that is not '%%'"),
        (f"[basic]\nak = {AK}\n", "[basic] has no ak and sk"),
        (f"[other]\nak = {AK}\nsk = {SK}\n", "has no [basic] section"),
        ("[basic]\nidp_id = idp\nid_token_file = /x\n", "federated identity"),
        (f"[basic]\nak = {AK}\nsk = {SK} {SK}\n", "sk in [basic] is not one word"),
    ],
)
def test_profile_problems_say_where_without_the_keys(tmp_path, body, words):
    path = write_profile(tmp_path / "credentials", body)
    error = unavailable("aksk", {"profile": "basic"}, {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)})
    assert words in error.message
    assert str(path) in error.message


def test_iam_spec(tmp_path):
    env = {"IAM_PASSWORD": PASSWORD + "\n"}
    provider = spec("iam", {"domain": "acme", "user": "bot", "password_env": "IAM_PASSWORD"}, env, region="cn-east-3")
    assert isinstance(provider, IamPassword)
    assert str(provider.endpoint) == "https://iam.cn-east-3.myhuaweicloud.com"
    assert provider.describe() == (
        "IAM token of user bot (account acme) from https://iam.cn-east-3.myhuaweicloud.com, password from $IAM_PASSWORD"
    )
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    provider = spec(
        "iam",
        {"domain": "acme", "user": "bot", "password_file": "pw", "endpoint": "https://iam.example.com"},
        base_dir=tmp_path,
    )
    assert provider.describe().endswith(f"password from {tmp_path / 'pw'}")


@pytest.mark.parametrize(
    "options, region, option, words",
    [
        ({"user": "u", "password_env": "P"}, "r", "domain", "domain is missing"),
        ({"domain": "d", "user": "u"}, "r", "password_env", "exactly one of password_env and password_file"),
        ({"domain": "d", "user": "u", "password_env": "P", "password_file": "f"}, "r", "password_file", "exactly one"),
        ({"domain": "d", "user": "u", "password_env": "NOPE"}, "r", "password_env", "NOPE is not set"),
        ({"domain": "d", "user": "u", "password_file": "absent"}, "r", "password_file", "does not exist"),
        ({"domain": "d", "user": "u", "password_env": "P"}, None, "endpoint", "no IAM endpoint"),
        (
            {"domain": "d", "user": "u", "password_env": "P", "endpoint": "http://iam.example"},
            None,
            "endpoint",
            "must be https",
        ),
        (
            {"domain": "d", "user": "u", "password_env": "P", "endpoint": f"https://x?{PASSWORD}"},
            None,
            "endpoint",
            "not an http(s) URL",
        ),
    ],
)
def test_iam_problems(tmp_path, options, region, option, words):
    error = unavailable("iam", options, {"P": PASSWORD}, tmp_path, region=region)
    assert words in error.message
    assert error.option == option


def test_pod_identity_needs_both_variables(tmp_path):
    error = unavailable("pod_identity", {}, {"HC_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/v1/c"})
    assert "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE not set" in error.message
    error = unavailable(
        "pod_identity",
        {},
        {
            "HC_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/v1/c",
            "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tmp_path / "absent"),
        },
    )
    assert "does not exist" in error.message


def test_unknown_kind_and_options():
    assert "unknown kind" in unavailable("kerberos", {}).message
    assert unavailable("metadata", {"endpoint": "ftp://x"}).option == "endpoint"
    assert unavailable("pod_identity", {"uri": "x"}).message == "pod_identity has no option uri"


# -- the default chain -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_chain_takes_the_sdks_variables_first(tmp_path):
    write_profile(tmp_path / ".huaweicloud" / "credentials", "[basic]\nak = FILEAK\nsk = FILESK\n")
    env = {"HOME": str(tmp_path), "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    assert (await default_chain(env)).describe() == "AK/SK from $HUAWEICLOUD_SDK_AK"
    del env["HUAWEICLOUD_SDK_SK"]
    provider = await default_chain(env)
    assert provider.describe().startswith("AK/SK from [basic] of ")
    assert "Access=FILEAK," in (await sign_one(provider))["Authorization"]


@pytest.mark.anyio
async def test_chain_that_finds_nothing_says_what_it_tried_in_one_line(tmp_path):
    env = {"HOME": str(tmp_path), "HUAWEICLOUD_SDK_AK": AK}
    with pytest.raises(CredentialsUnavailable) as info:
        await default_chain(env, metadata_endpoint="http://127.0.0.1:9", probe_timeout=0.5)
    message = info.value.message
    assert "\n" not in message
    assert message.startswith("no credentials found: $HUAWEICLOUD_SDK_AK is set but $HUAWEICLOUD_SDK_SK is not; ")
    assert f"no credentials file at {tmp_path / '.huaweicloud' / 'credentials'}" in message
    assert "CCE pod identity" in message
    assert "the ECS metadata service: ECS metadata session token: cannot connect to 127.0.0.1:9" in message
    assert_no_secret(message, info.value.hint)


@pytest.mark.anyio
async def test_chain_does_not_skip_a_broken_credentials_file(tmp_path):
    write_profile(tmp_path / ".huaweicloud" / "credentials", f"[basic]\nak = {AK}\n{SK}\n")
    with pytest.raises(CredentialsUnavailable, match="is not 'name = value'"):
        await default_chain({"HOME": str(tmp_path)}, metadata_endpoint="http://127.0.0.1:9")


# -- a token file rotated in place ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_token_file_is_read_again_on_a_401_and_a_new_token_is_used(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-token\n")
    provider = spec("token_file", {"path": str(path)})
    request = Request("GET", yarl.URL("https://x/"), {"Host": "x"})
    first = await provider.apply(request)
    assert await provider.rejected(first) is False  # the same token: nothing fresher
    path.write_text("second-token\n")
    assert await provider.rejected(first) is True
    second = await provider.apply(request)
    assert request.headers["X-Auth-Token"] == "second-token"
    assert await provider.rejected(first) is True  # already replaced
    assert await provider.rejected(second) is False
    path.unlink()
    assert await provider.rejected(second) is False


@pytest.mark.anyio
async def test_a_token_from_a_variable_cannot_be_refreshed():
    provider = spec("token_env", {"name": "T"}, {"T": IAM_TOKEN})
    request = Request("GET", yarl.URL("https://x/"), {"Host": "x", "x-auth-token": "stale"})
    generation = await provider.apply(request)
    assert request.headers == {"Host": "x", "X-Auth-Token": IAM_TOKEN}  # replaced, whatever its case
    assert await provider.rejected(generation) is False


# -- no secret anywhere ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_provider_shows_a_secret_in_repr_str_or_description(tmp_path):
    (tmp_path / "tok").write_text(IAM_TOKEN)
    (tmp_path / "pw").write_text(PASSWORD)
    write_profile(tmp_path / "creds", f"[basic]\nak = {AK}\nsk = {SK}\nsecurity_token = {TOKEN}\n")
    env = {
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN,
        "T": IAM_TOKEN,
        "P": PASSWORD,
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(tmp_path / "creds"),
        "HC_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/v1/credentials",
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tmp_path / "tok"),
    }
    providers = [
        spec("token_env", {"name": "T"}, env),
        spec("token_file", {"path": "tok"}, env, tmp_path),
        spec("aksk", {}, env),
        spec("aksk", {"profile": "basic"}, env),
        spec("iam", {"domain": "d", "user": "u", "password_env": "P"}, env, region="cn-east-3"),
        spec("iam", {"domain": "d", "user": "u", "password_file": "pw"}, env, tmp_path, region="cn-east-3"),
        spec("pod_identity", {}, env),
        spec("metadata", {}, env),
    ]
    for provider in providers:
        assert_no_secret(repr(provider), str(provider), provider.describe())
    signed = providers[2]
    assert isinstance(signed, AkSk)
    request = Request("GET", yarl.URL("https://x/"), {"Host": "x"}, project_id="p")
    generation = await signed.apply(request)
    lease = await signed.refresher.get()
    assert_no_secret(repr(request), repr(generation), repr(lease), repr(lease.value), repr(signed.refresher))
