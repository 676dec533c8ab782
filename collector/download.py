"""Streaming one archive to its destination, and deciding whether the bytes are the archive.

`fetch_archive` drives the transfer: stream in large chunks into a partial file, hash while
writing, check the length against `Content-Length` (or, without one, read the gzip stream
through to its trailer), check the gzip magic, then commit (fsync + atomic rename). A broken
transfer is retried under the run's `RetryPolicy`, resuming with `Range` when the server
advertised `Accept-Ranges` and answers it correctly, else from zero: never appending to
bytes whose offset we cannot vouch for.

Where the bytes go sits behind `Destination`: a local folder (`collector.storage`) today,
object storage later.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import anyio

from collector.api import ArchiveResponse, CloudDC, OnRetry
from collector.errors import ArchiveError, ArchiveTooLarge, RequestError, StorageError
from collector.throttle import RetryPolicy, retrying

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
WRITE_CHUNK = 1024 * 1024  # received chunks go to the destination in batches of this many bytes
WRITE_BATCH = 512  # or of this many chunks (one writev takes at most IOV_MAX, 1024 on Linux)


@contextmanager
def _storing(name: str) -> Iterator[None]:
    """Translate the destination's `OSError` into a `StorageError` for this server's result."""
    try:
        yield
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise StorageError(f"cannot store {name}: {what}", reason=f"cannot store archive: {what}") from exc


def archive_name(project_id: str, server_id: str) -> str:
    """The archive's path relative to the output root. Always from our own ids, never the server's."""
    return f"{project_id}/{server_id}-dump.tar.gz"


@dataclass(frozen=True, slots=True)
class Archive:
    name: str  # relative to the destination root
    size: int
    sha256: str


class PartialFile(Protocol):
    size: int

    async def write(self, chunks: list[bytes]) -> None: ...  # in order, after what came before
    async def truncate(self) -> None: ...
    async def commit(self) -> Archive: ...
    async def discard(self) -> None: ...
    def sha256(self) -> str: ...


class Destination(Protocol):
    async def open_partial(self, name: str) -> PartialFile: ...
    async def check(self, name: str, size: int, sha256: str | None) -> bool: ...


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class GzipChecker:
    """Reads a gzip stream through as it arrives, to know whether it ended properly."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)

    def feed(self, data: bytes) -> None:
        try:
            while data and not self._inflate.eof:
                self._inflate.decompress(data, 64 * 1024)
                data = self._inflate.unconsumed_tail
        except zlib.error as exc:
            raise ArchiveError(f"archive is not valid gzip: {exc}") from exc

    @property
    def complete(self) -> bool:
        return self._inflate.eof


@dataclass(frozen=True)
class DownloadOptions:
    max_bytes: int = 8 * 1024**3
    policy: RetryPolicy = RetryPolicy()


async def fetch_archive(
    api: CloudDC,
    server_id: str,
    export_id: str,
    destination: Destination,
    name: str,
    options: DownloadOptions,
    *,
    on_retry: OnRetry | None = None,
) -> tuple[Archive, int]:
    """Download one archive to `destination/name`. Returns it and the attempts it took.

    On failure the partial file is removed and the last error is raised.
    """
    with _storing(name):
        partial = await destination.open_partial(name)
    transfer = _Transfer(api, server_id, export_id, partial, options.max_bytes, name)
    try:
        _, attempts = await retrying(transfer.attempt, options.policy, on_retry=on_retry)
        with _storing(name):
            return await transfer.partial.commit(), attempts
    except BaseException:
        await transfer.partial.discard()
        raise


