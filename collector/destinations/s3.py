"""Archives in object storage (AWS S3, Huawei OBS, MinIO, Ceph): `-o s3://BUCKET/PREFIX`.

`S3Destination` is a `collector.destinations.base.Destination`: archive `name` becomes the object
`PREFIX/name`. One aiobotocore client serves a whole run (`async with S3Destination(...)`):
botocore signs, finds credentials along its usual chain, and retries; aiohttp carries it.

How an archive gets there, and why:

- **Streamed, never staged on disk, memory bounded.** Bytes from the download gather in
  memory until they make a part (`part_size`, 8 MiB; S3's minimum is 5 MiB). The first full
  part starts a multipart upload; each part uploads while the next one fills, and a transfer
  whose next part is full waits for the one uploading. So one transfer holds at most two
  parts, whatever the archive's size (`S3Partial.peak_buffered` keeps the figure).
- **One budget for every transfer's parts** (`Buffers`, `buffer_size`, ``--s3-buffer``,
  32 MiB: rclone's ``--buffer-size`` times its transfers, the AWS CLI's
  ``max_concurrent_requests`` times its chunk size, are the same idea). A transfer waits for
  room before it takes more bytes, rather than growing the process, so the parts in memory
  never add up to more than the budget, whatever the archives' sizes and the number of
  transfers (`S3Destination.peak_buffered`; benchmarks/s3_rss.py measures the process). Each
  part is filled straight into the buffer it is sent from, so its bytes are held once, in
  pages of its own that go back to the kernel as soon as the part is stored (`PartBody`).
- **Small archives are one PutObject** at commit: most log bundles are smaller than a part,
  and one request is both cheaper and atomic.
- **Nothing partial under the final key.** A multipart upload is invisible until it is
  completed, which happens only in `commit`, after the download checked length and gzip.
  `truncate` (a restart from zero), `discard` and any failure abort the upload.
- **sha256 in the object's metadata** (`x-amz-meta-sha256`). A single PutObject carries it.
  A multipart upload's metadata is fixed when it starts, before the hash is known, so after
  completing it the object is copied onto itself with the metadata set (server-side, no bytes
  through us; above 5 GiB as a multipart copy). An object under our key without `sha256`
  was never vouched for: a crash or a failure between the two steps, at worst (its bytes
  are the checked archive all the same). A versioned bucket keeps both versions.
- **Throttling** (SlowDown, 503) is botocore's to retry: adaptive mode, so a SlowDown slows
  every transfer of the run through the client's shared rate limiter, the way the CloudDC
  limiter does (README, *Rate*). Errors that remain become `StorageError`
  (`collector.destinations.s3errors`), which the download loop does not retry.
- **Checksums only when required** (`request_checksum_calculation`): botocore's default
  CRC32 trailers are refused by several S3-compatible stores. Over HTTPS the connection
  protects the bytes; over plain HTTP SigV4 signs each body's sha256.

An upload left behind by a killed process is invisible but billed: give the bucket a
lifecycle rule that aborts incomplete multipart uploads after a day.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
from collections import deque
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from anyio.abc import TaskGroup
from botocore.exceptions import ClientError
from botocore.loaders import JSONFileLoader

from collector.config.settings import Settings
from collector.destinations import jobs
from collector.destinations.base import Archive, StoredObject
from collector.destinations.jobs import Job
from collector.destinations.s3errors import http_status, translating
from collector.errors import StorageError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest part but the last
DEFAULT_PART = 8 * MiB
MAX_PARTS = 10_000  # S3's most parts in one upload
MAX_COPY = 5 * 1024 * MiB  # the largest object one CopyObject copies
COPY_PART = 512 * MiB  # parts of a multipart copy, for larger ones
CLEANUP_SECONDS = 30  # what aborting an upload may take when a transfer is given up
CONTENT_TYPE = "application/gzip"
SEND_SLICE = 256 * 1024  # what aiohttp is given at a time of a part it sends
KEPT_ENDPOINTS = ("s3", "sts", "sso", "sso-oidc")  # see `S3EndpointsOnly`


class S3Destination:
    """Archives as objects `PREFIX/<project_id>/<server_id>-dump.tar.gz` in one bucket.

    Use as ``async with S3Destination(bucket, prefix, ...) as destination``: the client and its
    connection pool live for the block. `max_connections` bounds the pool (one per transfer
    uploading, plus checks); `max_attempts` and `retry_mode` are botocore's retry settings.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART,
        max_connections: int = 32,
        max_attempts: int = 10,
        retry_mode: str = "adaptive",
        connect_timeout: float = Settings.connect_timeout,
        read_timeout: float = Settings.read_timeout,
        addressing_style: str | None = None,
        copy_part_size: int = COPY_PART,
        max_copy: int = MAX_COPY,
        buffer_size: int = Settings.s3_buffer,
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's minimum part)")
        if not MIN_PART <= copy_part_size <= max_copy:
            raise ValueError("copy_part_size must be between 5 MiB and max_copy")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_size = part_size
        self.copy_part_size = copy_part_size
        self.max_copy = max_copy
        self._config = AioConfig(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},  # the first one included
            max_pool_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": addressing_style} if addressing_style else None,
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._tasks: TaskGroup | None = None  # where parts upload while the next one fills
        self.buffers = Buffers(max(buffer_size, part_size), part_size)  # at least one part

    def __repr__(self) -> str:
        return f"S3Destination({self.url!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def buffered(self) -> int:
        """Bytes held by every transfer now, filling or uploading."""
        return self.buffers.held

    @property
    def peak_buffered(self) -> int:
        """The most bytes every transfer held at once: never above `buffers.size`."""
        return self.buffers.peak

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    async def __aenter__(self) -> S3Destination:
        session = get_session()
        session.get_component("data_loader").file_loader = S3EndpointsOnly()
        stack = AsyncExitStack()
        async with stack:
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=self._config
                )
            )
            self._stack = stack.pop_all()
        # Opened after the client, and closed before it: every part is over before it closes.
        self._tasks = await jobs.open_group()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack, tasks, self._tasks = self._stack, None, self._tasks, None
        try:
            if tasks is not None:
                await jobs.close_group(tasks, failed=exc is not None)
        finally:
            self._client = None
            if stack is not None:
                await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Destination is used outside its `async with` block")
        return self._client

    @property
    def tasks(self) -> TaskGroup:
        if self._tasks is None:
            raise RuntimeError("S3Destination is used outside its `async with` block")
        return self._tasks

    def key(self, name: str) -> str:
        """The object key of archive (or report) `name`. Names are ours, checked all the same."""
        parts = name.split("/")
        if not name or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a relative object name: {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- the Destination protocol ------------------------------------------------------------

    async def open_partial(self, name: str) -> S3Partial:
        return S3Partial(self, name)

    async def check(self, name: str, size: int, sha256: str | None) -> bool:
        """Is the object there with this size (and, if given, this sha256 in its metadata)?"""
        stored = await self.stat(name)
        if stored is None or stored.size != size:
            return False
        return sha256 is None or stored.sha256 == sha256

    async def stat(self, name: str) -> StoredObject | None:
        """HEAD the object: None if there is none. A run without its journal asks this."""
        key = self.key(name)
        with translating(f"look up {self.where(key)}"):
            try:
                head = await self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if http_status(exc) == 404:
                    return None
                raise
        return StoredObject(name, int(head["ContentLength"]), head.get("Metadata", {}).get("sha256"))

    # -- more ----------------------------------------------------------------------------------

    async def list_names(self) -> list[str]:
        """Every key under the prefix, relative to it (for `collector merge`)."""
        names: list[str] = []
        start = f"{self.prefix}/" if self.prefix else ""
        with translating(f"list {self.url}"):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                names += [item["Key"][len(start) :] for item in page.get("Contents", [])]
        return names

    async def read_bytes(self, name: str, limit: int = 256 * 1024 * 1024) -> bytes:
        """A small object's bytes (a shard's report), at most `limit` + 1 of them."""
        key = self.key(name)
        with translating(f"read {self.where(key)}"):
            answer = await self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit}")
            async with answer["Body"] as body:
                data: bytes = await body.read()
                return data

    async def write_document(self, name: str, body: bytes, *, content_type: str = "application/json") -> None:
        """Put a small document (report.json) in one PutObject: readers see all of it or the old one."""
        key = self.key(name)
        with translating(f"store {self.where(key)}"):
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata={"sha256": hashlib.sha256(body).hexdigest()},
            )

    async def check_bucket(self) -> None:
        """Fail early, with a clear reason, if the bucket is missing or our credentials are refused.

        Lists at most one key under the prefix: unlike HeadBucket, a refusal then comes with
        its error code (InvalidAccessKeyId or AccessDenied). Needs s3:ListBucket.
        """
        with translating(f"open {self.url}"):
            await self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1
            )


