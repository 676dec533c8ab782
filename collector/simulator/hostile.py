"""Hostile replies: a catalogue of the junk a broken or malicious CloudDC could answer, by name.

Issue 8: one odd reply must never bring down a whole collector run. Each entry here is one such
reply. Entries are fault names, so a test scripts one for one server the usual way
(``sim.script(sid, status=["json_deep"])``); with ``--hostile P`` (`SimConfig.hostile`) every
API request meets a random entry with probability P, decided like the other random faults by
hashing (seed, operation, server, attempt), so a run is reproducible whatever order its
requests arrive in. When the dice say no, the answer is the normal one.

Three families, by the calls they fit (`collector.simulator.faults` draws from them):

- `ANY_CALL`: error bodies of 8 MiB, or full of raw control bytes and ANSI escapes; redirects
  to nowhere (a broken URL, no Location, ``file://``, a relative path with ``..``); a 503 with
  Retry-After; a burst of 502/504 gateway pages. The random menu adds the older ``reset``
  (the connection reset before any header).
- `JSON_REPLIES`, for export and status: the normal answer with one field made hostile
  (export_id, percentage, created_at, status), nested 100,000 deep, padded to 8 MiB, or
  trickled one byte per second after its headers.
- `DOWNLOAD_ONLY`: archives that pass a naive check: a truncated gzip under a matching
  Content-Length, 28 bytes of gzip magic before an HTML page, a valid gzip with junk after
  it, a wrong CRC, a Content-Length that lies (short, long, or two of them), and the real
  archive trickled below 1 KiB/s.

Large bodies are built once and shared, so a hostile fleet costs little memory; trickles end
when the client leaves or the simulator stops.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from collector.simulator.responses import (
    JSON_TYPE,
    Abandoned,
    close_connection,
    connection_open,
    raw_head,
)

MIB = 1024 * 1024
BIG_BODY_BYTES = 8 * MIB
ERROR_TEXT_BYTES = 1 * MIB
DEEP_NESTING = 100_000
TRICKLE_PADDING = 3600  # leading spaces of a trickled JSON answer: an hour at one byte a second
SLOW_ARCHIVE_BYTES_PER_SECOND = 512
_SLOW_TICK = 0.25  # seconds between the slow archive's pieces
_STOP_POLL = 0.05  # seconds between checks whether a trickle should end

GATEWAY_PAGE = (
    "<html><head><title>{status} {phrase}</title></head><body>"
    "<h1>{status} {phrase}</h1><p>The upstream server did not answer in time.</p></body></html>\n"
)
BURST_AFTER = ("504", "502")  # what a 5xx burst answers next, after its first 502

# Each name in the three families is a fault name: scripted per server, or drawn at random.
REDIRECTS = {
    "redirect_bad_location": (307, "http://[::1"),
    "redirect_no_location": (302, None),
    "redirect_file": (302, "file:///etc/passwd"),
    "redirect_dotdot": (307, "../../../../../../etc/passwd"),
}
ANY_CALL = frozenset(
    {"error_8mib", "error_control_bytes", "error_ansi_json", "503_retry_after", "burst_5xx", *REDIRECTS}
)

Body = dict[str, Any]  # a JSON answer's object, before it is made hostile


def _dump(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _field(name: str, value: object) -> Callable[[Body], bytes]:
    return lambda body: _dump({**body, name: value})


def _without(name: str) -> Callable[[Body], bytes]:
    return lambda body: _dump({key: value for key, value in body.items() if key != name})


@functools.cache
def _padding(size: int) -> bytes:
    return b"x" * size


@functools.cache
def _deep() -> bytes:
    return b"[" * DEEP_NESTING + b"]" * DEEP_NESTING


def _deep_body(body: Body) -> bytes:
    return _dump(body)[:-1] + b',"detail":' + _deep() + b"}"


def _padded_body(body: Body) -> bytes:
    return b'{"padding":"' + _padding(BIG_BODY_BYTES) + b'",' + _dump(body)[1:]


def _export_id_number(body: Body) -> bytes:
    return _dump({**body, "export_id": int(body["export_id"])})


# Export and status answers: the normal body in, the hostile bytes out.
_JSON_BODIES: dict[str, Callable[[Body], bytes]] = {
    "json_deep": _deep_body,
    "body_8mib": _padded_body,
    "percentage_400_digits": _field("percentage", 10**400 - 1),
    "percentage_backtrack": _field("percentage", "9" * 60_000 + "x"),
    "export_id_surrogate": _field("export_id", "\ud800"),  # dumped as the JSON escape "\ud800"
    "export_id_traversal": _field("export_id", "../../../../x"),
    "export_id_slash": _field("export_id", "/"),
    "export_id_control": _field("export_id", "1\r\n\x00\x1b[31m\x07"),
    "export_id_long": _field("export_id", "7" * 10_000),
    "export_id_number": _export_id_number,
    "export_id_missing": _without("export_id"),
    "created_at_year_1": _field("created_at", "0001-01-01T00:00:00"),
    "created_at_year_9999": _field("created_at", "9999-12-31T23:59:59Z"),
    "created_at_huge_year": _field("created_at", "9" * 400 + "-01-01T00:00:00Z"),
    "created_at_garbage": _field("created_at", "2025-13-45T25:61:61+99:99\x00\ufffd"),
    "status_null": _field("status", None),
    "status_list": _field("status", ["completed"]),
    "status_huge": _field("status", "completed " * (MIB // 10 + 1)),  # never one word, never success
}
JSON_REPLIES = frozenset({*_JSON_BODIES, "trickle"})

DOWNLOAD_ONLY = frozenset(
    {
        "gzip_truncated_stream",
        "gzip_html_magic",
        "gzip_trailing_junk",
        "gzip_bad_crc",
        "length_short",
        "length_long",
        "length_conflicting",
        "slow_archive",
    }
)

HTML_MAGIC = b"\x1f\x8b<html><body>502</body></html>"[:28]  # passes a check of the first two bytes
TRAILING_JUNK = b"<html><body>and one more thing</body></html>\n"


@functools.cache
def _control_text() -> bytes:
    """Raw control bytes and ANSI escapes (clear screen, colours, a window title, a bell), then
    a megabyte of text: what a proxy's crash page or a misrouted binary can look like."""
    head = b"\x1b[2J\x1b[H\x1b[31;1mFATAL\x1b[0m \x1b]0;owned\x07\x00\x08\x7f\r\x1b[1A\x9b31m\n"
    line = b"\x1b[33mpanic: runtime error\x1b[0m at 0xdeadbeef\x07\r\n"
    return head + line * (ERROR_TEXT_BYTES // len(line))


@functools.cache
def _error_8mib() -> bytes:
    return b'{"error_code":"CLOUDDC.0500","error_msg":"' + _padding(BIG_BODY_BYTES) + b'"}'


@functools.cache
def _error_ansi_json() -> bytes:
    message = "\x1b[2J\x1b]0;owned\x07\r\nInternal error\x1b[5m" + "A" * ERROR_TEXT_BYTES
    return _dump({"error_code": "\x1b[31mCLOUDDC.0500\x1b[0m", "error_msg": message})


def gateway_page(status: int, request_id: str) -> web.Response:
    """A gateway's HTML error page (502, 504), not the API's JSON."""
    phrase = {502: "Bad Gateway", 504: "Gateway Timeout"}.get(status, "Error")
    text = GATEWAY_PAGE.format(status=status, phrase=phrase)
    return web.Response(status=status, text=text, content_type="text/html", headers={"X-Request-Id": request_id})


def _bad_crc(data: bytes) -> bytes:
    (crc,) = struct.unpack_from("<I", data, len(data) - 8)
    return data[:-8] + struct.pack("<I", crc ^ 0xFFFFFFFF) + data[-4:]


class HostileReplies:
    """Serves the catalogue. `stopping` says when the simulator stops, to end trickles."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.stopping = stopping

    def any_call(self, fault: str, rid: str) -> web.Response | None:
        """The answer for an `ANY_CALL` entry (``burst_5xx`` is the caller's: it needs the script)."""
        headers = {"X-Request-Id": rid}
        if fault in REDIRECTS:
            status, location = REDIRECTS[fault]
            if location is not None:
                headers["Location"] = location
            return web.Response(status=status, headers=headers)
        if fault == "503_retry_after":
            headers.update({"Retry-After": "2", "Content-Type": JSON_TYPE})
            body = _dump({"error_code": "CLOUDDC.0503", "error_msg": "Service unavailable, retry later"})
            return web.Response(status=503, body=body, headers=headers)
        if fault == "error_8mib":
            return web.Response(status=500, body=_error_8mib(), headers={**headers, "Content-Type": JSON_TYPE})
        if fault == "error_ansi_json":
            return web.Response(status=500, body=_error_ansi_json(), headers={**headers, "Content-Type": JSON_TYPE})
        if fault == "error_control_bytes":
            body = _control_text()
            return web.Response(status=500, body=body, headers={**headers, "Content-Type": "text/plain"})
        return None

    async def json_reply(
        self,
        request: web.Request,
        fault: str,
        status: int,
        body: Body,
        rid: str,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """The normal export or status answer `body`, made hostile as `fault` says."""
        all_headers = {"Content-Type": content_type, "X-Request-Id": rid, **(headers or {})}
        if fault == "trickle":
            data = b" " * TRICKLE_PADDING + _dump(body)
            all_headers["Content-Length"] = str(len(data))
            return await self._trickle(request, raw_head(status, all_headers), data, piece=1, every=1.0, status=status)
        return web.Response(status=status, body=_JSON_BODIES[fault](body), headers=all_headers)

    async def archive(
        self, request: web.Request, fault: str, data: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        """The archive `data` served as the `DOWNLOAD_ONLY` entry `fault` says (never as a range)."""
        if fault == "gzip_truncated_stream":
            return web.Response(status=200, body=data[: len(data) // 2], headers=headers)
        if fault == "gzip_html_magic":
            return web.Response(status=200, body=HTML_MAGIC, headers=headers)
        if fault == "gzip_trailing_junk":
            return web.Response(status=200, body=data + TRAILING_JUNK, headers=headers)
        if fault == "gzip_bad_crc":
            return web.Response(status=200, body=_bad_crc(data), headers=headers)
        if fault == "slow_archive":
            head = raw_head(200, {**headers, "Content-Length": str(len(data))})
            piece = int(SLOW_ARCHIVE_BYTES_PER_SECOND * _SLOW_TICK)
            return await self._trickle(request, head, data, piece=piece, every=_SLOW_TICK, status=200)
        lengths = {
            "length_short": [len(data) // 2],
            "length_long": [len(data) + 4096],
            "length_conflicting": [len(data), len(data) + 1],
        }[fault]
        head = raw_head(200, [*headers.items(), *(("Content-Length", str(n)) for n in lengths)])
        return await self._trickle(request, head, data, piece=len(data), every=0.0, status=200)

    async def _trickle(
        self, request: web.Request, head: bytes, data: bytes, *, piece: int, every: float, status: int
    ) -> web.StreamResponse:
        """Write `head`, then `data` `piece` bytes at a time every `every` seconds, then close.

        Raw, like the simulator's other broken answers: aiohttp would not send a body that
        disagrees with its Content-Length. Ends early when the client leaves or the simulator
        stops; either way the connection is closed, never reused.
        """
        writer = request.writer
        try:
            await writer.write(head)
            for offset in range(0, len(data), piece):
                if offset and not await self._wait(request, every):
                    break
                await writer.write(data[offset : offset + piece])
        except ConnectionError:
            return Abandoned(status)
        close_connection(request)
        return Abandoned(status)

    async def _wait(self, request: web.Request, seconds: float) -> bool:
        """Sleep `seconds`; False if meanwhile the client left or the simulator began stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if not connection_open(request) or self.stopping():
                return False
            left = deadline - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, _STOP_POLL))


def names(*families: Iterable[str]) -> tuple[str, ...]:
    """The fault names of these families, sorted: a stable menu for the random draw."""
    return tuple(sorted(set().union(*families)))
