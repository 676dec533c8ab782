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

Every archive carries a strong ``ETag`` and a ``Last-Modified``; a Range with an ``If-Range``
that matches neither gets all of it (200). ``archive_changed`` answers as if the archive had
been made again since: another ETag and date.

Whole answers of a damaged archive, Content-Length matching what is sent (Range ignored):

- ``damaged_short``: the first half of the archive;
- ``damaged_header``: 28 bytes, the gzip magic then an HTML page;
- ``damaged_trailing``: the archive, then an HTML fragment;
- ``damaged_crc``: the archive with its CRC-32 field wrong.

And ``trickle``: half the body at once, then 16 bytes every 50 ms (320 bytes/s), until the
body is done, the client leaves, the simulator stops or `stall_seconds` pass.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import re
from collections.abc import Callable

from aiohttp import web

from collector.simulator.archive import MTIME, ArchiveStore
from collector.simulator.responses import (
    Abandoned,
    close_connection,
    connection_open,
    flushed,
    raw_head,
    reset_connection,
)

BROKEN_BODIES = frozenset({"truncate", "reset_mid", "chunked_cut", "no_length_eof", "stall"})
DAMAGED = frozenset({"damaged_short", "damaged_header", "damaged_trailing", "damaged_crc"})
_STALL_POLL = 0.05  # seconds between checks whether a stall should end
_TRICKLE_BYTES = 16  # sent every _STALL_POLL by a trickle
_FAKE_GZIP = b"\x1f\x8b<html>busy. retry</html>\r\n"  # what a broken proxy sent: 28 bytes
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def archive_etag(seed: int, server_id: str, size: int, generation: int = 1) -> str:
    """The strong ETag of an archive; `generation` 2 is the same export made again."""
    digest = hashlib.blake2b(f"{seed}:{server_id}:{size}:{generation}".encode(), digest_size=8).hexdigest()
    return f'"{digest}"'


def archive_last_modified(generation: int = 1) -> str:
    return email.utils.formatdate(MTIME + 3600 * (generation - 1), usegmt=True)


def damage(fault: str, archive: bytes) -> bytes:
    """The bytes a `DAMAGED` fault sends instead of `archive`."""
    if fault == "damaged_short":
        return archive[: len(archive) // 2]
    if fault == "damaged_header":
        return _FAKE_GZIP
    if fault == "damaged_trailing":
        return archive + b"\n<html>trailing junk</html>\n"
    if fault == "damaged_crc":
        return archive[:-8] + bytes([archive[-8] ^ 0xFF]) + archive[-7:]
    raise ValueError(fault)


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
        # id(request) -> what its origin counts the answer with, if it wants to hear as soon as
        # the head is out: an answer held open (a stall, a trickle) is then counted before the
        # client gives up and asks again, not some time after it left.
        self.answering: dict[int, Callable[[int], None]] = {}

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
        generation = 2 if fault == "archive_changed" else 1
        etag = headers["ETag"] = archive_etag(self.store.seed, server_id, size, generation)
        last_modified = headers["Last-Modified"] = archive_last_modified(generation)
        if fault in DAMAGED:
            body = damage(fault, self.store.data(server_id, size))
            return web.Response(status=200, body=body, headers=headers)
        try:
            asked = None
            if_range = request.headers.get("If-Range")
            if self.accept_ranges and fault != "range_ignored" and if_range in (None, etag, last_modified):
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
            if fault == "trickle":
                self._answered(request, status)
                if not await self._trickle(request, response, server_id, size, start, stop):
                    close_connection(request)
                    return Abandoned(status)
            else:
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
                self._answered(request, status)
                await self._stall(request)
            close_connection(request)
        return Abandoned(status)

    def _answered(self, request: web.Request, status: int) -> None:
        note = self.answering.get(id(request))
        if note is not None:
            note(status)

    async def _trickle(
        self, request: web.Request, response: web.StreamResponse, server_id: str, size: int, start: int, stop: int
    ) -> bool:
        """Half at once, then the rest slowly. False if it was given up before the end."""
        cut = start + max(1, (stop - start) // 2)
        for chunk in self.store.chunks(server_id, size, start, cut):
            await response.write(chunk)
        rest = b"".join(bytes(chunk) for chunk in self.store.chunks(server_id, size, cut, stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall_seconds
        for offset in range(0, len(rest), _TRICKLE_BYTES):
            if not connection_open(request) or self.stopping or loop.time() >= deadline:
                return False
            await response.write(rest[offset : offset + _TRICKLE_BYTES])
            await asyncio.sleep(_STALL_POLL)
        return True

    async def _stall(self, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall_seconds
        # aiohttp has no event for "the client left": a short poll, bounded by the deadline.
        while connection_open(request) and not self.stopping and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_STALL_POLL)
