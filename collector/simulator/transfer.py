"""Sending an archive: whole, as a byte range, or broken in one of the scripted ways.

Shared by the API's download route and the storage origin. Normal answers stream through a
`web.StreamResponse` in `chunk_bytes` pieces with a Content-Length. The broken ones send
about half of the body and then:

- ``truncate``: close; the Content-Length promised more.
- ``reset_mid``: abort the connection with a TCP RST.
- ``chunked_cut``: the body was chunked; close without the terminating chunk.
- ``no_length_eof``: no Content-Length, not chunked; close, so the client sees a clean EOF.
- ``stall``: hold the connection open without sending more, until the simulator stops
  (or `stall_seconds` pass, or the client leaves).

Ranges: with `accept_ranges`, ``Range: bytes=N-`` (also ``N-M`` and ``-K``) gets a 206 with
Content-Range; ``range_ignored`` answers 200 with everything, and ``range_wrong_offset``
answers 206 from another offset than asked, with a Content-Range that says so.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from collector.simulator.archive import ArchiveStore
from collector.simulator.responses import (
    Abandoned,
    close_connection,
    connection_open,
    flushed,
    raw_head,
    reset_connection,
)

BROKEN_BODIES = frozenset({"truncate", "reset_mid", "chunked_cut", "no_length_eof", "stall"})
_STALL_POLL = 0.05  # seconds between checks whether a stall should end
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Unsatisfiable(Exception):
    """The requested range starts at or after the end of the archive."""


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` asked for by a single-range Range header; None to send everything."""
    if not value:
        return None
    match = _RANGE.fullmatch(value.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, stop = max(0, size - int(last)), size
    else:
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
        if last != "" and stop <= start:
            return None
    if start >= size:
        raise Unsatisfiable
    return start, stop


class ArchiveSender:
    """Writes archive bytes for both origins; `stopping` ends stalled responses."""

    def __init__(
        self,
        store: ArchiveStore,
        *,
        accept_ranges: bool,
        stall_seconds: float,
    ) -> None:
        self.store = store
        self.accept_ranges = accept_ranges
        self.stall_seconds = stall_seconds
        self.stopping = False  # set by Simulator.stop(), ends stalls

    async def send(
        self,
        request: web.Request,
        server_id: str,
        size: int,
        headers: dict[str, str],
        fault: str | None = None,
    ) -> web.StreamResponse:
        """Answer with the archive (or part of it) as `fault` says, adding to `headers`."""
        if self.accept_ranges:
            headers["Accept-Ranges"] = "bytes"
        try:
            asked = None
            if self.accept_ranges and fault != "range_ignored":
                asked = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if fault == "range_wrong_offset":
            start = asked[0] // 2 if asked and asked[0] else size // 2
            asked = (start, size)
        start, stop = asked or (0, size)
        status = 200
        if asked is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        if fault == "gzip_encoding":
            headers["Content-Encoding"] = "gzip"
        if fault in BROKEN_BODIES:
            return await self._send_broken(request, status, headers, server_id, size, start, stop, fault)

        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = stop - start
        try:
            await response.prepare(request)
            for chunk in self.store.chunks(server_id, size, start, stop):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            return Abandoned(status)  # the client left mid-body
        return response

    async def _send_broken(
        self,
        request: web.Request,
        status: int,
        headers: dict[str, str],
        server_id: str,
        size: int,
        start: int,
        stop: int,
        fault: str,
    ) -> web.StreamResponse:
        length = stop - start
        chunked = fault == "chunked_cut"
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif fault == "no_length_eof":
            headers["Connection"] = "close"
        else:
            headers["Content-Length"] = str(length)
        cut = start + max(1, length // 2)
        writer = request.writer
        try:
            await writer.write(raw_head(status, headers))
            for chunk in self.store.chunks(server_id, size, start, cut):
                if chunked:
                    await writer.write(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
                else:
                    await writer.write(chunk)
        except ConnectionError:
            return Abandoned(status)
        if fault == "reset_mid":
            await flushed(request)
            reset_connection(request)
        else:
            if fault == "stall":
                await self._stall(request)
            close_connection(request)
        return Abandoned(status)

    async def _stall(self, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall_seconds
        while connection_open(request) and not self.stopping and loop.time() < deadline:
            await asyncio.sleep(_STALL_POLL)
