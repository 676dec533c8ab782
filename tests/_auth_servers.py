"""Tiny loopback servers for the credential sources: IAM, CCE pod identity, ECS metadata.

Each records what it received and answers in the wire format the official SDK reads. They
share the test's `FakeClock`, so expiry times they hand out move with the clock the providers
read; nothing here sleeps.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from _clock import FakeClock as _Clock
from aiohttp import web
from multidict import CIMultiDict

T0 = 1_800_000_000.0  # 2027-01-15, Unix time


class FakeClock(_Clock):
    """The tests' clock (tests/_clock.py), starting at the credentials' epoch."""

    def __init__(self, now: float = T0) -> None:
        super().__init__(now)


def iso(when: float) -> str:
    """The SDK's format: 2027-01-15T08:00:00.000000Z."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes


@asynccontextmanager
async def serving(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        host, port = runner.addresses[0][:2]
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


async def _seen(request: web.Request) -> Seen:
    return Seen(request.method, request.path, dict(request.query), CIMultiDict(request.headers), await request.read())


class Gate:
    """Holds answers until opened: lets a test have every task waiting before one answer, and
    wait until a given number of requests have reached the server."""

    def __init__(self) -> None:
        self.opened = anyio.Event()
        self.arrived = 0
        self._arrival = anyio.Event()

    async def passed(self) -> None:
        self.arrived += 1
        self._arrival.set()
        self._arrival = anyio.Event()
        await self.opened.wait()

    async def reached(self, count: int) -> None:
        while self.arrived < count:
            await self._arrival.wait()


class IamServer:
    """``POST /v3/auth/tokens``: password identity in, token in ``X-Subject-Token`` out."""

    def __init__(self, clock: FakeClock, *, domain: str, user: str, password: str, lifetime: float = 86400) -> None:
        self.clock = clock
        self.domain, self.user, self.password = domain, user, password
        self.lifetime = lifetime
        self.seen: list[Seen] = []
        self.issued: list[str] = []
        self.fail_with: int | None = None  # answer this status instead
        self.echo = False  # error bodies repeat the request body (a careless server)
        self.gate: Gate | None = None
        self.body_padding = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/auth/tokens", self.tokens)
        return app

    def tokens_for(self, project_id: str) -> list[str]:
        return [token for token in self.issued if f"-{project_id}-" in token]

    async def tokens(self, request: web.Request) -> web.Response:
        seen = await _seen(request)
        self.seen.append(seen)
        if self.gate is not None:
            await self.gate.passed()
        if self.fail_with is not None:
            message = seen.body.decode() if self.echo else "The service is unavailable."
            return web.json_response(
                {"error": {"code": self.fail_with, "message": message, "title": "x"}}, status=self.fail_with
            )
        body = json.loads(seen.body)
        user = body["auth"]["identity"]["password"]["user"]
        if (user["domain"]["name"], user["name"], user["password"]) != (self.domain, self.user, self.password):
            message = seen.body.decode() if self.echo else "The username or password is wrong."
            return web.json_response(
                {"error": {"code": 401, "message": message, "title": "Unauthorized"}},
                status=401,
                headers={"X-IAM-Trace-Id": "trace-1"},
            )
        project_id = body["auth"]["scope"]["project"]["id"]
        token = f"MIIt-{project_id}-{len(self.issued) + 1}"
        self.issued.append(token)
        now = self.clock()
        answer = {
            "token": {
                "expires_at": iso(now + self.lifetime),
                "issued_at": iso(now),
                "methods": ["password"],
                "project": {"id": project_id, "name": "cn-east-3"},
                "user": {"name": self.user, "domain": {"name": self.domain}},
            },
            "padding": "x" * self.body_padding,
        }
        return web.json_response(answer, status=201, headers={"X-Subject-Token": token})


def credential_answer(access: str, secret: str, token: str, expires_at: float) -> dict:
    return {"credential": {"access": access, "secret": secret, "securitytoken": token, "expires_at": iso(expires_at)}}


class KeyIssuer:
    """Temporary keys, a new AK/SK/token each time, ending `lifetime` after issue."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600, *, fixed: tuple[str, str] | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.fixed = fixed  # always this AK/SK (the simulator's), with a new security token
        self.issued: list[tuple[str, str, str]] = []

    def issue(self) -> dict:
        n = len(self.issued) + 1
        ak, sk = self.fixed or (f"TEMPAK{n:04d}", f"tempsk-secret-{n:04d}")
        keys = (ak, sk, f"securitytoken-{n:04d}")
        self.issued.append(keys)
        return credential_answer(*keys, self.clock() + self.lifetime)


class PodIdentityServer:
    """CCE's pod identity agent: ``POST /v1/credentials`` with the service-account token."""

    def __init__(self, issuer: KeyIssuer, token_file) -> None:
        self.issuer = issuer
        self.token_file = token_file
        self.seen: list[Seen] = []
        self.fail_with: int | None = None
        self.gate: Gate | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/credentials", self.credentials)
        return app

    async def credentials(self, request: web.Request) -> web.Response:
        seen = await _seen(request)
        self.seen.append(seen)
        if self.gate is not None:
            await self.gate.passed()
        expected = self.token_file.read_text().strip()
        if seen.headers.get("Authorization") != expected:
            return web.json_response({"error_code": "PI.0401", "error_msg": "bad service account token"}, status=401)
        if self.fail_with is not None:
            # A careless agent that repeats what it was sent.
            return web.Response(status=self.fail_with, text=f"refused {seen.headers.get('Authorization')}")
        return web.json_response(self.issuer.issue())


class MetadataServer:
    """The ECS metadata service: session tokens, then the agency's temporary keys."""

    def __init__(self, issuer: KeyIssuer, *, token_api: bool = True, agency: bool = True) -> None:
        self.issuer = issuer
        self.token_api = token_api
        self.agency = agency
        self.seen: list[Seen] = []
        self.tokens: list[str] = []  # session tokens issued; only the last one is valid

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/meta-data/latest/api/token", self.token)
        app.router.add_get("/openstack/latest/securitykey", self.securitykey)
        return app

    def count(self, method: str) -> int:
        return sum(1 for seen in self.seen if seen.method == method)

    def forget_tokens(self) -> None:
        """Session tokens end (a reboot, their TTL): the next key request gets 401."""
        self.tokens.append("expired-everything")

    async def token(self, request: web.Request) -> web.Response:
        seen = await _seen(request)
        self.seen.append(seen)
        if not self.token_api:
            return web.Response(status=404, text="Not Found")
        token = f"session-{len(self.tokens) + 1}"
        self.tokens.append(token)
        return web.Response(text=token)

    async def securitykey(self, request: web.Request) -> web.Response:
        seen = await _seen(request)
        self.seen.append(seen)
        if not self.agency:
            return web.Response(status=401, text='{"error": "Please configure Cloud Service Agency first"}')
        if self.token_api and (not self.tokens or seen.headers.get("X-Metadata-Token") != self.tokens[-1]):
            return web.Response(status=401, text="token invalid")
        return web.json_response(self.issuer.issue())
