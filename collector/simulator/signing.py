"""SDK-HMAC-SHA256: checking AK/SK-signed requests the way Huawei Cloud's API gateway does.

The official SDK (``huaweicloudsdkcore.signer.signer.Signer``) signs a request by hashing a
canonical form of it::

    METHOD
    /uri/with/each/segment/percent-encoded/          (always ending in "/")
    sorted=query&string=pairs
    host:127.0.0.1:8080                              (one "name:value" line per signed header,
    x-sdk-date:20260101T000000Z                       names lower-case and sorted)

    host;x-sdk-date                                  (the signed header names)
    <hex sha256 of the body>                         (or UNSIGNED-PAYLOAD, see below)

and sending ``Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=h1;h2, Signature=HEX``
where the signature is HMAC-SHA256(SK, "SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of the
canonical request>"). `verify` rebuilds that from what arrived on the wire and compares; the
SDK's source is the oracle for every detail here (segment encoding with only ``~`` safe, the
trailing slash, the empty-body hash, ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`` for bodies that
are not JSON).

The gateway also refuses a request whose ``X-Sdk-Date`` is more than 15 minutes from its own
clock, and one that does not sign ``host`` and ``x-sdk-date``, so a signature cannot be replayed
later or against another host.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
CONTENT_SHA256_HEADER = "X-Sdk-Content-Sha256"
REQUIRED_SIGNED = ("host", "x-sdk-date")

_AUTHORIZATION = re.compile(
    re.escape(ALGORITHM) + r"\s+Access=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-fA-F]+)\s*"
)


class SignatureError(Exception):
    """The request is not correctly signed; the message says why, never with the secret."""


@dataclass(frozen=True, slots=True)
class Authorization:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def is_signed(authorization: str | None) -> bool:
    """Does this ``Authorization`` value claim SDK-HMAC-SHA256?"""
    return authorization is not None and authorization.startswith(ALGORITHM + " ")


def parse_authorization(value: str) -> Authorization:
    match = _AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        raise SignatureError(
            "Authorization header is not 'SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...'"
        )
    access, signed, signature = match.groups()
    return Authorization(access, tuple(signed.split(";")), signature.lower())


def encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(raw_path: str) -> str:
    """Each segment of the (decoded) path percent-encoded with only ``~`` safe, ending in ``/``."""
    path = "/".join(encode(segment) for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str) -> str:
    """``k=v`` pairs sorted by key then value, each side percent-encoded with only ``~`` safe."""
    pairs = []
    for item in raw_query.split("&") if raw_query else ():
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return "&".join(f"{encode(key)}={encode(value)}" for key, value in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    payload_hash: str,
) -> str:
    """The text the signature covers. `headers` must be case-insensitive (a CIMultiDict)."""
    lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            lines,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret_key: str, text: str) -> str:
    return hmac.new(secret_key.encode(), text.encode(), hashlib.sha256).hexdigest()


def payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    """What the SDK hashes for the body: the empty hash, UNSIGNED-PAYLOAD, or the body's sha256."""
    if not body:
        return EMPTY_SHA256
    if headers.get(CONTENT_SHA256_HEADER) == UNSIGNED_PAYLOAD:
        return UNSIGNED_PAYLOAD
    return hashlib.sha256(body).hexdigest()


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    now: float,
) -> None:
    """Raise `SignatureError` unless the request is signed with this AK/SK within the allowed skew.

    `now` is Unix time (the wall clock: ``X-Sdk-Date`` is UTC wall time, unlike the
    simulator's event-loop clock).
    """
    auth = parse_authorization(headers.get("Authorization", ""))
    if not hmac.compare_digest(auth.access_key, access_key):
        raise SignatureError("unknown access key")
    signed = auth.signed_headers
    if list(signed) != sorted(set(signed)) or any(name != name.lower() for name in signed):
        raise SignatureError("SignedHeaders must be lower-case, sorted and without repeats")
    for name in REQUIRED_SIGNED:
        if name not in signed:
            raise SignatureError(f"SignedHeaders must include {name}")
    for name in signed:
        if name not in headers:
            raise SignatureError(f"signed header {name} is missing from the request")
    sdk_date = headers["X-Sdk-Date"]
    try:
        when = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SignatureError(f"X-Sdk-Date {sdk_date!r} is not YYYYMMDDTHHMMSSZ") from None
    if abs(now - when) > MAX_SKEW_SECONDS:
        raise SignatureError(f"X-Sdk-Date {sdk_date} is more than {MAX_SKEW_SECONDS // 60} minutes from now")
    canonical = canonical_request(method, raw_path, raw_query, headers, signed, payload_hash(headers, body))
    expected = signature(secret_key, string_to_sign(canonical, sdk_date))
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("signature does not match the request")
