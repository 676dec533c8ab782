"""Temporary AK/SK from CCE pod identity and the ECS metadata service, against loopback
servers speaking the SDK's wire format; the keys they hand out sign requests the simulator
accepts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import anyio
import pytest
import yarl
from _auth_servers import FakeClock, Gate, KeyIssuer, MetadataServer, PodIdentityServer, serving
from multidict import CIMultiDict

from collector.auth import Request, default_chain, provider_from_spec
from collector.auth.keys import parse_temporary
from collector.auth.metadata import MetadataService, metadata_credentials
from collector.auth.pod import pod_identity_from_env
from collector.auth.protocol import host_header
from collector.errors import AuthError, ProtocolError
from collector.simulator import SimConfig, Simulator
from collector.simulator.signing import verify

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.service-account-token.secret"


def pod_env(url: str, token_file) -> dict[str, str]:
    return {
        "HC_CONTAINER_CREDENTIALS_FULL_URI": f"{url}/v1/credentials",
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }


def api_request(project_id: str = "p1") -> Request:
    url = yarl.URL(f"https://clouddc.cn-east-3.myhuaweicloud.com/v1/{project_id}/physicalservers")
    return Request("GET", url, {"Host": host_header(url)}, project_id=project_id)


async def signed_with(provider) -> tuple[dict[str, str], object]:
    request = api_request()
    generation = await provider.apply(request)
    return request.headers, generation


def access_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split("Access=")[1].split(",")[0]


# -- CCE pod identity -------------------------------------------------------------------------------


async def test_pod_identity_posts_the_service_account_token_and_signs_with_the_temporary_keys(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN + "\n")
    server = PodIdentityServer(KeyIssuer(clock), token_file)
    async with serving(server.app()) as url:
        provider = pod_identity_from_env(pod_env(url, token_file), clock=clock)
        headers, _ = await signed_with(provider)
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/credentials")
    assert seen.headers["Authorization"] == SA_TOKEN
    assert json.loads(seen.body) == {}
    ak, sk, security_token = server.issuer.issued[0]
    assert access_of(headers) == ak
    assert headers["X-Security-Token"] == security_token
    request = api_request()
    verify("GET", request.url.raw_path, "", CIMultiDict(headers), b"", access_key=ak, secret_key=sk, now=clock())


async def test_pod_identity_keys_are_refreshed_before_they_end_and_the_rotated_token_is_sent(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    server = PodIdentityServer(KeyIssuer(clock, lifetime=3600), token_file)
    async with serving(server.app()) as url:
        provider = pod_identity_from_env(pod_env(url, token_file), clock=clock)
        first, _ = await signed_with(provider)
        clock.advance(3600 - 5 * 60 - 1)  # margin: min(5 min, 10 % of 1 h) = 5 min
        assert access_of((await signed_with(provider))[0]) == access_of(first)
        token_file.write_text("rotated-by-the-kubelet")
        clock.advance(2)
        server.gate = Gate()
        accesses: list[str] = []

        async def one() -> None:
            accesses.append(access_of((await signed_with(provider))[0]))

        async with anyio.create_task_group() as tg:
            for _ in range(500):
                tg.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            server.gate.opened.set()
    assert len(server.seen) == 2
    assert server.seen[1].headers["Authorization"] == "rotated-by-the-kubelet"
    assert set(accesses) == {server.issuer.issued[1][0]}


async def test_a_rejected_temporary_key_is_refetched_once(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    server = PodIdentityServer(KeyIssuer(clock), token_file)
    async with serving(server.app()) as url:
        provider = pod_identity_from_env(pod_env(url, token_file), clock=clock)
        _, generation = await signed_with(provider)
        results = []

        async def report() -> None:
            results.append(await provider.rejected(generation))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(report)
    assert results == [True] * 50
    assert len(server.seen) == 2


async def test_pod_identity_refusal_is_an_auth_error_without_the_token(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    server = PodIdentityServer(KeyIssuer(clock), token_file)
    server.fail_with = 403  # and it repeats the token it was sent
    async with serving(server.app()) as url:
        provider = pod_identity_from_env(pod_env(url, token_file), clock=clock)
        with pytest.raises(AuthError) as info:
            await signed_with(provider)
    assert "CCE pod identity: HTTP 403" in str(info.value)
    assert SA_TOKEN not in str(info.value)


async def test_pod_identity_keys_sign_requests_the_simulator_accepts(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    async with Simulator(SimConfig(servers=2)) as sim:
        issuer = KeyIssuer(clock, fixed=(sim.config.access_key, sim.config.secret_key))
        server = PodIdentityServer(issuer, token_file)
        async with serving(server.app()) as url, aiohttp.ClientSession() as session:
            # The wall clock here: the simulator refuses an X-Sdk-Date 15 min away from its own.
            provider = pod_identity_from_env(pod_env(url, token_file))
            target = yarl.URL(sim.url) / "v1" / sim.project_id / "physicalservers"
            request = Request("GET", target, {"Host": host_header(target)}, project_id=sim.project_id)
            await provider.apply(request)
            async with session.get(request.url, headers=request.headers) as response:
                assert response.status == 200
                assert len((await response.json())["servers"]) == 2


# -- ECS metadata -----------------------------------------------------------------------------------


async def test_metadata_fetches_a_session_token_then_the_agency_keys():
    clock = FakeClock()
    server = MetadataServer(KeyIssuer(clock))
    async with serving(server.app()) as url:
        provider = metadata_credentials(MetadataService(url, clock=clock), clock=clock)
        headers, _ = await signed_with(provider)
    put, get = server.seen
    assert (put.method, put.path, put.headers["X-Metadata-Token-Ttl-Seconds"]) == (
        "PUT",
        "/meta-data/latest/api/token",
        "21600",
    )
    assert (get.method, get.path, get.headers["X-Metadata-Token"]) == (
        "GET",
        "/openstack/latest/securitykey",
        "session-1",
    )
    assert access_of(headers) == server.issuer.issued[0][0]
    assert headers["X-Security-Token"] == server.issuer.issued[0][2]


async def test_metadata_without_the_token_api_asks_for_keys_without_a_token():
    clock = FakeClock()
    server = MetadataServer(KeyIssuer(clock, lifetime=600), token_api=False)
    async with serving(server.app()) as url:
        provider = metadata_credentials(MetadataService(url, clock=clock), clock=clock)
        await signed_with(provider)
        clock.advance(560)  # past the refresh point (1 min of a 10 min lifetime: 10 % is less than 5 min)
        await signed_with(provider)
    assert server.count("PUT") == 1  # the token API is not asked again within a day
    assert server.count("GET") == 2
    assert all("X-Metadata-Token" not in seen.headers for seen in server.seen if seen.method == "GET")


async def test_metadata_session_token_that_ended_is_fetched_again_once():
    clock = FakeClock()
    server = MetadataServer(KeyIssuer(clock, lifetime=3600))
    async with serving(server.app()) as url:
        provider = metadata_credentials(MetadataService(url, clock=clock), clock=clock)
        await signed_with(provider)
        server.forget_tokens()
        clock.advance(3500)
        headers, _ = await signed_with(provider)
    assert [s.method for s in server.seen] == ["PUT", "GET", "GET", "PUT", "GET"]
    assert access_of(headers) == server.issuer.issued[1][0]


async def test_metadata_without_an_agency_is_an_auth_error_saying_so():
    clock = FakeClock()
    server = MetadataServer(KeyIssuer(clock), agency=False)
    async with serving(server.app()) as url:
        provider = provider_from_spec("metadata", {"endpoint": url}, environ={}, base_dir=Path("."), clock=clock)
        with pytest.raises(AuthError, match="Please configure Cloud Service Agency first"):
            await signed_with(provider)
    assert server.count("PUT") == 1  # an agency problem is not a session-token problem


# -- the answer's shape, against the SDK's reader -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {
            "credential": {
                "access": "A1",
                "secret": "S1",
                "securitytoken": "T1",
                "expires_at": "2027-01-15T08:00:00.000000Z",
            }
        },
        {
            "credentials": {
                "accessKeyId": "A1",
                "secretAccessKey": "S1",
                "securityToken": "T1",
                "expiration": "2027-01-15T08:00:00.000000Z",
            }
        },
        {
            "access_key_id": "A1",
            "secret_access_key": "S1",
            "security_token": "T1",
            "expires_at": "2027-01-15T08:00:00.000000Z",
        },
    ],
)
def test_temporary_keys_are_read_as_the_sdk_reads_them(body):
    from huaweicloudsdkcore.auth.internal import StsAccessor

    theirs = StsAccessor._process_credential(json.dumps(body))
    keys, expires_at = parse_temporary(body, "test")
    assert (keys.access, keys.secret, keys.security_token) == (theirs.access, theirs.secret, theirs.security_token)
    assert expires_at == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "body, why",
    [
        ({"credential": {"access": "A1", "expires_at": "2027-01-15T08:00:00Z"}}, "no access and secret"),
        ({"credential": {"access": "A1", "secret": "S 1", "expires_at": "2027-01-15T08:00:00Z"}}, "printable ASCII"),
        ({"credential": {"access": "A1", "secret": "S1"}}, "no expires_at"),
        ({"credential": {"access": "A1", "secret": "S1", "expires_at": "tomorrow"}}, "not an ISO 8601 time"),
        ({"credential": {"access": 1, "secret": "S1", "expires_at": "2027-01-15T08:00:00Z"}}, "not a string"),
        ({"credential": ["A1"]}, "not an object"),
    ],
)
def test_malformed_temporary_keys_are_a_protocol_error_without_the_secret(body, why):
    with pytest.raises(ProtocolError, match=why) as info:
        parse_temporary(body, "test")
    assert "S 1" not in str(info.value) and "S1" not in str(info.value)


# -- the default chain ---------------------------------------------------------------------------------


async def test_chain_falls_through_to_metadata_and_primes_it(tmp_path):
    clock = FakeClock()
    server = MetadataServer(KeyIssuer(clock))
    async with serving(server.app()) as url:
        provider = await default_chain({"HOME": str(tmp_path)}, clock=clock, metadata_endpoint=url)
        assert "ECS metadata" in provider.describe()
        headers, _ = await signed_with(provider)
    assert server.count("GET") == 1  # the probe's keys are the ones used
    assert access_of(headers) == server.issuer.issued[0][0]


async def test_chain_prefers_pod_identity_to_metadata(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    env = {"HOME": str(tmp_path), **pod_env("http://127.0.0.1:9", token_file)}
    provider = await default_chain(env, metadata_endpoint="http://127.0.0.1:9")
    assert provider.describe().startswith("temporary AK/SK from CCE pod identity")
