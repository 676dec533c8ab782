"""Building answers: JSON bodies, error bodies, redirects, and deliberately broken connections.

Broken answers (a cut body, a reset, a stall) bypass aiohttp's response machinery and write
raw HTTP/1.1 to the transport, because aiohttp rightly refuses to send a short body or an
un-terminated chunked one. The handler then returns an `Abandoned` response: aiohttp's attempt
to send it fails on the closed transport, which it treats as a client disconnect, quietly.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import struct
from collections.abc import Iterable, Mapping
from contextlib import suppress
from http import HTTPStatus

from aiohttp import web

JSON_TYPE = "application/json"
OCTET_TYPE = "application/octet-stream;charset=UTF-8"


class Abandoned(web.Response):
    """Stands in for an answer already written (or refused) on the raw transport."""

    def __init__(self, sent_status: int) -> None:
        super().__init__()
        self.sent_status = sent_status


def json_response(
    status: int,
    body: object,
    request_id: str,
    *,
    content_type: str = JSON_TYPE,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    all_headers = {"Content-Type": content_type, "X-Request-Id": request_id}
    if headers:
        all_headers.update(headers)
    data = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(status=status, body=data, headers=all_headers)


def error_response(
    status: int, code: str, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response(status, {"error_code": code, "error_msg": message}, request_id, headers=headers)


def redirect(location: str, request_id: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "X-Request-Id": request_id})


def raw_head(status: int, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """A status line and header block, serialized by hand. Pairs may repeat a header name."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.extend(f"{name}: {value}" for name, value in pairs)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connection_open(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def close_connection(request: web.BaseRequest) -> None:
    """Close after what was written is flushed: the client sees a clean end of stream."""
    if request.transport is not None:
        request.transport.close()


def reset_connection(request: web.BaseRequest) -> None:
    """Abort with a TCP RST (SO_LINGER 0), discarding anything unsent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def flushed(request: web.BaseRequest, within: float = 5.0) -> None:
    """Wait until the transport's buffer is handed to the kernel (or the client is gone)."""
    # aiohttp has no event for "the write buffer is empty": a short poll, bounded by `within`.
    with suppress(TimeoutError):
        async with asyncio.timeout(within):
            while connection_open(request) and (transport := request.transport) and transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
