"""AK/SK (SDK-HMAC-SHA256) requests to the simulator, checked against the official SDK's signer.

The SDK (``huaweicloudsdkcore``, in the ``test`` extra) is the oracle: what its `Signer` and its
CloudDC client send must be accepted, and any change to a signed part must not. Without the
SDK these tests fail rather than skip, so a missing oracle never passes silently.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

import aiohttp
import anyio
import pytest
from multidict import CIMultiDict
from yarl import URL

from collector.simulator import SimConfig, Simulator
from collector.simulator.signing import (
    EMPTY_SHA256,
    SignatureError,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
)

try:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer
except ImportError as exc:  # pragma: no cover - the message is the point
    SDK_MISSING: str | None = (
        f"huaweicloudsdkcore is not importable ({exc}); these tests need the official SDK as their "
        "oracle: pip install -e '.[test]'"
    )
else:
    SDK_MISSING = None

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

AK, SK = "SIMAK", "SIMSK"


def require_sdk() -> None:
    """Fail (not skip, not error) when the oracle is missing."""
    if SDK_MISSING:
        pytest.fail(SDK_MISSING, pytrace=False)


def sdk_date(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y%m%dT%H%M%SZ")


def signed(
    sim: Simulator,
    method: str,
    path: str,
    *,
    sk: str = SK,
    query: list[tuple[str, object]] | None = None,
    date: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The URL and headers the SDK's Signer produces, with the headers its client adds."""
    url = URL(sim.url)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "huaweicloud-usdk-python/3.0",
        "X-Project-Id": sim.project_id,
    }
    if date is not None:
        headers["X-Sdk-Date"] = date
    request = SdkRequest(
        method=method,
        schema="http",
        host=f"{url.host}:{url.port}",
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=b"",
    )
    Signer(BasicCredentials(AK, sk)).sign(request)
    return f"{sim.url}{request.uri}", dict(request.header_params)


def exports_path(sim: Simulator, sid: str) -> str:
    return f"/v1/{sim.project_id}/physicalservers/{sid}/logs/exports"


async def send(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict]:
    # encoded=True: send the path and query exactly as the signer wrote them.
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, URL(url, encoded=True), headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


# -- the official client, end to end ----------------------------------------------------------


async def test_sdk_client_exports_polls_and_downloads_with_ak_sk():
    require_sdk()
    from huaweicloudsdkclouddc.v1 import (
        CloudDCClient,
        DownloadServerLogsRequest,
        ExportServerLogsRequest,
        ShowLogsExportStatusRequest,
    )
    from huaweicloudsdkcore.http.http_config import HttpConfig

    async with Simulator(SimConfig(servers=4, export_seconds=(0.05, 0.05))) as sim:
        # A server whose created_at ends in "Z": the SDK warns on "+00:00" (it appends a Z).
        sid = next(s for s in sim.server_ids if sim.server(s).zulu)
        config = HttpConfig.get_default_config()
        config.ignore_ssl_verification = True
        client = (
            CloudDCClient.new_builder()
            .with_credentials(BasicCredentials(AK, SK, sim.project_id))
            .with_endpoint(sim.url)
            .with_http_config(config)
            .build()
        )

        def sweep_one() -> bytes:
            try:
                export = client.export_server_logs(ExportServerLogsRequest(id=sid))
                time.sleep(0.1)
                status = client.show_logs_export_status(ShowLogsExportStatusRequest(id=sid, export_id=export.export_id))
                assert status.status.lower() == "completed"
                chunks: list[bytes] = []
                download = client.download_server_logs(DownloadServerLogsRequest(id=sid, export_id=export.export_id))
                download.consume_download_stream(lambda stream: chunks.append(stream.content))
                return b"".join(chunks)
            finally:
                client.close()

        body = await anyio.to_thread.run_sync(sweep_one)
        assert body == sim.expected_archive(sid)
        assert (sim.count("export", 202), sim.count("status", 200), sim.count("download", 200)) == (1, 1, 1)
        seen = sim.download_requests[0].headers
        assert seen["Authorization"].startswith("SDK-HMAC-SHA256 Access=SIMAK, ")
        assert "X-Auth-Token" not in seen


# -- the signer against the gate --------------------------------------------------------------


async def test_signed_list_with_query_is_accepted():
    require_sdk()
    async with Simulator(SimConfig(servers=5)) as sim:
        path = f"/v1/{sim.project_id}/physicalservers"
        url, headers = signed(sim, "GET", path, query=[("marker", sim.server_ids[1]), ("limit", 2)])
        status, body = await send("GET", url, headers)
        assert status == 200
        assert [s["id"] for s in body["servers"]] == sim.server_ids[2:4]


