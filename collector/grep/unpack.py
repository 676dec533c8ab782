"""Archives opened as streams, in memory only: gzip, tar and zip, nested in any order.

Every layer is a `Stream` (``read(n)`` returns at most `n` bytes, ``b""`` at the end) that
pulls from the one below in chunks of at most `CHUNK`, so a layer holds a chunk or two
whatever its member claims to be. Nothing is written anywhere and nothing is followed:
a member is a name and bytes, never a path on this machine.

What an archive from a hostile machine can do, and what it gets:

- a name that is absolute, holds ``..``, or is a link, a device or a FIFO: links, devices
  and FIFOs are skipped (they hold no bytes of their own); names are only shown, escaped;
- a header that lies about its size: reading stops where the bytes stop (`Damaged`), or the
  next header's checksum fails (`Damaged`); neither allocates what the header claims;
- a long name or pax record of any size: at most `MAX_NAME` bytes of it are kept;
- a compression bomb, nested or not: every inflated byte of an archive is charged to its
  `Budget`, and the archive is given up (`Bomb`) when it runs out;
- nesting deeper than `MAX_DEPTH` containers: the member is skipped with a warning.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

CHUNK = 1024 * 1024  # bytes a layer asks of the one below, and gives at most per read
MAX_NAME = 64 * 1024  # bytes kept of a GNU long name or a pax header
MAX_DEPTH = 8  # containers (gzip, tar, zip) one inside the other
TAR_BLOCK = 512
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_OTHER = (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"PK\x07\x08")
_FILE_TYPES = (b"0", b"\x00", b"7")  # regular files; contiguous files ("7") read as regular
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # hard and symbolic links, devices, folders, FIFOs


class Damaged(Exception):
    """The bytes are not what their format says: the search of this stream ends here."""


class Bomb(Exception):
    """The archive inflates to more than its budget allows."""


class Stream(Protocol):
    def read(self, n: int, /) -> bytes: ...


class Decompressing(Protocol):
    """zlib's decompression object, as python-isal's copies it."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def unconsumed_tail(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


Decompressor = Callable[[int], Decompressing]


def _zlib_decompressobj(wbits: int) -> Decompressing:
    return zlib.decompressobj(wbits)


def _inflate_errors() -> tuple[type[Exception], ...]:
    try:
        from isal.isal_zlib import error as isal_error
    except ImportError:  # pragma: no cover - as below
        return (zlib.error,)
    return (zlib.error, cast(type[Exception], isal_error))


INFLATE_ERRORS = _inflate_errors()  # what either inflater raises for bytes that are not deflate


def best_decompressobj() -> Decompressor:
    """python-isal's inflater where installed (see README, *collector grep*), else zlib's."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; a wheel-less platform falls back
        return _zlib_decompressobj
    make: Decompressor = isal_zlib.decompressobj
    return make


class Budget:
    """Inflated bytes one archive may still produce, across every layer of it."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise Bomb(f"inflates to more than {self.limit:,} bytes (a compression bomb?)")


