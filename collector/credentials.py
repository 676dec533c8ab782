"""Credentials: what the API client adds to each request to prove who we are.

The client asks its project's `Credentials` for headers before every request rather than
holding a token itself. Today the only kind is `StaticToken` (an IAM token given through an
environment variable or a file, sent as ``X-Auth-Token``), but the seam is shaped for what comes
next: AK/SK signing needs the method and URL of each request, and IAM password tokens expire and
must be refreshed once for every task that shares them, which is why `headers` is async.

`collector.inventory` builds the providers while loading the inventory; `token_from_env` and
`token_from_file` raise `CredentialsUnavailable`, which the inventory turns into an
`InventoryError` naming the key and line that asked for the token. Nothing here ever puts a
secret in a message, a repr or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# An IAM token is a few KiB at most; a larger file is the wrong file.
_MAX_TOKEN_BYTES = 64 * 1024

# What a POSIX shell accepts as a variable name. Longer than 64 characters is more likely a
# token pasted in place of the name, and then it must not be echoed back in an error.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# A header value we can send as is: one line of printable ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


class Credentials(Protocol):
    """What the API client asks for before each request."""

    async def headers(self, method: str, url: str) -> Mapping[str, str]:
        """The headers to add to this request."""
        ...

    def describe(self) -> str:
        """Where the credentials come from, for logs; never the secret itself."""
        ...


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A token that does not change during the run, sent as ``X-Auth-Token``."""

    token: str = field(repr=False)
    source: str  # "$CLOUDDC_TOKEN" or "/run/secrets/token"

    async def headers(self, method: str, url: str) -> Mapping[str, str]:
        return {"X-Auth-Token": self.token}

    def describe(self) -> str:
        return f"token from {self.source}"


class CredentialsUnavailable(Exception):
    """The token cannot be had: variable unset, file missing, value unusable. Never holds it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def token_from_env(name: str, environ: Mapping[str, str]) -> StaticToken:
    """The token in environment variable `name`, surrounding whitespace stripped."""
    if not _ENV_NAME.fullmatch(name):
        raise CredentialsUnavailable(
            "not a valid environment variable name",
            hint="give the variable's name, like CLOUDDC_TOKEN, without '$'"
            " (the token itself never goes in the inventory)",
        )
    value = environ.get(name)
    if value is None:
        raise CredentialsUnavailable(
            f"environment variable {name} is not set",
            hint=f"export {name}=<token> before running, or use token_file instead",
        )
    return StaticToken(_checked(value, f"environment variable {name}"), source=f"${name}")


def token_from_file(path: Path) -> StaticToken:
    """The token in the file at `path`, surrounding whitespace stripped."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_TOKEN_BYTES + 1)
    except FileNotFoundError:
        raise CredentialsUnavailable(
            f"token file {path} does not exist",
            hint="create it or fix the path (a relative path starts from the inventory's folder)",
        ) from None
    except IsADirectoryError:
        raise CredentialsUnavailable(
            f"token file {path} is a directory", hint="give the path of the file holding the token"
        ) from None
    except OSError as exc:
        raise CredentialsUnavailable(
            f"token file {path} cannot be read ({exc.strerror or exc})",
            hint="check the file's permissions",
        ) from None
    if len(data) > _MAX_TOKEN_BYTES:
        raise CredentialsUnavailable(
            f"token file {path} is larger than {_MAX_TOKEN_BYTES // 1024} KiB",
            hint="give the path of the file holding only the token",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsUnavailable(
            f"token file {path} is not text", hint="give the path of a file holding only the token"
        ) from None
    return StaticToken(_checked(text, f"token file {path}"), source=str(path))


def _checked(value: str, where: str) -> str:
    token = value.strip()
    if not token:
        raise CredentialsUnavailable(f"{where} is empty", hint="put the token in it")
    if not _TOKEN.fullmatch(token):
        raise CredentialsUnavailable(
            f"{where} holds more than one word, or characters other than printable ASCII",
            hint="it must hold only the token, on one line",
        )
    return token