async def test_date_within_fifteen_minutes_is_accepted():
    require_sdk()
    async with Simulator(SimConfig(servers=1)) as sim:
        url, headers = signed(sim, "POST", exports_path(sim, sim.server_ids[0]), date=sdk_date(-14 * 60))
        assert (await send("POST", url, headers))[0] == 202


def _flip_signature(headers: dict[str, str]) -> None:
    value = headers["Authorization"]
    last = value[-1]
    headers["Authorization"] = value[:-1] + ("0" if last != "0" else "1")


@pytest.mark.parametrize(
    "case, why",
    [
        ("wrong_signature", "signature does not match"),
        ("wrong_sk", "signature does not match"),
        ("stale_date", "more than 15 minutes from now"),
        ("future_date", "more than 15 minutes from now"),
        ("tampered_path", "signature does not match"),
        ("tampered_signed_header", "signature does not match"),
        ("unknown_ak", "unknown access key"),
        ("host_not_signed", "must include host"),
    ],
)
async def test_bad_signatures_are_401(case, why):
    require_sdk()
    async with Simulator(SimConfig(servers=2)) as sim:
        first, second = sim.server_ids
        path = exports_path(sim, first)
        date = {"stale_date": sdk_date(-16 * 60), "future_date": sdk_date(16 * 60)}.get(case)
        url, headers = signed(sim, "POST", path, sk="WRONG" if case == "wrong_sk" else SK, date=date)
        if case == "wrong_signature":
            _flip_signature(headers)
        elif case == "tampered_path":
            url = url.replace(first, second)
        elif case == "tampered_signed_header":
            headers["X-Project-Id"] = "another-project"
        elif case == "unknown_ak":
            headers["Authorization"] = headers["Authorization"].replace("Access=SIMAK", "Access=OTHERAK")
        elif case == "host_not_signed":
            headers["Authorization"] = headers["Authorization"].replace(";host;", ";")
        status, body = await send("POST", url, headers)
        assert status == 401
        assert body["error_code"] == "APIGW.0301"
        assert why in body["error_msg"]
        assert sim.exports_started.total() == 0


async def test_a_token_still_works_and_a_wrong_one_does_not():
    async with Simulator(SimConfig(servers=1)) as sim:
        path = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        assert (await send("GET", path, {"X-Auth-Token": sim.token}))[0] == 200
        assert (await send("GET", path, {"X-Auth-Token": "nope"}))[0] == 401


# -- a known answer, independent of the SDK at test time ----------------------------------------

# Written out by hand from the spec; the signature is what the SDK's Signer produced for it
# (AK1/SK1, X-Sdk-Date 20260101T000000Z), recorded once.
KNOWN_CANONICAL = """\
GET
/v1/p1/physicalservers/SN%20001~x/logs/exports/
limit=10&marker=a%2Fb
content-type:application/json
host:clouddc.cn-east-3.myhuaweicloud.com
x-project-id:p1
x-sdk-date:20260101T000000Z

content-type;host;x-project-id;x-sdk-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"""
KNOWN_SIGNATURE = "c73bfe2085729a7cdadda514d96c377f480afa9344c7fddc29b8f6805707a7b0"


def test_canonical_request_and_signature_match_a_known_answer():
    headers = CIMultiDict(
        {
            "Host": "clouddc.cn-east-3.myhuaweicloud.com",
            "X-Sdk-Date": "20260101T000000Z",
            "Content-Type": " application/json ",  # values are trimmed
            "X-Project-Id": "p1",
        }
    )
    signed_headers = ("content-type", "host", "x-project-id", "x-sdk-date")
    canonical = canonical_request(
        "get",
        "/v1/p1/physicalservers/SN%20001~x/logs/exports",
        "marker=a%2Fb&limit=10",
        headers,
        signed_headers,
        EMPTY_SHA256,
    )
    assert canonical == KNOWN_CANONICAL
    text = string_to_sign(canonical, "20260101T000000Z")
    digest = hashlib.sha256(KNOWN_CANONICAL.encode()).hexdigest()
    assert text == f"SDK-HMAC-SHA256\n20260101T000000Z\n{digest}"
    assert signature("SK1", text) == KNOWN_SIGNATURE
    assert hmac.new(b"SK1", text.encode(), hashlib.sha256).hexdigest() == KNOWN_SIGNATURE


def test_authorization_header_is_parsed_strictly():
    auth = parse_authorization("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=ABCDEF01")
    assert (auth.access_key, auth.signed_headers, auth.signature) == ("AK1", ("host", "x-sdk-date"), "abcdef01")
    with pytest.raises(SignatureError):
        parse_authorization("SDK-HMAC-SHA256 Access=AK1, Signature=abcdef01")
