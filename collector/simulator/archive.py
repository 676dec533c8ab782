"""Deterministic tar.gz log bundles, generated on the fly.

Each archive is a real tar.gz of a server's "logs" (``{id}/var/log/messages``,
``{id}/bmc/sel.log``, ``{id}/bmc/fru.txt``), fixed by (seed, server id, size). Nothing is read
from disk.

Two choices keep this cheap and let an archive of any size be streamed in constant memory:

- The gzip layer uses *stored* deflate blocks (what ``compresslevel=0`` writes), built by hand.
  The compressed size is then a closed-form function of the tar size, so the server knows
  Content-Length before it generates a byte, and a gzip comment pads the file to exactly the
  size drawn for the server.
- File contents are slices, at seeded offsets, of one text pool per seed, so generating a
  gigabyte costs memory copies and a CRC, not a gigabyte of random numbers.

`iter_archive` is the single definition of an archive's bytes; `ArchiveStore` caches the small
ones and streams the large ones, and both paths serve exactly what `iter_archive` yields.
"""

from __future__ import annotations

import functools
import random
import struct
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

TAR_BLOCK = 512
STORED_BLOCK = 65535  # the most one stored deflate block can hold
PIECE_BYTES = 16 * 1024
POOL_BYTES = 1024 * 1024
MIN_ARCHIVE_BYTES = 4096
MTIME = 1795773600  # 2026-11-27T10:00:00Z, so archives do not depend on the clock

_MEMBERS = ("var/log/messages", "bmc/sel.log", "bmc/fru.txt")
_GZIP_FIXED = 10 + 8  # header without optional fields, and the CRC32/ISIZE trailer
_FNAME, _FCOMMENT = 0x08, 0x10


def _text_table() -> bytes:
    """Byte translation to log-ish text: mostly letters and digits, some spaces and newlines."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789:=-_.[]"
    table = bytearray()
    for value in range(256):
        if value < 4:
            table.append(0x0A)
        elif value < 44:
            table.append(0x20)
        else:
            table.append(alphabet[value % len(alphabet)])
    return bytes(table)


_TEXT_TABLE = _text_table()


@functools.lru_cache(maxsize=4)
def _text_pool(seed: int) -> bytes:
    # One extra piece so any offset below POOL_BYTES can be sliced a whole piece long.
    raw = random.Random(f"pool:{seed}").randbytes(POOL_BYTES + PIECE_BYTES)
    return raw.translate(_TEXT_TABLE)


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    """Everything that fixes an archive's bytes, computed without generating them."""

    server_id: str
    size: int  # bytes of the final .tar.gz
    seed: int
    members: tuple[tuple[str, int], ...]  # (path inside the tar, content length)
    tar_size: int
    comment_bytes: int  # gzip FCOMMENT field length including its NUL; 0 for none

    @property
    def gzip_name(self) -> bytes:
        return f"{self.server_id}-dump.tar".encode()


