"""IAM password tokens against a loopback IAM: wire format, single flight, refresh ahead of
expiry, one refresh per rejection, errors."""

from __future__ import annotations

import json
import ssl
from contextlib import nullcontext

import aiohttp
import anyio
import pytest
import trustme
import yarl
from _auth_servers import FakeClock, Gate, IamServer, serving

from collector.auth import IamPassword, RefreshPolicy, Request, region_of
from collector.auth.iam import Password
from collector.errors import AuthError, ProtocolError, RequestTimeout, ServerError, TLSFailed, UsageError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

DOMAIN, USER, PASSWORD = "acme", "collector-bot", "pa55 w0rd-very-secret"
P1, P2 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "11112222333344445555666677778888"


def provider(url: str, clock: FakeClock, **kwargs) -> IamPassword:
    return IamPassword(
        endpoint=url, domain=DOMAIN, user=USER, password=Password(PASSWORD, "$IAM_PASSWORD"), clock=clock, **kwargs
    )


def request(project_id: str | None = P1) -> Request:
    url = yarl.URL(f"https://clouddc.cn-east-3.myhuaweicloud.com/v1/{project_id}/physicalservers")
    return Request("GET", url, {"Host": url.host or ""}, project_id=project_id)


async def token_of(iam: IamPassword, project_id: str = P1) -> tuple[str, object]:
    sent = request(project_id)
    generation = await iam.apply(sent)
    return sent.headers["X-Auth-Token"], generation


async def test_token_request_has_the_documented_body_and_the_token_comes_from_x_subject_token():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    async with serving(server.app()) as url:
        token, _ = await token_of(provider(url, clock))
    [seen] = server.seen
    assert seen.path == "/v3/auth/tokens"
    assert seen.query == {"nocatalog": "true"}
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"domain": {"name": DOMAIN}, "name": USER, "password": PASSWORD}},
            },
            "scope": {"project": {"id": P1}},
        }
    }
    assert token == server.issued[0]


async def test_five_thousand_concurrent_requests_cause_one_token_request():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    server.gate = Gate()  # IAM answers only once every task is waiting for the token
    tokens: list[str] = []
    generations: set[int] = set()
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        started = 0

        async def one() -> None:
            nonlocal started
            started += 1
            if started == 5000:
                server.gate.opened.set()
            token, generation = await token_of(iam)
            tokens.append(token)
            generations.add(id(generation))

        async with anyio.create_task_group() as tg:
            for _ in range(5000):
                tg.start_soon(one)
    assert len(server.seen) == 1
    assert len(tokens) == 5000 and set(tokens) == {server.issued[0]}
    assert len(generations) == 1


async def test_each_project_gets_its_own_token():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        first, _ = await token_of(iam, P1)
        second, _ = await token_of(iam, P2)
        again, _ = await token_of(iam, P1)
    assert [json.loads(s.body)["auth"]["scope"]["project"]["id"] for s in server.seen] == [P1, P2]
    assert (first, second, again) == (server.tokens_for(P1)[0], server.tokens_for(P2)[0], first)


async def test_token_is_refreshed_ahead_of_expiry_once_for_every_waiting_task():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD, lifetime=24 * 3600)
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        first, _ = await token_of(iam)
        # 5 min is less than 10 % of 24 h: the refresh is due 5 min before the end.
        clock.advance(24 * 3600 - 300 - 1)
        assert (await token_of(iam))[0] == first and len(server.seen) == 1
        clock.advance(2)
        server.gate = Gate()
        results: list[str] = []

        async def one() -> None:
            results.append((await token_of(iam))[0])

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            server.gate.opened.set()
    assert len(server.seen) == 2
    assert set(results) == {server.issued[1]} != {first}


async def test_short_lived_tokens_refresh_every_few_seconds_of_the_injected_clock():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD, lifetime=10)
    async with serving(server.app()) as url:
        iam = provider(url, clock, policy=RefreshPolicy(min_margin=1, fraction=0.1))
        seen = []
        for _ in range(30):  # 30 s of requests, one a second
            seen.append((await token_of(iam))[0])
            clock.advance(1)
    # Refreshed when 1 s of 10 was left: a new token every 9 s, never an expired one sent.
    assert len(server.seen) == 4
    assert [seen.index(token) for token in server.issued] == [0, 9, 18, 27]


