"""SDK-HMAC-SHA256: signing a request with an AK/SK the way the official SDK does.

Huawei Cloud's API gateway accepts a request signed over a canonical form of it; the SDK's
``huaweicloudsdkcore.signer.signer.Signer`` is the reference (tests/test_auth_signer.py checks
`sign` against it over random requests). The canonical request is::

    METHOD
    /each/path/segment/percent-encoded/with/only/~/safe/      (always ending in "/")
    sorted=query&pairs=encoded-the-same-way
    host:clouddc.cn-east-3.myhuaweicloud.com                   (every header whose name has no
    x-sdk-date:20260101T000000Z                                 "_", lower-case, sorted, the
                                                                value trimmed)
    host;x-sdk-date                                            (the signed header names)
    <hex sha256 of the body>                                   (the empty-body hash for none)

and ``Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=..., Signature=HEX`` where the
signature is HMAC-SHA256(SK, "SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of the canonical
request>"). Like the SDK we sign every header we send (aiohttp's own additions are not ours to
sign), add ``X-Project-Id`` and, for temporary keys, ``X-Security-Token`` before signing, and
mark a body that is neither JSON nor BSON ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``.

The path and query are read back from what goes on the wire (``url.raw_path``,
``url.raw_query_string``) and decoded with `unquote`, as the gateway does, so whatever encoding
the client chose, the signature covers what the gateway will see. A literal ``+`` in the
query is a ``+`` here, not a space: the SDK never sends one, and neither should we.

`sign` is a pure function of the request, the keys and the time; providers call it from
`apply` and set the headers it returns.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from collector.auth.protocol import Request, host_header

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
CONTENT_SHA256 = "X-Sdk-Content-Sha256"
# Bodies the SDK hashes; any other Content-Type is sent as UNSIGNED-PAYLOAD.
_HASHED_TYPES = ("application/json", "application/bson")


def sign(request: Request, ak: str, sk: str, now: float, *, security_token: str | None = None) -> dict[str, str]:
    """The headers to set on `request` (replacing any of the same name) to sign it at `now`.

    `now` is Unix time; ``X-Sdk-Date`` is its UTC second. The result always holds
    ``X-Sdk-Date`` and ``Authorization``, and ``Host``, ``X-Project-Id`` (from
    ``request.project_id``), ``X-Security-Token`` and ``X-Sdk-Content-Sha256`` when they apply.
    """
    headers = {name.lower(): (name, value) for name, value in request.headers.items()}
    if len(headers) != len(request.headers):
        raise ValueError("request headers repeat a name in different letter cases")
    added = {"X-Sdk-Date": datetime.fromtimestamp(int(now), UTC).strftime(DATE_FORMAT)}
    if request.project_id:
        added["X-Project-Id"] = request.project_id
    if security_token:
        added["X-Security-Token"] = security_token
    if "host" not in headers:
        added["Host"] = host_header(request.url)
    content_type = headers.get("content-type", ("", None))[1]
    if content_type and not content_type.startswith(_HASHED_TYPES):
        added[CONTENT_SHA256] = UNSIGNED_PAYLOAD
    for name, value in added.items():
        headers[name.lower()] = (name, value)

    signed = sorted(lower for lower in headers if "_" not in lower)
    payload = payload_hash(headers.get(CONTENT_SHA256.lower(), ("", None))[1], request.body)
    canonical = canonical_request(
        request.method,
        request.url.raw_path,
        request.url.raw_query_string,
        {lower: headers[lower][1] for lower in signed},
        payload,
    )
    text = string_to_sign(canonical, added["X-Sdk-Date"])
    signature = hmac.new(sk.encode(), text.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    return added


def payload_hash(content_sha256: str | None, body: bytes) -> str:
    """The empty-body hash, else what ``X-Sdk-Content-Sha256`` says, else the body's sha256."""
    if not body:
        return EMPTY_SHA256
    if content_sha256:
        return content_sha256
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, raw_path: str, raw_query: str, signed: Mapping[str, str], payload: str) -> str:
    """The text whose hash is signed. `signed` maps lower-case names, sorted, to raw values."""
    lines = "".join(f"{name}:{value.strip()}\n" for name, value in signed.items())
    parts = (method.upper(), canonical_uri(raw_path), canonical_query(raw_query), lines, ";".join(signed), payload)
    return "\n".join(parts)


def canonical_uri(raw_path: str) -> str:
    path = "/".join(_encode(segment) for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str) -> str:
    """Decoded pairs sorted by key then value (decoded, as the SDK sorts), then encoded."""
    pairs = []
    for item in raw_query.split("&") if raw_query else ():
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def string_to_sign(canonical: str, sdk_date: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def _encode(text: str) -> str:
    return quote(text, safe="~")