class S3EndpointsOnly(JSONFileLoader):  # type: ignore[misc]  # botocore ships no types
    """botocore's model files as they are, but of endpoints.json only the entries of S3 and
    of the services botocore's credential chain may call (a service without an entry gets its
    partition's defaults).

    The client keeps the whole file for as long as it lives: 6.7 MiB of Python objects for
    every AWS service's endpoints, 5 MB of RSS, of which an S3 client reads S3's
    (benchmarks/s3_rss.py).
    """

    def load_file(self, file_path: str) -> Any:
        data = super().load_file(file_path)
        if isinstance(data, dict) and file_path.endswith(f"{os.sep}endpoints"):
            for partition in data.get("partitions", []):
                services = partition.get("services", {})
                partition["services"] = {name: services[name] for name in KEPT_ENDPOINTS if name in services}
        return data


class Buffers:
    """The bytes every transfer of one destination may hold: parts filling and parts on their way.

    A transfer asks before it takes bytes (`fill`) and waits while the answer is no. Bytes
    held are never more than `size`. Waiting while holding can deadlock: transfers each
    holding part of a part, every one waiting for room that only another's finished part
    would free. So a request is granted only if, afterwards, some transfer can still finish
    the part it is filling with the room there is, counting the parts being sent (they come
    back without needing anything; the banker's algorithm's safe state). That transfer
    finishes its part, sends it, gets its bytes back, and the next one can finish, and so on:
    a part is never more than `part_size` (the transfers cut it there), and `size` is at
    least one part. Small archives share the room byte for byte, so a budget of a few parts
    lets many small transfers run at once.
    """

    def __init__(self, size: int, part_size: int) -> None:
        if size < part_size:
            raise ValueError("the buffer budget must hold at least one part")
        self.size = size
        self.part_size = part_size
        self.held = 0  # every byte held: parts filling and parts being sent
        self.sending = 0  # of which: parts being sent, which come back without more room
        self.peak = 0
        self._filling: dict[S3Partial, int] = {}  # each transfer's part filling, if any
        self._waiting: deque[tuple[S3Partial, int, anyio.Event]] = deque()

    async def fill(self, owner: S3Partial, size: int) -> None:
        """Take `size` more bytes for `owner`'s part filling, once that is safe."""
        if self._grantable(owner, size):  # before those waiting: they may need this one's part done
            self._grant(owner, size)
            self._wake()  # a fuller part can make another's request safe
            return
        turn = (owner, size, anyio.Event())
        self._waiting.append(turn)
        try:
            await turn[2].wait()
        except BaseException:
            if turn in self._waiting:
                self._waiting.remove(turn)
            else:  # granted as we were cancelled: give it back
                self._filling[owner] -= size
                if not self._filling[owner]:
                    del self._filling[owner]
                self._release(size)
            raise

    def send(self, owner: S3Partial) -> int:
        """`owner`'s part filling is on its way now; `sent` gives its bytes back."""
        size = self._filling.pop(owner, 0)
        self.sending += size
        return size

    def sent(self, size: int) -> None:
        """A part `send` started is over, whatever became of it."""
        self.sending -= size
        self._release(size)

    def drop(self, owner: S3Partial) -> None:
        """`owner`'s part filling is thrown away."""
        self._release(self._filling.pop(owner, 0))

    def _grantable(self, owner: S3Partial, size: int) -> bool:
        if self.held + size > self.size:
            return False
        fullest = self._filling.get(owner, 0) + size
        for other, filled in self._filling.items():
            if other is not owner and filled > fullest:
                fullest = filled
        return self.part_size - fullest <= self.size - self.held - size + self.sending

    def _grant(self, owner: S3Partial, size: int) -> None:
        self._filling[owner] = self._filling.get(owner, 0) + size
        self.held += size
        self.peak = max(self.peak, self.held)

    def _release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        """Grant what has become safe, in the order asked, until nothing more is."""
        granted = True
        while granted:
            granted = False
            for turn in list(self._waiting):
                owner, wanted, event = turn
                if self._grantable(owner, wanted):
                    self._waiting.remove(turn)
                    self._grant(owner, wanted)
                    event.set()
                    granted = True


