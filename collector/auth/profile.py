"""The SDK's credentials file: ``$HUAWEICLOUD_SDK_CREDENTIALS_FILE`` or ~/.huaweicloud/credentials.

Users of the official SDK keep their keys there, in INI form, one section per credential type
(the SDK reads ``[basic]`` for regional services like CloudDC)::

    [basic]
    ak = ...
    sk = ...
    project_id = ...          (optional)
    security_token = ...      (optional: temporary keys)

We read it as the SDK's ``ProfileCredentialProvider`` does (``configparser`` with its default
interpolation, names case-insensitive, values stripped), from a section the user may name.
Federated identity (``idp_id`` with ``id_token_file``), which the SDK would prefer, needs
IAM's token exchange and is not supported: we say so rather than sign with keys the SDK
would not use. configparser's own messages quote the offending line, which may hold a key,
so every error here is written anew and names lines and options only.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collector.auth.keys import AccessKeys, is_word
from collector.auth.protocol import CredentialsUnavailable
from collector.auth.token import read_secret_file

FILE_ENV = "HUAWEICLOUD_SDK_CREDENTIALS_FILE"
DEFAULT_SECTION = "basic"
_MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Profile:
    keys: AccessKeys = field(repr=False)
    project_id: str | None
    path: Path
    section: str


class ProfileMissing(CredentialsUnavailable):
    """The file has no usable keys in that section (absent, or federated): the chain moves on."""


def credentials_file(environ: Mapping[str, str]) -> Path | None:
    """Where the SDK looks: the variable if set and not empty, else ~/.huaweicloud/credentials."""
    if environ.get(FILE_ENV):
        return Path(os.path.expanduser(environ[FILE_ENV]))
    home = environ.get("HOME")
    return Path(home) / ".huaweicloud" / "credentials" if home else None


def read_profile(path: Path, section: str = DEFAULT_SECTION, *, option: str | None = None) -> Profile:
    """The keys in `section` of the credentials file at `path`."""
    text = read_secret_file(path, what="credentials", option=option, max_bytes=_MAX_FILE_BYTES)
    where = f"credentials file {path}"
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise _error(f"{where}: line {exc.lineno} comes before any [section]", option) from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(number) for number, _ in exc.errors)
        raise _error(f"{where}: line {lines} is not 'name = value'", option) from None
    except configparser.DuplicateSectionError as exc:
        raise _error(f"{where}: section [{exc.section}] appears twice (line {exc.lineno})", option) from None
    except configparser.DuplicateOptionError as exc:
        raise _error(f"{where}: {exc.option} appears twice in [{exc.section}] (line {exc.lineno})", option) from None
    except configparser.Error as exc:
        raise _error(f"{where} cannot be read ({type(exc).__name__})", option) from None
    if not parser.has_section(section):
        raise ProfileMissing(
            f"{where} has no [{section}] section",
            hint=f"add [{section}] with ak and sk, or name another section with profile:",
            option=option,
        )
    values: dict[str, str] = {}
    for name in parser.options(section):
        try:
            values[name] = parser.get(section, name)
        except configparser.InterpolationError:
            raise _error(f"{where}: the value of {name} in [{section}] has a '%' that is not '%%'", option) from None
    if values.get("idp_id") and values.get("id_token_file"):
        raise ProfileMissing(
            f"{where}: [{section}] uses federated identity (idp_id, id_token_file), which collector does not support",
            hint="give ak and sk in a section of their own, or use auth: {iam: ...}",
            option=option,
        )
    ak, sk = values.get("ak"), values.get("sk")
    if not ak or not sk:
        raise ProfileMissing(
            f"{where}: [{section}] has no ak and sk", hint="give both ak = ... and sk = ...", option=option
        )
    token = values.get("security_token") or None
    for name, value in (("ak", ak), ("sk", sk), ("security_token", token)):
        if value is not None and not is_word(value):
            raise _error(f"{where}: {name} in [{section}] is not one word of printable ASCII", option)
    return Profile(AccessKeys(ak, sk, token), values.get("project_id") or None, path, section)


def _error(message: str, option: str | None) -> CredentialsUnavailable:
    hint = "the file is in the SDK's INI form: [basic], then ak = ..., sk = ..."
    return CredentialsUnavailable(message, hint=hint, option=option)
