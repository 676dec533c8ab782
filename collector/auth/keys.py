"""Access keys, and the answer that carries temporary ones.

CCE pod identity and the ECS metadata service answer temporary keys in the shape the SDK's
``StsAccessor._process_credential`` reads: an object (or one under ``credential`` or
``credentials``) with ``access``, ``secret``, ``securitytoken`` and ``expires_at``, with the
alternative spellings it also accepts (``accessKeyId``, ``access_key_id``, ...). We parse the
same shapes, strictly: every field a string, the keys printable ASCII, the expiry an ISO 8601
time (``2026-01-01T00:00:00.000000Z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.errors import ProtocolError

# A value we can put in a header or an HMAC key as is: printable ASCII, no spaces.
_WORD = re.compile(r"[\x21-\x7e]+")
# Security tokens are a few KiB; anything much larger is not one.
MAX_KEY_CHARS = 32 * 1024

_ACCESS = ("access", "accessKeyId", "access_key_id")
_SECRET = ("secret", "secretAccessKey", "secret_access_key")
_TOKEN = ("securitytoken", "securityToken", "security_token")
_EXPIRES = ("expires_at", "expiration")


@dataclass(frozen=True, slots=True)
class AccessKeys:
    """An AK/SK, with the security token that temporary keys need. Nothing of it in repr."""

    access: str = field(repr=False)
    secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    @property
    def temporary(self) -> bool:
        return self.security_token is not None


def is_word(value: str) -> bool:
    return len(value) <= MAX_KEY_CHARS and _WORD.fullmatch(value) is not None


def parse_temporary(body: dict[str, Any], operation: str) -> tuple[AccessKeys, float]:
    """The temporary keys in a pod identity or metadata answer, and when they end (Unix time)."""
    inner = body.get("credential", body.get("credentials", body))
    if not isinstance(inner, dict):
        raise ProtocolError(f"{operation}: the answer's credential is not an object")
    access, secret, token = (_first(inner, names, operation) for names in (_ACCESS, _SECRET, _TOKEN))
    expires = _first(inner, _EXPIRES, operation)
    if access is None or secret is None:
        raise ProtocolError(f"{operation}: the answer has no access and secret")
    for name, value in (("access", access), ("secret", secret), ("securitytoken", token)):
        if value is not None and not is_word(value):
            raise ProtocolError(f"{operation}: the answer's {name} is not a single word of printable ASCII")
    if expires is None:
        raise ProtocolError(f"{operation}: the answer has no expires_at")
    return AccessKeys(access, secret, token), parse_time(expires, operation, "expires_at")


def parse_time(value: str, operation: str, name: str) -> float:
    """ISO 8601 with a zone (``Z`` or ``+08:00``) to Unix time; a time without zone is UTC."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ProtocolError(f"{operation}: {name} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _first(mapping: dict[str, Any], names: tuple[str, ...], operation: str) -> str | None:
    for name in names:
        value = mapping.get(name)
        if value:
            if not isinstance(value, str):
                raise ProtocolError(f"{operation}: the answer's {name} is not a string")
            return value
    return None
