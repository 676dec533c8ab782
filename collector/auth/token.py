"""An IAM token given to us, sent as ``X-Auth-Token``: from an environment variable or a file.

A token from a variable cannot change during the run, so a 401 is final. A token from a file
may: a Kubernetes Secret mounted as a file is rotated in place, so on a 401 the file is read
again and, if it now holds another token, the request is sent again with that one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collector.auth.protocol import CredentialsUnavailable, Generation, Request, set_headers

log = logging.getLogger(__name__)

# An IAM token is a few KiB at most; a larger file is the wrong file.
_MAX_TOKEN_BYTES = 64 * 1024

# What a POSIX shell accepts as a variable name. Longer than 64 characters is more likely a
# token pasted in place of the name, and then it must not be echoed back in an error.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# A header value we can send as is: one line of printable ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass
class StaticToken:
    """A token sent as ``X-Auth-Token``; when it came from `path`, a 401 re-reads the file."""

    token: str = field(repr=False)
    source: str  # "$CLOUDDC_TOKEN" or "/run/secrets/token"
    path: Path | None = field(default=None, compare=False, repr=False)
    _generation: Generation = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._generation = Generation(0.0, owner=self)

    async def apply(self, request: Request) -> object:
        set_headers(request.headers, {"X-Auth-Token": self.token})
        return self._generation

    async def rejected(self, generation: object) -> bool:
        if not isinstance(generation, Generation) or generation.owner is not self:
            return False
        if generation is not self._generation:
            return True  # the file was read again since that request was sent
        if self.path is None:
            return False
        try:
            token = read_token_file(self.path)
        except CredentialsUnavailable as exc:
            log.warning("token rejected, and reading %s again failed: %s", self.path, exc.message)
            return False
        if token == self.token:
            return False
        log.info("token rejected; %s now holds another token, using it", self.path)
        self.token = token
        self._generation = Generation(0.0, forced=True, owner=self)
        return True

    async def headers(self, method: str, url: str) -> Mapping[str, str]:
        """The headers to add (the interface `collector.clouddc.api` used before `apply`)."""
        return {"X-Auth-Token": self.token}

    def describe(self) -> str:
        return f"token from {self.source}"


def check_env_name(name: str, *, what: str, option: str | None = None) -> None:
    if not ENV_NAME.fullmatch(name):
        raise CredentialsUnavailable(
            "not a valid environment variable name",
            hint=f"give the variable's name, like CLOUDDC_TOKEN, without '$'"
            f" (the {what} itself never goes in the inventory)",
            option=option,
        )


def env_value(name: str, environ: Mapping[str, str], *, what: str, option: str | None = None) -> str:
    """The value of variable `name`, stripped; `what` says what it should hold ("secret key")."""
    check_env_name(name, what=what, option=option)
    value = environ.get(name)
    if value is None:
        raise CredentialsUnavailable(
            f"environment variable {name} is not set", hint=f"export {name}=<{what}> before running", option=option
        )
    return checked(value, f"environment variable {name}", what=what, option=option)


def token_from_env(name: str, environ: Mapping[str, str]) -> StaticToken:
    """The token in environment variable `name`, surrounding whitespace stripped."""
    try:
        token = env_value(name, environ, what="token")
    except CredentialsUnavailable as exc:
        if exc.message.endswith("is not set"):
            exc.hint = f"export {name}=<token> before running, or use token_file instead"
        raise
    return StaticToken(token, source=f"${name}")


def token_from_file(path: Path) -> StaticToken:
    """The token in the file at `path`, surrounding whitespace stripped; re-read on a 401."""
    return StaticToken(read_token_file(path), source=str(path), path=path)


def read_token_file(path: Path, *, what: str = "token", option: str | None = None) -> str:
    return checked(read_secret_file(path, what=what, option=option), f"{what} file {path}", what=what, option=option)


def read_secret_file(path: Path, *, what: str, option: str | None = None, max_bytes: int = _MAX_TOKEN_BYTES) -> str:
    """The text of a small file holding a secret; errors name the file, never its content."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise CredentialsUnavailable(
            f"{what} file {path} does not exist",
            hint="create it or fix the path (a relative path starts from the inventory's folder)",
            option=option,
        ) from None
    except IsADirectoryError:
        raise CredentialsUnavailable(
            f"{what} file {path} is a directory", hint=f"give the path of the file holding the {what}", option=option
        ) from None
    except OSError as exc:
        raise CredentialsUnavailable(
            f"{what} file {path} cannot be read ({exc.strerror or type(exc).__name__})",
            hint="check the file's permissions",
            option=option,
        ) from None
    if len(data) > max_bytes:
        raise CredentialsUnavailable(
            f"{what} file {path} is larger than {max_bytes // 1024} KiB",
            hint=f"give the path of the file holding only the {what}",
            option=option,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsUnavailable(
            f"{what} file {path} is not text", hint=f"give the path of a file holding only the {what}", option=option
        ) from None


def checked(value: str, where: str, *, what: str = "token", option: str | None = None) -> str:
    """`value` stripped, if it is one word of printable ASCII; the error never holds it."""
    word = value.strip()
    if not word:
        raise CredentialsUnavailable(f"{where} is empty", hint=f"put the {what} in it", option=option)
    if len(word) > _MAX_TOKEN_BYTES or not _TOKEN.fullmatch(word):
        raise CredentialsUnavailable(
            f"{where} holds more than one word, or characters other than printable ASCII",
            hint=f"it must hold only the {what}, on one line",
            option=option,
        )
    return word
