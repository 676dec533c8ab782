"""A forward HTTP proxy on loopback, for the proxy tests: it records every request it is asked
to forward, passes absolute-form requests (``GET http://host:port/path``) on to their origin,
and tunnels ``CONNECT host:port`` (https through the proxy).

One request per client connection: the request goes upstream with ``Connection: close`` and
the answer comes back with it too, so the client opens a new connection for the next one and
every request is seen here. Nothing is parsed beyond the heads; bodies are relayed as bytes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import anyio
import yarl
from anyio.abc import ByteReceiveStream, ByteSendStream, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from multidict import CIMultiDict

MAX_HEAD = 64 * 1024
HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"}
# A client that goes away, an origin that is not there: this connection ends, the proxy goes on.
GONE = (
    OSError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.DelimiterNotFound,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


@dataclass(frozen=True)
class Forwarded:
    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    headers: CIMultiDict[str]


class ForwardProxy:
    """``async with ForwardProxy() as proxy:`` serves on ``proxy.url`` until the block ends."""

    def __init__(self) -> None:
        self.seen: list[Forwarded] = []
        self.url = ""

    async def __aenter__(self) -> ForwardProxy:
        self._stack = contextlib.AsyncExitStack()
        listener = await self._stack.enter_async_context(await anyio.create_tcp_listener(local_host="127.0.0.1"))
        tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tasks.cancel_scope.cancel)
        tasks.start_soon(listener.serve, self._handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.__aexit__(*exc_info)

    def targets(self, method: str | None = None) -> list[str]:
        return [seen.target for seen in self.seen if method is None or seen.method == method]

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            with contextlib.suppress(*GONE):
                await self._serve(client)

    async def _serve(self, client: SocketStream) -> None:
        reader = BufferedByteReceiveStream(client)
        head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = CIMultiDict(_header(line) for line in lines if line)
        self.seen.append(Forwarded(method, target, headers))
        if method == "CONNECT":
            await self._tunnel(client, reader, target)
        else:
            await self._forward(client, reader, method, yarl.URL(target), headers)

    async def _tunnel(self, client: SocketStream, reader: BufferedByteReceiveStream, target: str) -> None:
        host, port = target.rsplit(":", 1)
        async with await anyio.connect_tcp(host.strip("[]"), int(port)) as upstream:
            await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            async with anyio.create_task_group() as pipes:
                pipes.start_soon(_pipe, reader, upstream)
                pipes.start_soon(_pipe, upstream, client)

    async def _forward(
        self,
        client: SocketStream,
        reader: BufferedByteReceiveStream,
        method: str,
        url: yarl.URL,
        headers: CIMultiDict[str],
    ) -> None:
        body = await reader.receive_exactly(int(headers.get("Content-Length", "0")))
        kept = [(name, value) for name, value in headers.items() if name.lower() not in HOP_BY_HOP]
        head = f"{method} {url.raw_path_qs} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept)
        async with await anyio.connect_tcp(url.host, url.port) as upstream:
            await upstream.send(head.encode("latin-1") + b"Connection: close\r\n\r\n" + body)
            answer = BufferedByteReceiveStream(upstream)
            status_line, *lines = (await answer.receive_until(b"\r\n\r\n", MAX_HEAD)).decode("latin-1").split("\r\n")
            kept = [line for line in lines if line and _header(line)[0].lower() not in HOP_BY_HOP]
            await client.send(("\r\n".join([status_line, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            await _pipe(answer, client)


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


async def _pipe(source: ByteReceiveStream, sink: ByteSendStream) -> None:
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        while True:
            await sink.send(await source.receive())
    with contextlib.suppress(*GONE):
        await sink.send_eof()