class Peek:
    """A stream with its first bytes looked at, and given back by the next reads."""

    __slots__ = ("_head", "_source")

    def __init__(self, source: Stream, head: bytes) -> None:
        self._source = source
        self._head = head

    @classmethod
    def of(cls, source: Stream, n: int) -> tuple[Peek, bytes]:
        head = read_exact(source, n)
        return cls(source, head), head

    def read(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._source.read(n)


def read_exact(source: Stream, n: int) -> bytes:
    """`n` bytes, or fewer only at the end of `source`."""
    data = source.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = source.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def skip(source: Stream, n: int) -> int:
    """Read and drop `n` bytes; how many there were."""
    left = n
    while left > 0:
        data = source.read(min(left, CHUNK))
        if not data:
            break
        left -= len(data)
    return n - left


class Limited:
    """The next `size` bytes of `source`: a tar member's data. Short is `Damaged`."""

    __slots__ = ("_source", "left", "size")

    def __init__(self, source: Stream, size: int) -> None:
        self._source = source
        self.size = size
        self.left = size

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self._source.read(min(n, self.left))
        if not data:
            raise Damaged(
                f"a member's header says {self.size:,} bytes, but the archive ends after {self.size - self.left:,}"
            )
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left > 0:
            self.read(CHUNK)


class Inflate:
    """A deflate stream's bytes: gzip members one after another (``wbits=31``), or one raw
    deflate stream (``wbits=-15``, a zip member). Output per read is bounded by `n`."""

    __slots__ = ("_budget", "_d", "_done", "_gzip", "_make", "_source", "_spare", "inflated")

    def __init__(self, source: Stream, budget: Budget, make: Decompressor, *, gzip: bool = True) -> None:
        self._source = source
        self._budget = budget
        self._make = make
        self._gzip = gzip
        self._d = make(31 if gzip else -15)
        self._spare = b""  # input read but not yet given to the inflater
        self._done = False
        self.inflated = 0

    def read(self, n: int) -> bytes:
        n = max(1, min(n, CHUNK))
        while not self._done:
            d = self._d
            if d.eof:
                rest = d.unused_data + self._spare
                self._spare = b""
                if not self._gzip:
                    self._spare = rest  # a zip reads its data descriptor from what follows
                    self._done = True
                    break
                if not rest:
                    rest = self._source.read(CHUNK)
                if not rest.strip(b"\x00"):
                    self._done = True  # the end, or the zeros some writers pad with
                    break
                if not rest.startswith(_GZIP_MAGIC):
                    raise Damaged("bytes that are not gzip follow the gzip stream")
                self._d = d = self._make(31)
                self._spare = rest
            data = d.unconsumed_tail or self._spare or self._source.read(CHUNK)
            self._spare = b""
            if not data:
                raise Damaged(f"the gzip stream stops before its end (after {self.inflated:,} bytes inflated)")
            try:
                out = d.decompress(data, n)
            except INFLATE_ERRORS as exc:
                raise Damaged(f"not a valid deflate stream ({exc})") from None
            if out:
                self.inflated += len(out)
                self._budget.spend(len(out))
                return out
            if d.unconsumed_tail == data and not d.eof:
                raise Damaged("the deflate stream makes no progress")
        return b""

    def rest(self) -> bytes:
        """What the source held after the deflate stream ended (a zip's data descriptor...)."""
        return self._spare


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    data: Stream


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU's base-256 (high bit set)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise Damaged(f"a tar header field is not a number: {text[:20]!r}") from None


def _name(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def looks_like_tar(head: bytes) -> bool:
    """A ustar/GNU magic, or an old tar's header whose checksum holds."""
    if len(head) < TAR_BLOCK:
        return False
    if head[257:262] == b"ustar":
        return True
    return _checksum_ok(head) and head[:1] not in (b"\x00", b"")


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except Damaged:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored == unsigned:
        return True
    # Some old writers summed the bytes as signed.
    signed = sum(struct.unpack("512b", block)) - sum(struct.unpack("8b", block[148:156])) + 256
    return bool(stored == signed)


def tar_members(source: Stream) -> Iterator[Member]:
    """The regular files of a tar stream, in order. Each member must be read (or not) before
    the next is asked for; the rest of it is skipped."""
    long_name: str | None = None
    offset = 0
    while True:
        block = read_exact(source, TAR_BLOCK)
        if not block:
            return  # no end-of-archive blocks: many writers leave them out
        if len(block) < TAR_BLOCK:
            raise Damaged(f"the tar stream ends inside a header at byte {offset:,}")
        if block == bytes(TAR_BLOCK):
            return
        if not _checksum_ok(block):
            raise Damaged(f"a tar header's checksum does not match at byte {offset:,}")
        size = _number(block[124:136])
        if size < 0:
            raise Damaged(f"a tar header gives a negative size at byte {offset:,}")
        kind = block[156:157]
        name = _name(block[:100])
        if block[257:262] == b"ustar" and block[345:346] != b"\x00":
            name = f"{_name(block[345:500])}/{name}"
        padded = -(-size // TAR_BLOCK) * TAR_BLOCK
        offset += TAR_BLOCK
        if kind in (b"L", b"x", b"g"):
            data = read_exact(source, min(size, MAX_NAME))
            if len(data) < min(size, MAX_NAME):
                raise Damaged(f"the tar stream ends inside a long name at byte {offset:,}")
            skip(source, padded - len(data))
            offset += padded
            if kind == b"L":
                long_name = _name(data)
            elif kind == b"x":
                long_name = _pax_path(data) or long_name
            continue
        if long_name is not None:
            name, long_name = long_name, None
        if kind in _FILE_TYPES:
            contents = Limited(source, size)
            yield Member(name, contents)
            contents.drain()
            skip(source, padded - size)
            offset += padded
        elif kind not in _NO_DATA:
            skip(source, padded)  # an unknown kind: its bytes are not a file's
            offset += padded
        # Links, devices, directories and FIFOs hold no bytes of their own (a hard link's
        # size field is ignored, as tar does): nothing to search, nothing to follow.


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header, if any (records: ``LEN key=value\\n``)."""
    position = 0
    path = None
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        try:
            length = int(data[position:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1 : position + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        position += length
    return path


def zip_members(source: Stream, budget: Budget, make: Decompressor) -> Iterator[Member]:
    """The files of a zip read front to back by their local headers, never seeking: a
    member stored with a data descriptor and no size cannot be delimited, and ends the walk."""
    while True:
        signature = read_exact(source, 4)
        if len(signature) < 4 or signature in _ZIP_OTHER:
            return  # the central directory: every member has been seen
        if signature != _ZIP_LOCAL:
            raise Damaged("a zip local header is missing where one should start")
        fixed = read_exact(source, 26)
        if len(fixed) < 26:
            raise Damaged("the zip stream ends inside a local header")
        _version, flags, method, _time, _date, _crc, csize, _usize, name_len, extra_len = struct.unpack(
            "<HHHHHIIIHH", fixed
        )
        name = _name(read_exact(source, name_len)) if name_len else ""
        skip(source, extra_len)
        descriptor = bool(flags & 0x08)
        encrypted = bool(flags & 0x01)
        if descriptor and method != 8:
            raise Damaged(f"zip member {name[:80]!r} has no size in its header and is not deflated")
        if method not in (0, 8) or encrypted:
            if descriptor:
                raise Damaged(f"zip member {name[:80]!r} cannot be delimited (method {method})")
            skip(source, csize)
            continue
        if descriptor:  # deflate ends itself; the descriptor follows what it leaves
            inflate = Inflate(source, budget, make, gzip=False)
            yield Member(name, inflate)
            while inflate.read(CHUNK):
                pass
            rest = Peek(source, inflate.rest())
            head = read_exact(rest, 4)
            # The descriptor: an optional signature, CRC, and two sizes of 4 (or 8, zip64) bytes.
            skip(rest, 12 if head == b"PK\x07\x08" else 8)
            source = rest
            continue
        raw = Limited(source, csize)
        member: Stream = raw if method == 0 else Inflate(raw, budget, make, gzip=False)
        if method == 0:
            budget.spend(csize)
        yield Member(name, member)
        raw.drain()


def sniff(head: bytes) -> str:
    """What a stream is, by its first bytes: ``gzip``, ``tar``, ``zip`` or ``data``."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZIP_LOCAL):
        return "zip"
    if looks_like_tar(head):
        return "tar"
    return "data"
