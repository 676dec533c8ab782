"""`collector.auth.signer.sign` against the official SDK's Signer, and against the simulator.

The SDK (``huaweicloudsdkcore``, in the ``test`` extra) is the oracle only: nothing in
collector imports it. Without it the property test fails rather than skips.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from collector.auth import AkSk, Request, sign
from collector.auth.keys import AccessKeys
from collector.auth.protocol import host_header
from collector.auth.signer import canonical_query, canonical_uri
from collector.simulator import SimConfig, Simulator
from collector.simulator.signing import verify

try:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
except ImportError as exc:  # pragma: no cover - the message is the point
    SDK_MISSING: str | None = f"huaweicloudsdkcore is not importable ({exc}): pip install -e '.[test]'"
else:
    SDK_MISSING = None

pytestmark = pytest.mark.timeout(60)

AK, SK = "SIGNERTESTAK", "signer-test-secret-key"
RESERVED = {
    "authorization",
    "x-sdk-date",
    "host",
    "x-project-id",
    "x-security-token",
    "x-sdk-content-sha256",
    "content-type",
}

# -- the SDK as oracle, over random requests ------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
# What different clients leave unencoded: nothing, "~" (the SDK), or the RFC 3986 sub-delims.
path_safe = st.sampled_from(["", "~", "~!$&'()*+,;=:@"])
query_safe = st.sampled_from(["", "~", "~/:@!$'()*,;"])
header_name = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), min_size=1, max_size=12
).filter(lambda name: name.lower() not in RESERVED)
header_value = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16).map(lambda v: f" {v} ")


@st.composite
def requests(draw):
    segments = draw(st.lists(text, max_size=5))
    safe = draw(path_safe)
    raw_path = "/" + "/".join(quote(segment, safe=safe) for segment in segments)
    if draw(st.booleans()) and not raw_path.endswith("/"):
        raw_path += "/"
    keys = st.one_of(st.sampled_from(["limit", "marker", "k"]), text)  # a small pool: repeated keys
    pairs = draw(st.lists(st.tuples(keys, st.one_of(st.just(""), text)), max_size=6))
    qsafe = draw(query_safe)
    raw_query = "&".join(f"{quote(key, safe=qsafe)}={quote(value, safe=qsafe)}" for key, value in pairs)
    port = draw(st.sampled_from([None, 443, 8443]))
    authority = "clouddc.cn-east-3.myhuaweicloud.com" + (f":{port}" if port else "")
    url = yarl.URL(f"https://{authority}{raw_path}" + (f"?{raw_query}" if raw_query else ""), encoded=True)
    names = draw(st.lists(header_name, max_size=5, unique_by=str.lower))
    headers = {name: draw(header_value) for name in names}
    content_type = draw(
        st.sampled_from(
            [
                None,
                "application/json",
                "application/json;charset=UTF-8",
                "application/bson",
                "application/octet-stream",
                "text/plain",
            ]
        )
    )
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Host"] = host_header(url)
    request = Request(
        draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "post"])),
        url,
        headers,
        draw(st.binary(max_size=64)),
        draw(st.one_of(st.none(), st.text("0123456789abcdef", min_size=1, max_size=32))),
    )
    return request, pairs


@settings(max_examples=400)
@given(
    requests(),
    st.one_of(st.none(), st.text("ABCDEFabcdef0123456789+/=", min_size=1, max_size=40)),
    st.integers(946684800, 4102444800),
)
def test_signature_equals_the_sdk_signers(drawn, security_token, now):
    if SDK_MISSING:
        pytest.fail(SDK_MISSING, pytrace=False)
    request, pairs = drawn
    ours = sign(request, AK, SK, now, security_token=security_token)

    sdk_request = SdkRequest(
        method=request.method,
        schema="https",
        host=host_header(request.url),
        resource_path=request.url.raw_path,
        query_params=list(pairs),
        header_params={**request.headers, "X-Sdk-Date": ours["X-Sdk-Date"]},
        body=request.body,
    )
    credentials = BasicCredentials(AK, SK, request.project_id)
    if security_token:
        credentials.with_security_token(security_token)
    credentials.sign_request(sdk_request)
    theirs = {name.lower(): value for name, value in sdk_request.header_params.items()}

    assert ours["Authorization"] == theirs["authorization"]
    assert {name.lower() for name in {**request.headers, **ours}} == set(theirs)
    for name, value in ours.items():
        assert value.encode().decode("iso-8859-1") == theirs[name.lower()], name


def test_canonical_forms_follow_the_reference():
    assert canonical_uri("/v1/p/a%20b/~c/%7e/%C3%A9") == "/v1/p/a%20b/~c/~/%C3%A9/"
    assert canonical_uri("/") == "/"
    assert canonical_query("b=2&a=&a=1&%7E=x+y") == "a=&a=1&b=2&~=x%2By"


# -- a known answer, independent of the SDK at test time -----------------------------------------


def test_signature_matches_a_known_answer():
    """The example of tests/test_signing.py, whose signature the SDK produced (AK1/SK1)."""
    url = yarl.URL(
        "https://clouddc.cn-east-3.myhuaweicloud.com/v1/p1/physicalservers/SN%20001~x/logs/exports"
        "?marker=a%2Fb&limit=10",
        encoded=True,
    )
    request = Request("get", url, {"Content-Type": "application/json"}, project_id="p1")
    added = sign(request, "AK1", "SK1", 1767225600)  # 2026-01-01T00:00:00Z
    assert added == {
        "X-Sdk-Date": "20260101T000000Z",
        "X-Project-Id": "p1",
        "Host": "clouddc.cn-east-3.myhuaweicloud.com",
        "Authorization": "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=c73bfe2085729a7cdadda514d96c377f480afa9344c7fddc29b8f6805707a7b0",
    }


def test_non_json_body_is_unsigned_payload_and_json_body_is_hashed():
    url = yarl.URL("https://h.example/x")
    octets = sign(Request("POST", url, {"Content-Type": "application/octet-stream"}, b"abc"), AK, SK, 0)
    assert octets["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert "X-Sdk-Content-Sha256" not in sign(
        Request("POST", url, {"Content-Type": "application/json"}, b"{}"), AK, SK, 0
    )
    # The body is covered: a different body, a different signature.
    one = sign(Request("POST", url, {"Content-Type": "application/json"}, b"{}"), AK, SK, 0)
    two = sign(Request("POST", url, {"Content-Type": "application/json"}, b"[]"), AK, SK, 0)
    assert one["Authorization"] != two["Authorization"]


def test_headers_repeated_in_another_case_are_refused():
    with pytest.raises(ValueError):
        sign(Request("GET", yarl.URL("https://h.example/"), {"Accept": "a", "accept": "b"}), AK, SK, 0)


# -- end to end: signed requests through aiohttp to the simulator's gateway ------------------------


async def send(
    session: aiohttp.ClientSession,
    provider,
    method: str,
    url: yarl.URL,
    project_id: str,
    *,
    body: bytes = b"",
    content_type: str | None = None,
) -> tuple[int, dict[str, str]]:
    headers = {"Host": host_header(url), "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    request = Request(method, url, headers, body, project_id)
    await provider.apply(request)
    async with session.request(
        request.method, request.url, headers=request.headers, data=request.body or None
    ) as response:
        await response.read()
        return response.status, dict(request.headers)


@pytest.mark.anyio
@pytest.mark.timeout(20)
@pytest.mark.parametrize("security_token", [None, "temporary-security-token"])
async def test_signed_requests_are_accepted_by_the_simulator(security_token):
    async with Simulator(SimConfig(servers=3, export_seconds=(0.01, 0.01))) as sim, aiohttp.ClientSession() as session:
        provider = AkSk.fixed(AccessKeys(sim.config.access_key, sim.config.secret_key, security_token), "test")
        base = yarl.URL(sim.url) / "v1" / sim.project_id / "physicalservers"
        sid = sim.server_ids[1]
        listing = base.with_query([("limit", "2"), ("marker", sim.server_ids[0])])
        assert (await send(session, provider, "GET", listing, sim.project_id))[0] == 200
        exports = base / sid / "logs" / "exports"
        status, sent = await send(session, provider, "POST", exports, sim.project_id)
        assert status == 202
        assert sent["X-Project-Id"] == sim.project_id
        assert sent.get("X-Security-Token") == security_token
        assert (
            await send(
                session,
                provider,
                "POST",
                exports,
                sim.project_id,
                body=b'{"why": "test"}',
                content_type="application/json",
            )
        )[0] == 202
        assert (
            await send(
                session, provider, "POST", exports, sim.project_id, body=b"plain words", content_type="text/plain"
            )
        )[0] == 202
        # A request signed with another secret is refused: the gate really checks.
        wrong = AkSk.fixed(AccessKeys(sim.config.access_key, "not-the-secret"), "test")
        assert (await send(session, wrong, "GET", listing, sim.project_id))[0] == 401
        assert sim.count("export", 202) == 3


@pytest.mark.timeout(10)
def test_the_simulators_verifier_accepts_what_sign_produces_with_odd_paths_and_queries():
    url = yarl.URL("http://127.0.0.1:8080/v1/p/a%20b/%7Ec/%C3%A9/?b=%E2%9C%93&a=&a=x%2By", encoded=True)
    request = Request("PUT", url, {"Host": "127.0.0.1:8080", "X-Trace": " spaced "}, b"\x00\x01", "p")
    now = time.time()
    headers = {**request.headers, **sign(request, AK, SK, now)}
    verify(
        "PUT",
        url.raw_path,
        url.raw_query_string,
        CIMultiDict(headers),
        request.body,
        access_key=AK,
        secret_key=SK,
        now=now,
    )