def _stored_blocks(tar_size: int) -> int:
    return max(1, -(-tar_size // STORED_BLOCK))


def _gzip_overhead(name_len: int, tar_size: int) -> int:
    return _GZIP_FIXED + name_len + 1 + 5 * _stored_blocks(tar_size)


def plan_archive(server_id: str, size: int, seed: int) -> ArchivePlan:
    """Lay out an archive of exactly `size` bytes for this server."""
    names = tuple(f"{server_id}/{member}" for member in _MEMBERS)
    name_len = len(f"{server_id}-dump.tar".encode())
    min_tar = TAR_BLOCK * (len(names) + 2)  # one header per member, two end-of-archive blocks
    # Overhead grows with the tar size, so the estimate from `size` is a floor; step up.
    tar_size = (size - _gzip_overhead(name_len, size)) // TAR_BLOCK * TAR_BLOCK
    while tar_size + TAR_BLOCK + _gzip_overhead(name_len, tar_size + TAR_BLOCK) <= size:
        tar_size += TAR_BLOCK
    if tar_size < min_tar:
        raise ValueError(f"archive of {size} bytes is too small for {server_id}")

    rng = random.Random(f"{seed}:{server_id}:layout")
    blocks = tar_size // TAR_BLOCK - len(names) - 2
    fru = min(blocks, 1 + blocks // 20)
    sel = (blocks - fru) * 3 // 10
    messages = blocks - fru - sel
    # Ragged ends, so member sizes look natural and exercise tar padding.
    lengths = [b * TAR_BLOCK - rng.randrange(TAR_BLOCK) if b else 0 for b in (messages, sel, fru)]
    return ArchivePlan(
        server_id=server_id,
        size=size,
        seed=seed,
        members=tuple(zip(names, lengths, strict=True)),
        tar_size=tar_size,
        comment_bytes=size - tar_size - _gzip_overhead(name_len, tar_size),
    )


def _tar_header(name: str, length: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = length
    info.mtime = MTIME
    info.mode = 0o644
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _tar_pieces(plan: ArchivePlan) -> Iterator[bytes | memoryview]:
    pool = memoryview(_text_pool(plan.seed))
    rng = random.Random(f"{plan.seed}:{plan.server_id}:content")
    for name, length in plan.members:
        yield _tar_header(name, length)
        head = f"# {name}: CloudDC simulator log bundle, seed {plan.seed}\n".encode()[:length]
        yield head
        remaining = length - len(head)
        while remaining:
            n = min(PIECE_BYTES, remaining)
            offset = rng.randrange(POOL_BYTES)
            yield pool[offset : offset + n]
            remaining -= n
        if length % TAR_BLOCK:
            yield bytes(TAR_BLOCK - length % TAR_BLOCK)
    yield bytes(2 * TAR_BLOCK)


def _gzip_header(plan: ArchivePlan) -> bytes:
    flags = _FNAME | (_FCOMMENT if plan.comment_bytes else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\x00\x00\x00\x00\x00\x03"
    header += plan.gzip_name + b"\x00"
    if plan.comment_bytes:
        padding = b"padding " * (plan.comment_bytes // 8 + 1)
        header += padding[: plan.comment_bytes - 1] + b"\x00"
    return header


def iter_archive(plan: ArchivePlan, chunk_bytes: int = 256 * 1024) -> Iterator[bytes]:
    """Yield the archive's bytes in chunks of about `chunk_bytes`. The one definition of them."""
    out: list[bytes] = [_gzip_header(plan)]
    out_len = len(out[0])
    crc = 0
    pending = bytearray()
    emitted = 0  # tar bytes already framed into blocks

    def frame(n: int) -> None:
        nonlocal emitted, out_len
        final = emitted + n == plan.tar_size
        out.append(struct.pack("<BHH", final, n, n ^ 0xFFFF))
        out.append(bytes(pending[:n]))
        del pending[:n]
        emitted += n
        out_len += n + 5

    for piece in _tar_pieces(plan):
        crc = zlib.crc32(piece, crc)
        pending += piece
        while len(pending) >= STORED_BLOCK:
            frame(STORED_BLOCK)
        if out_len >= chunk_bytes:
            yield b"".join(out)
            out.clear()
            out_len = 0
    if pending:
        frame(len(pending))
    out.append(struct.pack("<II", crc, plan.tar_size & 0xFFFFFFFF))
    yield b"".join(out)


def build_archive(server_id: str, size: int, seed: int) -> bytes:
    """The whole archive in memory."""
    return b"".join(iter_archive(plan_archive(server_id, size, seed)))


class ArchiveStore:
    """Serves archive bytes: small ones from a bounded LRU cache, large ones streamed."""

    def __init__(
        self,
        seed: int,
        *,
        chunk_bytes: int = 256 * 1024,
        cache_bytes: int = 256 * 1024 * 1024,
        cacheable_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.seed = seed
        self.chunk_bytes = chunk_bytes
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cacheable_bytes = min(cacheable_bytes, cache_bytes)
        self._cached = 0

    def data(self, server_id: str, size: int) -> bytes:
        """The whole archive, from the cache when it fits there."""
        key = (server_id, size)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        data = build_archive(server_id, size, self.seed)
        if size <= self._cacheable_bytes:
            self._cache[key] = data
            self._cached += size
            while self._cached > self._cache_bytes:
                _, evicted = self._cache.popitem(last=False)
                self._cached -= len(evicted)
        return data

    def chunks(
        self, server_id: str, size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[bytes | memoryview]:
        """Bytes ``[start, stop)`` of the archive, in chunks of about `chunk_bytes`."""
        stop = size if stop is None else min(stop, size)
        if size <= self._cacheable_bytes:
            view = memoryview(self.data(server_id, size))
            for offset in range(start, stop, self.chunk_bytes):
                yield view[offset : min(offset + self.chunk_bytes, stop)]
            return
        position = 0
        for chunk in iter_archive(plan_archive(server_id, size, self.seed), self.chunk_bytes):
            end = position + len(chunk)
            if end > start and position < stop:
                yield memoryview(chunk)[max(start - position, 0) : min(stop, end) - position]
            if end >= stop:
                return
            position = end