class _Transfer:
    """The state one archive's attempts share: the partial file, its gzip check, resumability."""

    def __init__(
        self, api: CloudDC, server_id: str, export_id: str, partial: PartialFile, max_bytes: int, name: str
    ) -> None:
        self.api = api
        self.server_id = server_id
        self.export_id = export_id
        self.partial = partial
        self.name = name
        self.max_bytes = max_bytes
        self.resumable = False
        self.gzip = GzipChecker()
        self.warned_disposition = False

    async def restart(self) -> None:
        with _storing(self.name):
            await self.partial.truncate()
        self.gzip = GzipChecker()

    async def attempt(self) -> None:
        offset = self.partial.size if self.resumable else 0
        if not offset and self.partial.size:
            await self.restart()
        async with self.api.open_archive(self.server_id, self.export_id, offset=offset) as response:
            self._note_disposition(response.content_disposition)
            if offset and not _continues_at(response, offset):
                # A 200 to a range request, or a range that starts elsewhere: the bytes we hold
                # cannot be trusted to line up with these. Start over, never append.
                log.info(
                    "%s: resume from byte %d answered %s %s; restarting from zero",
                    self.server_id, offset, response.status, response.content_range or "",
                )
                await self.restart()
                self.resumable = False
                offset = 0
            if response.status == 206 and not _continues_at(response, offset):
                # Bytes from elsewhere in the archive do not fit at zero either (and may well
                # start like a gzip file): never write them; the next attempt asks for everything.
                raise ArchiveError(
                    f"partial answer {response.content_range or 'without Content-Range'} "
                    f"does not start at byte {offset}"
                )
            self.resumable = response.accept_ranges and response.status in (200, 206)
            total = _expected_total(response, offset)
            if total is not None and total > self.max_bytes:
                raise ArchiveTooLarge(f"archive is {total} bytes, more than the limit of {self.max_bytes} (--max-archive-bytes)")
            await self._stream(response, check_gzip=total is None)
            self._verify(total)

    async def _stream(self, response: ArchiveResponse, *, check_gzip: bool) -> None:
        partial = self.partial
        chunks: list[bytes] = []  # handed to the file as they came: one writev, no copying
        pending = 0

        async def flush() -> None:
            nonlocal chunks, pending
            batch, size = chunks, pending
            chunks, pending = [], 0
            if partial.size == 0:
                head = b"".join(batch)[:16] if len(batch[0]) < 16 else batch[0][:16]
                if not head.startswith(GZIP_MAGIC):
                    raise ArchiveError(f"not a gzip archive: starts with {head!r}")
            if check_gzip:
                for chunk in batch:
                    self.gzip.feed(chunk)
            with _storing(self.name):
                await partial.write(batch)
            self.api.stats.bytes_downloaded += size

        try:
            # Each piece as the parser delivered it (up to one socket read): iter_chunked(n)
            # would slice and rejoin pieces to size n, copying every byte once more.
            async for chunk, _ in response.content.iter_chunks():
                if partial.size + pending + len(chunk) > self.max_bytes:
                    raise ArchiveTooLarge(
                        f"archive is larger than the limit of {self.max_bytes} bytes (--max-archive-bytes)"
                    )
                chunks.append(chunk)
                pending += len(chunk)
                if pending >= WRITE_CHUNK or len(chunks) >= WRITE_BATCH:
                    await flush()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            got = partial.size + pending
            if chunks and self.resumable:
                # Keep what arrived: the next attempt continues from here with Range.
                with anyio.CancelScope(shield=True):
                    await flush()
            if isinstance(exc, asyncio.TimeoutError):
                raise RequestError(f"download stalled: no data within the read timeout, after {got} bytes") from exc
            if isinstance(exc, aiohttp.ClientPayloadError):
                raise ArchiveError(f"transfer cut off after {got} bytes ({exc})") from exc
            raise RequestError(f"transfer failed after {got} bytes: {type(exc).__name__}: {exc}") from exc
        if chunks:
            await flush()

    def _verify(self, total: int | None) -> None:
        size = self.partial.size
        if total is not None and size != total:
            raise ArchiveError(f"archive is short: got {size} of {total} bytes")
        if size == 0:
            raise ArchiveError("archive is empty")
        if total is None and not self.gzip.complete:
            raise ArchiveError(f"transfer ended after {size} bytes before the gzip stream did")

    def _note_disposition(self, disposition: str | None) -> None:
        """We never take a file name from the server; say so once if it tried something odd."""
        if not disposition or self.warned_disposition:
            return
        expected = f"{self.server_id}-dump.tar.gz"
        match = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]*)"?', disposition, re.IGNORECASE)
        if match and match.group(1) != expected:
            self.warned_disposition = True
            log.warning(
                "%s: ignoring server-suggested file name %r; saving as %s",
                self.server_id, match.group(1), expected,
            )


def _continues_at(response: ArchiveResponse, offset: int) -> bool:
    if response.status != 206 or not response.content_range:
        return False
    match = _CONTENT_RANGE.match(response.content_range)
    return bool(match) and int(match.group(1)) == offset


def _expected_total(response: ArchiveResponse, offset: int) -> int | None:
    if response.status == 206 and response.content_range:
        match = _CONTENT_RANGE.match(response.content_range)
        if match and match.group(3) != "*":
            return int(match.group(3))
    if response.content_length is not None:
        return offset + response.content_length
    return None
