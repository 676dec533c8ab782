"""The simulator's IAM and pod identity: what they issue, and the gate accepting it only until
it ends. The collector's own providers talk to them, so the wire formats are the ones the
collector reads; the simulator's wall clock is a `FakeClock`, shared with the providers."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yarl
from _auth_servers import FakeClock

from collector.auth import AkSk, IamPassword, Request, sign
from collector.auth.iam import Password
from collector.auth.keys import AccessKeys, parse_temporary
from collector.auth.pod import FULL_URI_ENV, TOKEN_FILE_ENV, pod_identity_from_env
from collector.auth.protocol import host_header
from collector.errors import AuthError
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

LIFETIME = 5.0
CONFIG = SimConfig(servers=2, token_lifetime=LIFETIME, credential_lifetime=LIFETIME)


def listing_request(sim: Simulator) -> Request:
    url = yarl.URL(sim.url) / "v1" / sim.project_id / "physicalservers"
    return Request("GET", url, {"Host": host_header(url)}, project_id=sim.project_id)


async def send(session: aiohttp.ClientSession, request: Request) -> tuple[int, dict]:
    async with session.request(request.method, request.url, headers=request.headers) as response:
        return response.status, await response.json(content_type=None)


async def list_with(session: aiohttp.ClientSession, sim: Simulator, provider) -> tuple[int, dict]:
    request = listing_request(sim)
    await provider.apply(request)
    return await send(session, request)


def iam_provider(sim: Simulator, clock: FakeClock, *, password: str | None = None, **overrides) -> IamPassword:
    config = sim.config
    return IamPassword(
        endpoint=sim.iam_url,
        domain=overrides.get("domain", config.iam_domain),
        user=overrides.get("user", config.iam_user),
        password=Password(password or config.iam_password, "$IAM_PASSWORD"),
        clock=clock,
    )


def pod_provider(sim: Simulator, clock: FakeClock, token_file: Path) -> AkSk:
    return pod_identity_from_env({FULL_URI_ENV: sim.pod_identity_url, TOKEN_FILE_ENV: str(token_file)}, clock=clock)


# -- IAM ------------------------------------------------------------------------------------------


async def test_iam_token_is_accepted_until_its_lifetime_ends_then_refused_as_expired():
    clock = FakeClock()
    async with Simulator(CONFIG, wall_clock=clock) as sim, aiohttp.ClientSession() as session:
        assert (await list_with(session, sim, iam_provider(sim, clock)))[0] == 200
        request = listing_request(sim)
        await iam_provider(sim, clock).apply(request)  # a second token, as another run would get
        clock.advance(LIFETIME - 0.01)
        assert (await send(session, request))[0] == 200
        clock.advance(0.01)
        status, body = await send(session, request)
    assert status == 401
    assert body["error_code"] == "APIGW.0301"
    assert "expired" in body["error_msg"]
    assert sim.identity.tokens_issued == 2
    assert sim.identity.expired_refused == 1


async def test_iam_answers_the_documented_token_format():
    clock = FakeClock()
    config = CONFIG
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "domain": {"name": config.iam_domain},
                        "name": config.iam_user,
                        "password": config.iam_password,
                    }
                },
            },
            "scope": {"project": {"id": config.project_id}},
        }
    }
    async with (
        Simulator(config, wall_clock=clock) as sim,
        aiohttp.ClientSession() as session,
        session.post(f"{sim.iam_url}/v3/auth/tokens?nocatalog=true", json=body) as response,
    ):
        status, headers, answer = response.status, response.headers, await response.json()
    assert status == 201
    assert headers["X-Subject-Token"].startswith("MII")
    assert answer["token"]["expires_at"] == "2027-01-15T08:00:05.000000Z"  # FakeClock's T0 + 5 s
    assert answer["token"]["project"]["id"] == config.project_id
    assert "catalog" not in answer["token"]


@pytest.mark.parametrize("field", ["domain", "user", "password", "project"])
async def test_iam_refuses_any_wrong_part_of_the_identity_with_401(field):
    clock = FakeClock()
    async with Simulator(CONFIG, wall_clock=clock) as sim:
        if field == "password":
            provider = iam_provider(sim, clock, password="not-the-password")
        elif field == "project":
            provider = iam_provider(sim, clock)
        else:
            provider = iam_provider(sim, clock, **{field: "someone-else"})
        request = listing_request(sim)
        if field == "project":
            request.project_id = "0" * 32
        with pytest.raises(AuthError) as info:
            await provider.apply(request)
    assert info.value.status == 401
    assert sim.identity.tokens_issued == 0
    assert sim.snapshot(timeline=False)["identity"]["refused"] == {"iam 401": 1}


async def test_iam_answers_400_to_a_body_that_is_not_a_password_identity():
    async with (
        Simulator(CONFIG) as sim,
        aiohttp.ClientSession() as session,
        session.post(f"{sim.iam_url}/v3/auth/tokens", data=b'{"auth": []}') as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == 400


# -- pod identity ---------------------------------------------------------------------------------


async def test_pod_identity_keys_sign_requests_until_they_end(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(CONFIG.pod_token + "\n")
    async with Simulator(CONFIG, wall_clock=clock) as sim, aiohttp.ClientSession() as session:
        provider = pod_provider(sim, clock, token_file)
        request = listing_request(sim)
        await provider.apply(request)
        assert request.headers["X-Security-Token"].startswith("sim-security-token-")
        assert (await send(session, request))[0] == 200
        first = request.headers["Authorization"]
        clock.advance(LIFETIME)
        request = listing_request(sim)
        await provider.apply(request)  # the keys have ended: the provider fetches new ones first
        assert (await send(session, request))[0] == 200
    assert sim.identity.credentials_issued == 2
    assert _access(request.headers["Authorization"]) != _access(first)


def _access(authorization: str) -> str:
    return authorization.split("Access=")[1].split(",", maxsplit=1)[0]


async def test_pod_identity_keys_that_ended_are_refused(tmp_path):
    clock = FakeClock()
    async with Simulator(CONFIG, wall_clock=clock) as sim, aiohttp.ClientSession() as session:
        keys, _ = await fetch_pod_keys(session, sim)
        request = listing_request(sim)
        request.headers.update(sign(request, keys.access, keys.secret, clock(), security_token=keys.security_token))
        assert (await send(session, request))[0] == 200
        clock.advance(LIFETIME)
        request = listing_request(sim)
        request.headers.update(sign(request, keys.access, keys.secret, clock(), security_token=keys.security_token))
        status, body = await send(session, request)
    assert status == 401
    assert body["error_code"] == "APIGW.0301"
    assert "expired" in body["error_msg"]
    assert sim.identity.expired_refused == 1


@pytest.mark.parametrize("security_token", [None, "sim-security-token-of-someone-else"])
async def test_pod_identity_keys_need_their_own_security_token(security_token):
    clock = FakeClock()
    async with Simulator(CONFIG, wall_clock=clock) as sim, aiohttp.ClientSession() as session:
        keys, _ = await fetch_pod_keys(session, sim)
        request = listing_request(sim)
        request.headers.update(sign(request, keys.access, keys.secret, clock(), security_token=security_token))
        status, body = await send(session, request)
    assert status == 401
    assert "X-Security-Token" in body["error_msg"]


async def test_pod_identity_refuses_a_wrong_service_account_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("not-the-service-account-token")
    async with Simulator(CONFIG) as sim:
        with pytest.raises(AuthError) as info:
            await pod_provider(sim, FakeClock(), token_file).apply(listing_request(sim))
    assert info.value.status == 401
    assert sim.identity.credentials_issued == 0
    assert sim.snapshot(timeline=False)["identity"]["refused"] == {"pod_identity 401": 1}


async def fetch_pod_keys(session: aiohttp.ClientSession, sim: Simulator) -> tuple[AccessKeys, float]:
    headers = {"Authorization": sim.config.pod_token}
    async with session.post(sim.pod_identity_url, headers=headers, json={}) as response:
        assert response.status == 200
        return parse_temporary(json.loads(await response.read()), "test")


# -- fixed temporary AK/SK ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("security_token", "status"), [("sim-fixed-security-token", 200), (None, 401), ("another-security-token", 401)]
)
async def test_configured_temporary_keys_need_the_configured_security_token(security_token, status):
    config = SimConfig(servers=2, security_token="sim-fixed-security-token")
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        provider = AkSk.fixed(AccessKeys(config.access_key, config.secret_key, security_token), "test")
        assert (await list_with(session, sim, provider))[0] == status


async def test_permanent_keys_sign_without_a_security_token():
    async with Simulator(CONFIG) as sim, aiohttp.ClientSession() as session:
        provider = AkSk.fixed(AccessKeys(CONFIG.access_key, CONFIG.secret_key), "test")
        assert (await list_with(session, sim, provider))[0] == 200


# -- the counts, out of process --------------------------------------------------------------------


async def test_stats_count_what_iam_and_pod_identity_issued(tmp_path):
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text(CONFIG.pod_token)
    async with Simulator(CONFIG, wall_clock=clock) as sim, aiohttp.ClientSession() as session:
        await list_with(session, sim, iam_provider(sim, clock))
        clock.advance(1)
        await list_with(session, sim, pod_provider(sim, clock, token_file))
        async with session.get(f"{sim.url}/_sim/stats") as response:
            stats = await response.json()
    identity = stats["identity"]
    assert (identity["iam_tokens_issued"], identity["pod_credentials_issued"]) == (1, 1)
    assert identity["issued"] == [[0.0, "iam"], [1.0, "pod_identity"]]
    assert stats["requests"]["iam"] == {"201": 1}
    assert stats["requests"]["pod_identity"] == {"200": 1}