class PartBody(Payload):
    """One part's bytes in pages of their own: filled once, then sent from where they are.

    An anonymous map of `capacity` bytes: only the pages written take memory, and every one
    goes back to the kernel on `release`. A `BytesIO` grew by copies, an eighth over its
    size, and the heap kept the buffers it left behind: a run held ~20 MB more than its
    budget (benchmarks/s3_rss.py). botocore reads it as a file (its length; its sha256 over
    plain HTTP); aiohttp sends it as a `Payload`, in slices of the map, never copied whole.
    """

    _autoclose = True  # memory only: `release` gives it back, not aiohttp

    def __init__(self, capacity: int) -> None:
        self._map = mmap.mmap(-1, max(capacity, mmap.PAGESIZE))
        super().__init__(None, content_type="application/octet-stream")
        self._filled = 0
        self._position = 0  # where botocore reads

    @property
    def size(self) -> int:
        """The bytes filled: what aiohttp sends, botocore's Content-Length."""
        return self._filled

    def __len__(self) -> int:
        return self._filled

    def append(self, data: bytes | memoryview) -> None:
        self._map[self._filled : self._filled + len(data)] = data
        self._filled += len(data)

    def release(self) -> None:
        """Give the pages back (if a slice is still out, the map goes when it does)."""
        try:
            self._map.close()
        except BufferError:
            pass

    # -- read as a file, by botocore ---------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        end = self._filled if size < 0 else min(self._filled, self._position + size)
        data = self._map[self._position : end] if end > self._position else b""
        self._position = max(self._position, end)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._filled}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    # -- sent as a payload, by aiohttp -------------------------------------------------------

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._map[: self._filled].decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        end = self._filled if content_length is None else min(self._filled, content_length)
        with memoryview(self._map) as view:
            for start in range(0, end, SEND_SLICE):
                await writer.write(view[start : min(start + SEND_SLICE, end)])


