"""A CloudDC that only lists servers, over http or https, for what the simulator cannot do
(TLS, a listing with unusable ids, an answer without ``count``); and `collector` as a process
beside a test's servers."""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path

import anyio
import trustme
import yaml
from aiohttp import web

PROJECT = "p1"
TOKEN = "the-good-token"


class Listing:
    """``GET /v1/{project}/physicalservers``: the `servers` given, paged by ``limit`` and
    ``marker``, with ``count`` unless `count` is False; the token in ``X-Auth-Token`` checked
    (401) and `status` answered instead, if set."""

    def __init__(self, servers: list[dict], *, count: bool = True, status: int | None = None) -> None:
        self.servers = servers
        self.count = count
        self.status = status
        self.seen: list[web.Request] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/{project}/physicalservers", self.list)
        return app

    async def list(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        if request.headers.get("X-Auth-Token") != TOKEN:
            return web.json_response({"error_code": "APIGW.0301", "error_msg": "token invalid"}, status=401)
        if self.status is not None:
            return web.json_response({"error_code": "CLOUDDC.9", "error_msg": "not this time"}, status=self.status)
        ids = [server["id"] for server in self.servers]
        start = ids.index(request.query["marker"]) + 1 if "marker" in request.query else 0
        page = self.servers[start : start + int(request.query.get("limit", "1000"))]
        answer: dict = {"servers": page, "page_info": {"current_count": len(page)}}
        if start + len(page) < len(self.servers):
            answer["page_info"]["next_marker"] = page[-1]["id"]
        if self.count:
            answer["count"] = len(self.servers)
        return web.json_response(answer)


def servers(n: int) -> list[dict]:
    return [{"id": f"2102313YJK10N{index:07d}", "name": f"node-{index:04d}"} for index in range(n)]


def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 from a fresh CA, and that CA's bundle as a file."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return server, bundle


def write_inventory(path: Path, endpoint: str, *, token: str = TOKEN, **extra) -> Path:
    """An inventory of one project at `endpoint`, its token in a file beside it; `extra` keys
    (``servers``, ``discover``, ``tls``) as given, one listed server if neither of the first two is."""
    token_file = path.with_suffix(".token")
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    if "servers" not in extra and "discover" not in extra:
        extra["servers"] = ["2102313YJK10N0000000"]
    inventory = {"endpoint": endpoint, "project_id": PROJECT, "auth": {"token_file": str(token_file)}, **extra}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


async def collector(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`collector ARGS` in its own process, while this test's servers keep serving:
    exit code, stdout, stderr."""
    done = await anyio.run_process(
        [sys.executable, "-m", "collector", *args], env={**os.environ, **(env or {})}, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def run_argv(inventory: Path, out: Path, *flags: str) -> list[str]:
    """The command line of `collector run -i INVENTORY -o OUT FLAGS...`, for a process a test
    watches (signals, stderr as it comes)."""
    return [sys.executable, "-m", "collector", "run", "-i", str(inventory), "-o", str(out), *flags]


async def collector_run(
    inventory: Path, out: Path, *flags: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`collector run -i INVENTORY -o OUT FLAGS...` in its own process: exit code, stdout, stderr."""
    return await collector(*run_argv(inventory, out, *flags)[3:], env=env)


async def read_until(stream: anyio.abc.ByteReceiveStream, marker: bytes, seen: bytearray, *, seconds: float) -> None:
    """Read what a process writes to `stream` into `seen` until `marker` is in it (or the
    stream ends); TimeoutError after `seconds`, with what came so far in `seen`."""
    with anyio.fail_after(seconds):
        async for chunk in stream:
            seen += chunk
            if marker in seen:
                return