async def test_failed_early_refresh_keeps_the_current_token_until_it_really_ends():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD, lifetime=3600)
    policy = RefreshPolicy(retry_interval=30)
    async with serving(server.app()) as url:
        iam = provider(url, clock, policy=policy)
        first, _ = await token_of(iam)
        server.fail_with = 503
        clock.advance(3600 - 300)  # inside the refresh margin (max(5 min, 6 min) = 6 min)
        assert (await token_of(iam))[0] == first
        assert len(server.seen) == 2
        clock.advance(10)
        assert (await token_of(iam))[0] == first and len(server.seen) == 2  # not again within 30 s
        clock.advance(30)
        assert (await token_of(iam))[0] == first and len(server.seen) == 3
        clock.advance(300)  # past the end: now the failure is the answer
        with pytest.raises(ServerError, match="HTTP 503"):
            await token_of(iam)
        server.fail_with = None
        assert (await token_of(iam))[0] == server.issued[-1] != first


async def test_a_cancelled_refresh_leaves_the_next_task_to_fetch():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    server.gate = Gate()
    tokens: list[str] = []
    async with serving(server.app()) as url:
        iam = provider(url, clock)

        async def waiter() -> None:
            tokens.append((await token_of(iam))[0])

        async with anyio.create_task_group() as tg:
            leader = anyio.CancelScope()

            async def first() -> None:
                with leader:
                    await token_of(iam)

            tg.start_soon(first)
            await server.gate.reached(1)
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()  # the waiter waits for the first task's fetch
            leader.cancel()
            await server.gate.reached(2)  # and, that one cancelled, makes its own
            server.gate.opened.set()
    assert tokens == [server.issued[-1]]


async def test_a_rejected_token_is_refreshed_once_for_every_task_that_reports_it():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        first, generation = await token_of(iam)
        server.gate = Gate()
        answers: list[bool] = []

        async def report() -> None:
            answers.append(await iam.rejected(generation))

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(report)
            await anyio.wait_all_tasks_blocked()
            server.gate.opened.set()
        server.gate = None
        assert answers == [True] * 200 and len(server.seen) == 2
        second, new_generation = await token_of(iam)
        assert second == server.issued[1] != first
        assert await iam.rejected(generation) is True  # already replaced: no new request
        assert len(server.seen) == 2
        # The fresh token rejected at once: fetching a third would only loop.
        assert await iam.rejected(new_generation) is False
        assert len(server.seen) == 2
        # Much later, a rejection of that same token is worth one more try.
        clock.advance(3600)
        assert await iam.rejected(new_generation) is True
        assert len(server.seen) == 3


async def test_wrong_password_is_an_auth_error_that_does_not_repeat_the_password():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password="another")
    server.echo = True  # a careless IAM that repeats the request in its message
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        with pytest.raises(AuthError) as info:
            await token_of(iam)
    assert info.value.status == 401
    assert "IAM token" in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    assert "***" in str(info.value)


async def test_a_rejection_while_iam_refuses_the_password_raises_the_iam_error():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    async with serving(server.app()) as url:
        iam = provider(url, clock)
        _, generation = await token_of(iam)
        server.password = "changed by the admin"
        with pytest.raises(AuthError, match="username or password is wrong"):
            await iam.rejected(generation)


async def test_iam_that_does_not_answer_is_a_timeout():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    server.gate = Gate()  # never opened before the client gives up
    async with serving(server.app()) as url:
        with pytest.raises(RequestTimeout, match=r"no answer from 127\.0\.0\.1"):
            await token_of(provider(url, clock, timeout=0.2))
        server.gate.opened.set()


async def test_an_oversized_answer_is_refused():
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    server.body_padding = 2 * 1024 * 1024
    async with serving(server.app()) as url:
        with pytest.raises(ProtocolError, match="larger than"):
            await token_of(provider(url, clock))


async def test_a_request_without_project_is_a_usage_error():
    iam = provider("https://iam.example", FakeClock())
    with pytest.raises(UsageError, match="scoped to a project"):
        await iam.apply(request(None))


async def test_iam_over_tls_verifies_the_certificate():
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    clock = FakeClock()
    server = IamServer(clock, domain=DOMAIN, user=USER, password=PASSWORD)
    async with serving(server.app(), server_tls) as url:
        with pytest.raises(TLSFailed):
            await token_of(provider(url, clock))  # the system's trust store does not know our CA
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as shared:
            iam = provider(url, clock, session_factory=lambda: nullcontext(shared))
            assert (await token_of(iam))[0] == server.issued[0]
            assert not shared.closed  # a shared session is the runner's to close


def test_region_is_read_from_a_huawei_cloud_endpoint():
    assert region_of("https://clouddc.cn-east-3.myhuaweicloud.com") == "cn-east-3"
    assert region_of("https://clouddc.ap-southeast-3.myhuaweicloud.com:443/") == "ap-southeast-3"
    assert region_of("http://127.0.0.1:8080") is None
