"""Hostile answers over a real loopback socket: the client refuses them as `ProtocolError` or
an `APIError` with clean text, and sends nothing it should not.

The simulator answers like a (flawed) CloudDC; these answers are outright hostile, so a tiny
aiohttp server here sends them, and records every path it was asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from _sockets import raw_http
from aiohttp import web

from collector.auth import StaticToken
from collector.clouddc.api import CloudDC
from collector.control.throttle import RateLimiter, RetryPolicy
from collector.errors import ProtocolError, ServerError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

PROJECT = "0123456789abcdef0123456789abcdef"
SERVER = "2102313YJK10N1000001"
EXPORTS = f"/v1/{PROJECT}/physicalservers/{SERVER}/logs/exports"
ONCE = RetryPolicy(base=0.001, cap=0.001, max_attempts=1)

Answer = Callable[[web.Request], web.StreamResponse]


@asynccontextmanager
async def hostile_api(answer: Answer) -> AsyncIterator[tuple[CloudDC, list[str]]]:
    """A client for a server that answers every request with `answer(request)`; and the
    "METHOD path" of every request that server got."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.raw_path}")
        return answer(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=2)
        async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
            api = CloudDC.alone(
                session,
                f"http://{host}:{port}",
                PROJECT,
                StaticToken("test-token", "test"),
                limiter=RateLimiter(1000),
                policy=ONCE,
            )
            yield api, seen
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_api(answer: bytes) -> AsyncIterator[CloudDC]:
    """A client for a server that answers every request with `answer`, verbatim: aiohttp's own
    server rightly refuses to send control characters in a header; servers in the wild do."""

    async with raw_http(lambda head: answer) as url:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=2)
        async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
            yield CloudDC.alone(
                session,
                url,
                PROJECT,
                StaticToken("test-token", "test"),
                limiter=RateLimiter(1000),
                policy=ONCE,
            )


def octets(body: bytes, status: int = 202, **headers: str) -> Answer:
    return lambda request: web.Response(
        body=body, status=status, headers=headers, content_type="application/octet-stream"
    )


async def test_export_id_that_climbs_out_of_the_path_is_refused_and_never_requested():
    body = b'{"export_id": "../../../../x", "status": "Running"}'
    async with hostile_api(octets(body)) as (api, seen):
        with pytest.raises(ProtocolError, match=r"unsafe export_id '\.\./\.\./\.\./\.\./x': it contains a slash"):
            await api.export(SERVER)
    assert seen == [f"POST {EXPORTS}"]


async def test_deeply_nested_status_answer_is_a_protocol_error():
    body = b'{"export_id": "1", "status": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    async with hostile_api(octets(body, status=200, **{"X-Request-Id": "req-7"})) as (api, _):
        with pytest.raises(ProtocolError, match=r"nested deeper than 32 levels \(request id req-7\)"):
            await api.status(SERVER, "1")


async def test_export_id_with_a_lone_surrogate_is_refused_before_it_reaches_the_journal():
    async with hostile_api(octets(b'{"export_id": "ab\\udc00", "status": "Running"}')) as (api, _):
        with pytest.raises(ProtocolError, match="lone UTF-16 surrogate"):
            await api.export(SERVER)


async def test_error_page_full_of_terminal_escapes_is_quoted_clean_and_short():
    page = b"\x1b]0;owned\x07\x1b[2J" + b"\x1b[31mFIRE " * 20_000
    head = (
        f"HTTP/1.1 500 Oops\r\nContent-Length: {len(page)}\r\nX-Request-Id: req\x1b[5m-1\r\nConnection: close\r\n\r\n"
    )
    async with raw_api(head.encode() + page) as api:
        with pytest.raises(ServerError) as caught:
            await api.status(SERVER, "1")
    text = str(caught.value)
    assert "\x1b" not in text and "\x07" not in text and text.isprintable()
    assert len(text) < 400
    assert "\\x1b]0;owned\\x07" in text and "req\\x1b[5m-1" in text


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/x", "http://[::1/x", "//h:0x/"])
async def test_redirect_to_an_unusable_location_is_a_protocol_error(location):
    answer = lambda request: web.Response(status=302, headers={"Location": location})  # noqa: E731
    async with hostile_api(answer) as (api, seen):
        with pytest.raises(ProtocolError, match="redirect to an invalid URL"):
            async with api.open_archive(SERVER, "1"):
                pass
    assert seen == [f"GET {EXPORTS}/1/content"]
