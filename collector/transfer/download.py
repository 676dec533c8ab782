"""Streaming one archive to its destination, and deciding whether the bytes are the archive.

`fetch_archive` drives the transfer: stream in large chunks into a partial file, hash while
writing, inflate while receiving (`collector.transfer.gzipcheck`), check the length against
`Content-Length`, require whole gzip, then commit (fsync + atomic rename).

Two kinds of failure, two answers:

- A broken *transfer* (cut off, reset, no data for the read timeout, or slower than
  `stall_floor` bytes/s over `stall_window` seconds) is retried under the run's
  `RetryPolicy`, resuming with `Range` (and `If-Range`, when the server gave an ETag or
  Last-Modified) when the server advertised `Accept-Ranges` and answers it correctly, else
  from zero: never appending to bytes whose offset we cannot vouch for.
- A whole transfer of a *damaged archive* (cut short with a matching length, a bad CRC, junk
  after the end) is fetched once more from zero; a second damaged copy fails the server with
  `ArchiveDamaged`: asking an eighth time would not mend the server's file.

Where the bytes go sits behind `Destination`: a local folder (`collector.destinations.local`)
or an object-storage bucket (`collector.destinations.s3`). A transfer that breaks is
translated by `collector.net.transport.translate`, like every other HTTP failure.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
import anyio

from collector.clouddc.api import ArchiveResponse, CloudDC
from collector.clouddc.gateway import DOWNLOAD, OnRetry
from collector.config.settings import Settings
from collector.control.throttle import RetryPolicy, Sleep, retrying
from collector.destinations.base import Archive, Destination, PartialFile
from collector.errors import ArchiveDamaged, ArchiveError, ArchiveTooLarge, RequestTimeout, StorageError
from collector.net.transport import translate
from collector.transfer.gzipcheck import GZIP_MAGIC, GzipCheck

log = logging.getLogger(__name__)

# Chunks a batch holds at most, whatever `PartialFile.batch` says: one writev takes at most
# IOV_MAX of them, 1024 on Linux.
WRITE_BATCH = 512


@contextmanager
def _storing(name: str) -> Iterator[None]:
    """Translate the destination's `OSError` into a `StorageError` for this server's result."""
    try:
        yield
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise StorageError(f"cannot store {name}: {what}", reason=f"cannot store archive: {what}") from exc


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


_DEFAULT_POLICY = RetryPolicy()  # frozen: one instance serves as every default


@dataclass(frozen=True)
class DownloadOptions:
    max_bytes: int = Settings.max_archive_bytes
    policy: RetryPolicy = _DEFAULT_POLICY
    # A transfer that averages fewer than `stall_floor` bytes/s over `stall_window` seconds is
    # cut and retried: a server that trickles would otherwise hold a transfer slot for hours
    # (the read timeout only catches silence), and a few such servers would hold them all.
    stall_floor: float = 1024.0
    stall_window: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)


async def fetch_archive(
    api: CloudDC,
    server_id: str,
    export_id: str,
    destination: Destination,
    name: str,
    options: DownloadOptions,
    *,
    on_retry: OnRetry | None = None,
    sleep: Sleep | None = None,
) -> tuple[Archive, int]:
    """Download one archive to `destination/name`. Returns it and the attempts it took.

    Retries share the endpoint's retry budget and wait with `sleep` (by default the
    endpoint's backoff, which ends early if the endpoint is given up; the sweep's also gives
    its transfer slot back meanwhile). On failure the partial file is removed and the last
    error is raised.
    """
    with _storing(name):
        partial = await destination.open_partial(name)
    transfer = _Transfer(api, server_id, export_id, partial, options, name)
    try:
        _, attempts = await retrying(
            transfer.attempt,
            options.policy,
            on_retry=on_retry,
            quota=api.gateway.quota,
            sleep=sleep or api.health.backoff,
        )
        with _storing(name):
            return await transfer.partial.commit(), attempts
    except BaseException:
        await transfer.partial.discard()
        raise


class _Transfer:
    """The state one archive's attempts share: the partial file, its gzip check, resumability."""

    def __init__(
        self, api: CloudDC, server_id: str, export_id: str, partial: PartialFile, options: DownloadOptions, name: str
    ) -> None:
        self.api = api
        self.server_id = server_id
        self.export_id = export_id
        self.partial = partial
        self.name = name
        self.options = options
        self.max_bytes = options.max_bytes
        self.resumable = False
        self.validator: str | None = None  # the If-Range of a resume: the bytes we hold are of this archive
        self.gzip = GzipCheck()  # has seen exactly the bytes handed to `partial`
        self.damaged = 0  # whole transfers whose bytes were not whole gzip
        self.warned_disposition = False

    async def restart(self) -> None:
        with _storing(self.name):
            await self.partial.truncate()
        self.gzip = GzipCheck()

    async def attempt(self) -> None:
        offset = self.partial.size if self.resumable and self.gzip.fed == self.partial.size else 0
        if not offset and (self.partial.size or self.gzip.fed):
            await self.restart()
        if_range = self.validator if offset else None
        async with self.api.open_archive(self.server_id, self.export_id, offset=offset, if_range=if_range) as response:
            self._note_disposition(response.content_disposition)
            if offset and not _continues_at(response, offset):
                # A 200 to a range request (with If-Range: the archive changed), or a range
                # that starts elsewhere: the bytes we hold cannot be trusted to line up with
                # these. Start over, never append.
                log.info(
                    "%s: resume from byte %d%s answered %s %s; restarting from zero",
                    self.server_id,
                    offset,
                    f" if still {if_range}" if if_range else "",
                    response.status,
                    response.content_range or "",
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
            if not offset:
                self.validator = _validator(response)
            total = _expected_total(response, offset)
            if total is not None and total > self.max_bytes:
                raise ArchiveTooLarge(
                    f"archive is {total} bytes, more than the limit of {self.max_bytes} (--max-archive-bytes)"
                )
            try:
                await self._stream(response)
                self._verify(total)
            except ArchiveDamaged as exc:
                self._damaged(exc)

    def _damaged(self, exc: ArchiveDamaged) -> None:
        """The first damaged copy is fetched again from zero; the second is the server's fault."""
        self.resumable = False
        self.damaged += 1
        if self.damaged > 1:
            raise exc
        raise ArchiveError(f"archive is not whole gzip: {exc.detail}; fetching it once more from zero") from exc

    async def _stream(self, response: ArchiveResponse) -> None:
        partial = self.partial
        chunks: list[bytes] = []  # handed to the file as they came: one writev, no copying
        pending = 0
        clock, floor, window = self.options.clock, self.options.stall_floor, self.options.stall_window
        mark_at, mark_bytes = clock(), 0  # the start of the current rate window
        received = 0
        batch = partial.batch

        async def flush() -> None:
            nonlocal chunks, pending
            batch, size = chunks, pending
            chunks, pending = [], 0
            if partial.size == 0:
                head = b"".join(batch)[:16] if len(batch[0]) < 16 else batch[0][:16]
                if not head.startswith(GZIP_MAGIC):
                    raise ArchiveError(f"not a gzip archive: starts with {head!r}")
            self.gzip.feed(batch)
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
                received += len(chunk)
                now = clock()
                if now - mark_at >= window:
                    rate = (received - mark_bytes) / (now - mark_at)
                    if rate < floor:
                        raise RequestTimeout(
                            f"download too slow: {rate:.0f} bytes/s over {now - mark_at:.0f} s, "
                            f"under the floor of {floor:.0f} bytes/s"
                        )
                    mark_at, mark_bytes = now, received
                if pending >= batch or len(chunks) >= WRITE_BATCH:
                    await flush()
        except (TimeoutError, aiohttp.ClientError, RequestTimeout) as exc:
            got = partial.size + pending
            if chunks and self.resumable:
                # Keep what arrived: the next attempt continues from here with Range.
                with anyio.CancelScope(shield=True):
                    await flush()
            if isinstance(exc, RequestTimeout):  # ours: the stall floor above
                raise RequestTimeout(f"{exc}, after {got} bytes") from exc
            raise translate(exc, DOWNLOAD, response.url, received=got) from exc
        if chunks:
            await flush()

    def _verify(self, total: int | None) -> None:
        size = self.partial.size
        if total is not None and size != total:
            raise ArchiveError(f"archive is short: got {size} of {total} bytes")
        if size == 0:
            raise ArchiveError("archive is empty")
        if total is None and not self.gzip.complete:
            # Without a length, an early end looks like a cut-off transfer: retried as one.
            raise ArchiveError(f"transfer ended after {size} bytes before the gzip stream did")
        self.gzip.finish()

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
                self.server_id,
                match.group(1),
                expected,
            )


def _continues_at(response: ArchiveResponse, offset: int) -> bool:
    if response.status != 206 or not response.content_range:
        return False
    match = _CONTENT_RANGE.match(response.content_range)
    return match is not None and int(match.group(1)) == offset


def _expected_total(response: ArchiveResponse, offset: int) -> int | None:
    if response.status == 206 and response.content_range:
        match = _CONTENT_RANGE.match(response.content_range)
        if match and match.group(3) != "*":
            return int(match.group(3))
    if response.content_length is not None:
        return offset + response.content_length
    return None


# An ETag in If-Range must be strong (RFC 9110 §13.1.5); we send back only what we can
# vouch is a well-formed one, never a server's header with control characters in it.
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{0,200}"')


def _validator(response: ArchiveResponse) -> str | None:
    """What a resume of this response's bytes sends as If-Range: a strong ETag, else Last-Modified."""
    if response.etag and _STRONG_ETAG.fullmatch(response.etag.strip()):
        return response.etag.strip()
    date = (response.last_modified or "").strip()
    if date and len(date) <= 64 and date.isascii() and date.isprintable():
        try:
            if email.utils.parsedate_to_datetime(date).tzinfo is not None:
                return date
        except (TypeError, ValueError, IndexError):
            pass
    return None