class S3Partial:
    """One archive on its way to `PREFIX/name`: see the module's docstring."""

    # Small batches: a transfer waiting for room in `Buffers` holds the batch it brought, and
    # its bytes are copied into the part anyway (no writev to feed). Sixteen transfers waiting
    # with 1 MiB each were ~16 MiB outside the budget (issue 14).
    batch = 256 * 1024

    def __init__(self, destination: S3Destination, name: str) -> None:
        self.destination = destination
        self.name = name
        self.key = destination.key(name)
        self.size = 0
        self.peak_buffered = 0  # the most bytes this transfer held at once
        self._hash = hashlib.sha256()
        self._part: PartBody | None = None  # the part filling, sent from where it is
        self._filling = 0
        self._held = 0  # bytes filling, uploading, or being put
        self._in_flight = 0  # bytes of the part uploading
        self._sending: Job | None = None  # the part uploading, a task of the destination's
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"S3Partial({self.destination.where(self.key)!r}, size={self.size})"

    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def buffered(self) -> int:
        """Bytes this transfer holds in memory now: the part filling and any being sent."""
        return self._held

    @property
    def upload_id(self) -> str | None:
        """The multipart upload under way, if one was started."""
        return self._upload_id

    async def write(self, chunks: list[bytes]) -> None:
        """Take these chunks after what came before; upload a part once enough is here.

        Each part is `part_size` exactly but the last: the chunk that crosses the boundary is
        cut there, so the room a part asks of `Buffers` is never more than one part.
        """
        part_size = self.destination.part_size
        pieces: deque[bytes | memoryview] = deque(chunks)
        while pieces:
            room, size = part_size - self._filling, 0
            taken: list[bytes | memoryview] = []
            while pieces and size < room:
                piece = pieces.popleft()
                if size + len(piece) > room:
                    view = memoryview(piece)
                    piece, rest = view[: room - size], view[room - size :]
                    pieces.appendleft(rest)
                taken.append(piece)
                size += len(piece)
            await self.destination.buffers.fill(self, size)
            self._hold(size)
            if self._part is None:
                self._part = PartBody(part_size)
            for piece in taken:
                self._hash.update(piece)
                self._part.append(piece)
            self.size += size
            if self._filling >= part_size:
                await self._settle()  # the part before it is done: at most one uploading
                await self._start_part()

    async def truncate(self) -> None:
        """Start again from zero: the upload under way is aborted, a new one starts when needed."""
        self._drop_buffer()
        await self._abandon()
        self.size = 0
        self._hash = hashlib.sha256()

    async def commit(self) -> Archive:
        """Put the object under its final key, with its sha256 in the metadata."""
        destination, client = self.destination, self.destination.client
        digest = self.sha256()
        where = destination.where(self.key)
        if self._upload_id is None:
            body, size = self._take_part()
            try:
                with translating(f"store {where}"):
                    await client.put_object(
                        Bucket=destination.bucket,
                        Key=self.key,
                        Body=body,
                        ContentType=CONTENT_TYPE,
                        Metadata={"sha256": digest},
                    )
            finally:
                body.release()
                self._release(size)
            return Archive(self.name, self.size, digest)
        await self._settle()
        if self._filling:
            await self._start_part()
            await self._settle()
        with translating(f"complete {where}"):
            done = await client.complete_multipart_upload(
                Bucket=destination.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id, self._parts = None, []
        await self._stamp(done["ETag"], digest)
        return Archive(self.name, self.size, digest)

    async def discard(self) -> None:
        """Abort the upload (or the copy that stamps the sha256), keeping nothing in memory.

        Runs on the way out of a failure or a cancellation: shielded, time-boxed, and never
        raising over the error that brought us here (a leftover is logged instead). An object
        completed before a failed stamp stays: its bytes are the checked archive, and without
        `sha256` nobody takes it for a committed one (deleting it could only lose data).
        """
        self._drop_buffer()
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True) as scope:
            try:
                await self._abandon()
            except StorageError as exc:
                log.warning("%s: could not clean up after a failed transfer: %s", self.key, exc)
        if scope.cancelled_caught:
            log.warning("%s: cleaning up after a failed transfer took over %d s; gave up", self.key, CLEANUP_SECONDS)

    # -- parts ---------------------------------------------------------------------------------

    async def _start_part(self) -> None:
        """Send what has filled as the next part, as a task of the destination's; `_settle` awaits it."""
        destination = self.destination
        if len(self._parts) >= MAX_PARTS:
            raise StorageError(
                f"cannot store {destination.where(self.key)}: more than {MAX_PARTS} parts of "
                f"{destination.part_size} bytes",
                reason="archive too large for a multipart upload at this part size",
            )
        if self._upload_id is None:
            with translating(f"start uploading {destination.where(self.key)}"):
                started = await destination.client.create_multipart_upload(
                    Bucket=destination.bucket, Key=self.key, ContentType=CONTENT_TYPE
                )
            self._upload_id = started["UploadId"]
        body, self._in_flight = self._take_part()
        upload_id, number = self._upload_id, len(self._parts) + 1
        self._sending = jobs.start(destination.tasks, lambda: self._upload_part(upload_id, number, body))

    async def _upload_part(self, upload_id: str, number: int, body: PartBody) -> None:
        destination = self.destination
        try:
            with translating(f"upload part {number} of {destination.where(self.key)}"):
                sent = await destination.client.upload_part(
                    Bucket=destination.bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=body
                )
            self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        finally:
            body.release()
            self._part_done()

    def _part_done(self) -> None:
        """Stop counting the part that was in flight (a task cancelled before it ran never gets here)."""
        size, self._in_flight = self._in_flight, 0
        self._release(size)

    async def _settle(self) -> None:
        """Wait for the part in flight and raise its error."""
        if self._sending is not None:
            # A cancelled caller leaves the upload running: `_abandon` stops it.
            await self._sending.result()
            self._sending = None

    async def _abandon(self) -> None:
        """Stop the part in flight and abort the upload. Raises `StorageError` if S3 refuses."""
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.scope.cancel()
            await sending.finished()  # this part's failure, if it failed, is moot now
            self._part_done()
        upload_id, self._upload_id = self._upload_id, None
        self._parts = []
        if upload_id is None:
            return
        destination = self.destination
        with translating(f"abort the upload of {destination.where(self.key)}"):
            try:
                await destination.client.abort_multipart_upload(
                    Bucket=destination.bucket, Key=self.key, UploadId=upload_id
                )
            except ClientError as exc:
                if http_status(exc) != 404:  # NoSuchUpload: gone already (completed or aborted)
                    self._upload_id = upload_id  # still there: `discard` tries again
                    raise

    async def _stamp(self, etag: str, digest: str) -> None:
        """Copy the completed object onto itself with its sha256 in the metadata.

        `CopySourceIfMatch` makes sure it is the object we completed, not a newer one.
        """
        destination, client = self.destination, self.destination.client
        source = {"Bucket": destination.bucket, "Key": self.key}
        where = destination.where(self.key)
        metadata = {"sha256": digest}
        if self.size <= destination.max_copy:
            with translating(f"set the metadata of {where}"):
                await client.copy_object(
                    Bucket=destination.bucket,
                    Key=self.key,
                    CopySource=source,
                    CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE",
                    Metadata=metadata,
                    ContentType=CONTENT_TYPE,
                )
            return
        with translating(f"set the metadata of {where}"):
            started = await client.create_multipart_upload(
                Bucket=destination.bucket, Key=self.key, ContentType=CONTENT_TYPE, Metadata=metadata
            )
        self._upload_id = started["UploadId"]  # aborted by `discard` if the copy fails
        step = destination.copy_part_size
        for number, start in enumerate(range(0, self.size, step), 1):
            end = min(start + step, self.size) - 1
            with translating(f"copy part {number} of {where}"):
                copied = await client.upload_part_copy(
                    Bucket=destination.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceIfMatch=etag,
                    CopySourceRange=f"bytes={start}-{end}",
                )
            self._parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        with translating(f"set the metadata of {where}"):
            await client.complete_multipart_upload(
                Bucket=destination.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id = None
        self._parts = []

    # -- the bytes held --------------------------------------------------------------------------

    def _take_part(self) -> tuple[PartBody, int]:
        """The part filled so far, ready to send, and its size; still counted until `_release`."""
        body, size = self._part or PartBody(0), self._filling
        self._part, self._filling = None, 0
        self.destination.buffers.send(self)
        return body, size

    def _hold(self, size: int) -> None:
        """`size` bytes more in the part filling, granted already by `Buffers.fill`."""
        self._filling += size
        self._held += size
        self.peak_buffered = max(self.peak_buffered, self._held)

    def _release(self, size: int) -> None:
        """A part sent (or given up) of `size` bytes is out of memory."""
        self._held -= size
        self.destination.buffers.sent(size)

    def _drop_buffer(self) -> None:
        if self._part is not None:
            self._part.release()
        self._part = None
        self._held -= self._filling
        self.destination.buffers.drop(self)
        self._filling = 0
