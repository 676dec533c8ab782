"""Raw loopback servers, for what aiohttp's own server rightly refuses to send (control characters
in headers, a body shorter than its Content-Length, a trickle), and a port where nothing listens."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    """Serve each connection with `handle(reader, writer)` on a loopback port; yields the base URL.

    On leaving, the server is closed and waited for.
    """
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def raw_http(respond: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """Answer each connection's request with `respond(request head)`, verbatim, then close it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(respond(await reader.readuntil(b"\r\n\r\n")))
            await writer.drain()
        finally:
            writer.close()

    async with raw_server(answer) as url:
        yield url


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago, and nothing here binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
