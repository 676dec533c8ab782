"""Which credentials to use: from an inventory's auth spec, or looked up as the SDK does.

`provider_from_spec` turns one ``auth:`` entry into a provider, checking everything it can
without the network (variables set, files readable, values usable) and raising
`CredentialsUnavailable` otherwise. `OPTIONS` lists each kind's options (and `SCALAR_KINDS`,
`PATH_OPTIONS` how an inventory writes them), so the inventory can check keys and point at
lines before calling it.

`default_chain` is for an inventory without ``auth``: it looks where the SDK looks, in this
order, and uses the first that has something: ``HUAWEICLOUD_SDK_AK``/``_SK`` (and
``_SECURITY_TOKEN``), the SDK's credentials file (``[basic]``), CCE pod identity, and the ECS
metadata service. Pod identity comes before metadata (the SDK tries metadata first): it is
decided by environment variables alone, while metadata needs a network probe, and in a CCE
pod the node's own agency is the wrong identity. It is async because of that probe (one
second by default); call it inside the event loop, before the first API request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import yarl

from collector.auth.aksk import AK_ENV, SK_ENV, AkSk, check_env_names, keys_from_env
from collector.auth.http import SessionFactory, default_session
from collector.auth.iam import IamPassword, Password, iam_endpoint, is_loopback
from collector.auth.metadata import DEFAULT_ENDPOINT, TIMEOUT, MetadataService, metadata_credentials
from collector.auth.pod import FULL_URI_ENV, TOKEN_FILE_ENV, pod_identity_from_env
from collector.auth.profile import DEFAULT_SECTION, Profile, ProfileMissing, credentials_file, read_profile
from collector.auth.protocol import Credentials, CredentialsUnavailable
from collector.auth.refresh import DEFAULT_REFRESH, Clock, RefreshPolicy
from collector.auth.token import check_env_name, read_secret_file, token_from_env, token_from_file
from collector.errors import APIError, ProtocolError, RequestError

# Each kind of credentials and its options, in the order hints list them: the one declaration
# of both (the inventory checks its `auth:` keys against it).
OPTIONS: Mapping[str, tuple[str, ...]] = {
    "token_env": ("name",),
    "token_file": ("path",),
    "aksk": ("ak_env", "sk_env", "security_token_env", "profile"),
    "iam": ("endpoint", "domain", "user", "password_env", "password_file"),
    "pod_identity": (),
    "metadata": ("endpoint",),
}
# Kinds an inventory writes as their one option's value alone: `token_env: CLOUDDC_TOKEN`.
SCALAR_KINDS = frozenset({"token_env", "token_file"})
# Options that name a file; a relative path starts from `base_dir`.
PATH_OPTIONS = frozenset({"path", "password_file"})

_MAX_PASSWORD_BYTES = 4096


def provider_from_spec(
    kind: str,
    options: Mapping[str, str],
    *,
    environ: Mapping[str, str],
    base_dir: Path,
    region: str | None = None,
    session_factory: SessionFactory = default_session,
    clock: Clock = time.time,
    policy: RefreshPolicy = DEFAULT_REFRESH,
) -> Credentials:
    """The provider for one auth entry: ``token_env: {name}``, ``token_file: {path}``, ``aksk:
    {}`` / ``{ak_env, sk_env[, security_token_env]}`` / ``{profile}``, ``iam: {domain, user,
    password_env | password_file[, endpoint]}``, ``pod_identity: {}``, ``metadata: {[endpoint]}``.

    Relative paths start from `base_dir`; the IAM endpoint defaults from `region`.
    """
    if kind not in OPTIONS:
        raise CredentialsUnavailable("unknown kind of credentials", hint=f"use one of {', '.join(OPTIONS)}")
    for name, value in options.items():
        if name not in OPTIONS[kind]:
            allowed = ", ".join(sorted(OPTIONS[kind])) or "none"
            raise CredentialsUnavailable(f"{kind} has no option {name}", hint=f"its options: {allowed}", option=name)
        if not isinstance(value, str) or not value.strip():
            raise CredentialsUnavailable(f"{name} is empty or not a string", hint="give a value", option=name)

    if kind == "token_env":
        return token_from_env(_required(options, "name", "token_env: {name: CLOUDDC_TOKEN}"), environ)
    if kind == "token_file":
        return token_from_file(_path(_required(options, "path", "token_file: {path: /run/secrets/token}"), base_dir))
    if kind == "aksk":
        return _aksk(options, environ, clock)
    if kind == "iam":
        return _iam(options, environ, base_dir, region, session_factory, clock, policy)
    if kind == "pod_identity":
        return pod_identity_from_env(environ, session_factory=session_factory, clock=clock, policy=policy)
    endpoint = _url(options.get("endpoint", DEFAULT_ENDPOINT), "endpoint")
    return metadata_credentials(
        MetadataService(str(endpoint), session_factory=session_factory, clock=clock), clock=clock, policy=policy
    )


async def default_chain(
    environ: Mapping[str, str],
    *,
    session_factory: SessionFactory = default_session,
    clock: Clock = time.time,
    policy: RefreshPolicy = DEFAULT_REFRESH,
    metadata_endpoint: str = DEFAULT_ENDPOINT,
    probe_timeout: float = 1.0,
) -> Credentials:
    """The first credentials found where the SDK looks; `CredentialsUnavailable` saying what
    was tried when there are none. A source that is there but broken is an error, not skipped."""
    found, tried = found_locally(environ, session_factory=session_factory, clock=clock, policy=policy)
    if found is not None:
        return found

    source = MetadataService(metadata_endpoint, session_factory=session_factory, clock=clock, timeout=probe_timeout)
    provider = metadata_credentials(source, clock=clock, policy=policy)
    try:
        await provider.refresher.get()  # the probe: its keys are the first ones used
    except (RequestError, APIError, ProtocolError) as exc:
        tried.append(f"the ECS metadata service: {exc}")
        raise CredentialsUnavailable(
            "no credentials found: " + "; ".join(tried),
            hint=f"export {AK_ENV} and {SK_ENV}, or give auth in the inventory (token_env, aksk, iam, ...)",
        ) from None
    finally:
        source.timeout = TIMEOUT
    return provider


def found_locally(
    environ: Mapping[str, str],
    *,
    session_factory: SessionFactory = default_session,
    clock: Clock = time.time,
    policy: RefreshPolicy = DEFAULT_REFRESH,
) -> tuple[Credentials | None, list[str]]:
    """What the SDK's lookup finds without sending anything (the environment's AK/SK, the
    credentials file, pod identity's settings), and what it tried; the metadata service, the
    last place, needs a request. `collector validate` says which it would be."""
    tried: list[str] = []
    ak, sk = environ.get(AK_ENV, "").strip(), environ.get(SK_ENV, "").strip()
    if ak and sk:
        return keys_from_env(environ, clock=clock), tried
    tried.append(
        f"${AK_ENV} is set but ${SK_ENV} is not"
        if ak
        else f"${SK_ENV} is set but ${AK_ENV} is not"
        if sk
        else f"${AK_ENV} and ${SK_ENV} are not set"
    )

    path = credentials_file(environ)
    if path is None:
        tried.append("no $HOME, so no ~/.huaweicloud/credentials")
    elif not path.exists():
        tried.append(f"no credentials file at {path}")
    else:
        try:
            profile = read_profile(path, DEFAULT_SECTION)
        except ProfileMissing as exc:
            tried.append(exc.message)
        else:
            return _profile_provider(profile, clock), tried

    if environ.get(FULL_URI_ENV, "").strip() and environ.get(TOKEN_FILE_ENV, "").strip():
        return pod_identity_from_env(environ, session_factory=session_factory, clock=clock, policy=policy), tried
    tried.append(f"${FULL_URI_ENV} and ${TOKEN_FILE_ENV} (CCE pod identity) are not both set")
    return None, tried


def _aksk(options: Mapping[str, str], environ: Mapping[str, str], clock: Clock) -> AkSk:
    names = check_env_names(options)
    if "profile" not in options:
        return keys_from_env(environ, clock=clock, **names)
    if names:
        raise CredentialsUnavailable(
            "profile cannot be combined with ak_env, sk_env or security_token_env",
            hint="keys come either from variables or from the credentials file",
            option="profile",
        )
    path = credentials_file(environ)
    if path is None:
        raise CredentialsUnavailable(
            "no credentials file: neither $HUAWEICLOUD_SDK_CREDENTIALS_FILE nor $HOME is set",
            hint="set HUAWEICLOUD_SDK_CREDENTIALS_FILE to the file's path",
            option="profile",
        )
    return _profile_provider(read_profile(path, options["profile"].strip(), option="profile"), clock)


def _profile_provider(profile: Profile, clock: Clock) -> AkSk:
    kind = "temporary AK/SK" if profile.keys.temporary else "AK/SK"
    return AkSk.fixed(profile.keys, f"{kind} from [{profile.section}] of {profile.path}", clock=clock)


def _iam(
    options: Mapping[str, str],
    environ: Mapping[str, str],
    base_dir: Path,
    region: str | None,
    session_factory: SessionFactory,
    clock: Clock,
    policy: RefreshPolicy,
) -> IamPassword:
    domain = _required(options, "domain", "the account name, as on the console's login page").strip()
    user = _required(options, "user", "the IAM user's name").strip()
    has_env, has_file = "password_env" in options, "password_file" in options
    if has_env == has_file:
        raise CredentialsUnavailable(
            "give exactly one of password_env and password_file",
            hint="password_env names a variable holding the password; password_file a file holding it",
            option="password_file" if has_file else "password_env",
        )
    if has_env:
        name = options["password_env"].strip()
        check_env_name(name, what="password", option="password_env")
        if name not in environ:
            raise CredentialsUnavailable(
                f"environment variable {name} is not set",
                hint=f"export {name}=<password> before running",
                option="password_env",
            )
        password = Password(_password(environ[name], f"environment variable {name}", "password_env"), f"${name}")
    else:
        path = _path(options["password_file"], base_dir)
        text = read_secret_file(path, what="password", option="password_file", max_bytes=_MAX_PASSWORD_BYTES)
        password = Password(_password(text, f"password file {path}", "password_file"), str(path))
    if "endpoint" in options:
        endpoint = _url(options["endpoint"], "endpoint")
    elif region:
        endpoint = yarl.URL(iam_endpoint(region))
    else:
        raise CredentialsUnavailable(
            "no IAM endpoint, and no region to derive one from",
            hint="give endpoint: https://iam.<region>.myhuaweicloud.com",
            option="endpoint",
        )
    if endpoint.scheme != "https" and not is_loopback(endpoint):
        raise CredentialsUnavailable(
            "the IAM endpoint must be https: the password is sent to it",
            hint="give endpoint: https://iam.<region>.myhuaweicloud.com",
            option="endpoint",
        )
    return IamPassword(
        endpoint=str(endpoint),
        domain=domain,
        user=user,
        password=password,
        session_factory=session_factory,
        clock=clock,
        policy=policy,
    )


def _password(value: str, where: str, option: str) -> str:
    """A password keeps inner spaces; a trailing newline from `echo > file` is dropped."""
    password = value.strip("\r\n")
    if not password.strip():
        raise CredentialsUnavailable(f"{where} is empty", hint="put the password in it", option=option)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise CredentialsUnavailable(
            f"{where} holds control characters or more than one line",
            hint="it must hold only the password",
            option=option,
        )
    return password


def _required(options: Mapping[str, str], name: str, example: str) -> str:
    if name not in options:
        raise CredentialsUnavailable(f"{name} is missing", hint=f"give {name}: {example}", option=name)
    return options[name]


def _path(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value.strip()))
    return path if path.is_absolute() else base_dir / path


def _url(value: str, option: str) -> yarl.URL:
    try:
        url = yarl.URL(value.strip())
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise CredentialsUnavailable(
            f"{option} is not an http(s) URL without query",
            hint="like https://iam.cn-east-3.myhuaweicloud.com",
            option=option,
        )
    return url
