"""Deterministic tar.gz log bundles, generated on the fly.

Each archive is a real tar.gz of a server's "logs", fixed by (seed, server id, size), read
from nowhere. It looks like a bundle a BMC dump gives, enough to search it
(`collector grep`):

    {id}/var/log/messages            syslog lines, as long as the size asks
    {id}/var/log/messages.1.gz       a rotated log: a plain gzip member
    {id}/bmc/sel.log                 more log lines
    {id}/bmc/bmc-events.tar.gz       a nested tar.gz of BMC event logs (sel/sel.log, sel/sensors.txt)
    {id}/bmc/fru.txt

The nested members always hold the line ``board serial {id}`` (so a search can check whom
an archive is attributed to), and the error lines of the faults `faults(id)` gives the
server: a pure function of its id, so tests predict which servers a search finds. An archive
too small for the nested members (under about 12 KiB) has the three plain ones only.

Two choices keep this cheap and let an archive of any size be streamed in constant memory:

- The outer gzip layer uses *stored* deflate blocks (what ``compresslevel=0`` writes), built
  by hand. The compressed size is then a closed-form function of the tar size, so the server
  knows Content-Length before it generates a byte, and a gzip comment pads the file to
  exactly the size drawn for the server. (The nested members are really compressed: small,
  and cached per server.)
- The padding is slices, at seeded line starts, of one pool of log lines per seed, so
  generating a gigabyte costs memory copies and a CRC, not a gigabyte of random numbers.

With ``hostile=True`` (`SimConfig.hostile_archives`, ``simulate --hostile-archives``) a
server's archive may instead be one of `HOSTILE_CASES` (`hostile_case(id)` says which):
whole gzip, so a sweep collects it, but hostile inside (see `_hostile_tar`).

`iter_archive` is the single definition of an archive's bytes; `ArchiveStore` caches the small
ones and streams the large ones, and both paths serve exactly what `iter_archive` yields.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
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
ROTATED, EVENTS = "var/log/messages.1.gz", "bmc/bmc-events.tar.gz"
_GZIP_FIXED = 10 + 8  # header without optional fields, and the CRC32/ISIZE trailer
_FNAME, _FCOMMENT = 0x08, 0x10

# The faults a server may have, and the lines they leave: (where, line) pairs. A sweep for
# "Uncorrectable ECC" finds the servers with "memory" among their faults, and no other.
FAULT_LINES: dict[str, tuple[tuple[str, str], ...]] = {
    "memory": (
        (ROTATED, "kernel: EDAC MC0: 1 UE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0"),
        (EVENTS, "SEL 00a1 | Memory | Uncorrectable ECC | DIMM010 | Asserted"),
    ),
    "disk": (
        (ROTATED, "kernel: blk_update_request: I/O error, dev sdb, sector 1953525160 op 0x0:(READ)"),
        (EVENTS, "SEL 00b2 | Drive Slot | Drive Fault | Disk3 | Asserted"),
    ),
    "psu": ((EVENTS, "SEL 00c3 | Power Supply | Failure detected | PSU2 | Asserted"),),
}
_FAULT_ODDS = {"memory": 5, "disk": 7, "psu": 11}  # one server in N has it


def faults(server_id: str) -> tuple[str, ...]:
    """The faults this server's logs show, decided by its id alone."""
    digest = hashlib.sha256(f"faults:{server_id}".encode()).digest()
    return tuple(kind for n, (kind, odds) in enumerate(_FAULT_ODDS.items()) if digest[n] % odds == 0)


_HOSTS = ("node", "compute", "storage", "db")
_LINES = (
    "systemd[1]: Started Session {n} of user root.",
    "systemd[1]: Starting Cleanup of Temporary Directories...",
    "sshd[{p}]: Accepted publickey for ops from 10.{a}.{b}.{c} port {port} ssh2",
    "kernel: [{t}.{u:06d}] ixgbe 0000:3b:00.{b}: eth{b}: NIC Link is Up 10 Gbps, Flow Control: RX/TX",
    "chronyd[{p}]: Selected source 10.{a}.0.{c}",
    "CRON[{p}]: (root) CMD (/usr/lib/sa/sa1 1 1)",
    "kubelet[{p}]: I1127 10:{mm:02d}:{ss:02d}.{u:06d} {p} kubelet.go:2{b}36] SyncLoop (PLEG): event for pod",
    "iBMC: sensor CPU{b} Temp reading {c} degrees C, within thresholds",
    "iBMC: fan FAN{b} speed {port} RPM",
    "rsyslogd: action 'action-1-builtin:omfwd' resumed (module 'builtin:omfwd')",
)


_DISTINCT_LINES = 2048  # lines drawn for a pool; the pool repeats them in a seeded order


@functools.lru_cache(maxsize=4)
def _text_pool(seed: int) -> tuple[bytes, tuple[int, ...]]:
    """About `POOL_BYTES` of plausible log lines (none with a fault's words), and where each
    line starts; one extra piece so any start below POOL_BYTES can be sliced a piece long.
    A few thousand lines are drawn and then repeated in a seeded order: a simulator answers
    its first download from inside its event loop, and the pool must be quick to make."""
    rng = random.Random(f"pool:{seed}")
    drawn: list[bytes] = []
    for _ in range(_DISTINCT_LINES):
        fields = {
            "n": rng.randrange(1, 99999),
            "p": rng.randrange(300, 65000),
            "a": rng.randrange(256),
            "b": rng.randrange(8),
            "c": rng.randrange(20, 90),
            "port": rng.randrange(1024, 65536),
            "t": rng.randrange(100000),
            "u": rng.randrange(1000000),
            "mm": rng.randrange(60),
            "ss": rng.randrange(60),
        }
        host = f"{rng.choice(_HOSTS)}-{rng.randrange(1000):03d}"
        line = f"Nov 27 10:{fields['mm']:02d}:{fields['ss']:02d} {host} {rng.choice(_LINES).format(**fields)}\n"
        drawn.append(line.encode())
    average = sum(map(len, drawn)) // len(drawn)
    lines = rng.choices(drawn, k=(POOL_BYTES + 2 * PIECE_BYTES) // average)
    starts: list[int] = []
    size = 0
    for piece in lines:
        if size < POOL_BYTES:
            starts.append(size)
        size += len(piece)
    return b"".join(lines), tuple(starts)


def _gzip(data: bytes, name: str = "") -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=out, compresslevel=6, mtime=MTIME) as file:
        file.write(data)
    return out.getvalue()


def _small_tar(files: list[tuple[str, bytes]]) -> bytes:
    parts = []
    for name, data in files:
        parts += [_tar_header(name, len(data)), data, bytes(-len(data) % TAR_BLOCK)]
    return b"".join([*parts, bytes(2 * TAR_BLOCK)])


@functools.lru_cache(maxsize=8192)
def nested_members(server_id: str, seed: int) -> tuple[tuple[str, bytes], ...]:
    """The compressed members of a server's archive (the rotated log, the BMC event logs),
    by their paths in it."""
    rng = random.Random(f"{seed}:{server_id}:nested")
    planted = {
        where: [line for kind in faults(server_id) for w, line in FAULT_LINES[kind] if w == where]
        for where in (ROTATED, EVENTS)
    }
    rotated = [
        f"Nov 26 23:59:{s:02d} {server_id} kernel: Linux version 5.10.0-136 (mockbuild) #1 SMP" for s in range(3)
    ]
    rotated += [f"Nov 26 23:59:{10 + n:02d} {server_id} {line}" for n, line in enumerate(planted[ROTATED])]
    rotated += [
        f"Nov 26 23:59:{30 + n:02d} {server_id} systemd[1]: Reached target Multi-User System."
        for n in range(rng.randrange(3, 8))
    ]
    sel = [f"SEL 0001 | 2026-11-27 09:00:00 | BMC | board serial {server_id} | event log start"]
    sel += [
        f"SEL {0x10 + n:04x} | 2026-11-27 09:{n:02d}:00 | System Boot | Initiated by power up | Asserted"
        for n in range(rng.randrange(2, 6))
    ]
    sel += planted[EVENTS]
    sensors = [f"CPU{n} Temp | {rng.randrange(30, 70)} degrees C | ok" for n in range(2)]
    events = _small_tar(
        [("sel/sel.log", "\n".join(sel).encode() + b"\n"), ("sel/sensors.txt", "\n".join(sensors).encode() + b"\n")]
    )
    return (
        (ROTATED, _gzip("\n".join(rotated).encode() + b"\n", "messages.1")),
        (EVENTS, _gzip(events, "bmc-events.tar")),
    )


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    """Everything that fixes an archive's bytes, computed without generating them."""

    server_id: str
    size: int  # bytes of the final .tar.gz
    seed: int
    members: tuple[tuple[str, int], ...]  # (path inside the tar, content length)
    tar_size: int
    comment_bytes: int  # gzip FCOMMENT field length including its NUL; 0 for none
    nested: bool = True  # with the compressed members (`nested_members`)
    hostile: str | None = None  # one of HOSTILE_CASES: the archive is `hostile_archive`'s

    @property
    def gzip_name(self) -> bytes:
        return f"{self.server_id}-dump.tar".encode()


def _stored_blocks(tar_size: int) -> int:
    return max(1, -(-tar_size // STORED_BLOCK))


def _gzip_overhead(name_len: int, tar_size: int) -> int:
    return _GZIP_FIXED + name_len + 1 + 5 * _stored_blocks(tar_size)


def plan_archive(server_id: str, size: int, seed: int, *, hostile: bool = False) -> ArchivePlan:
    """Lay out an archive of exactly `size` bytes for this server."""
    case = hostile_case(server_id) if hostile else None
    if case is not None and len(hostile_archive(server_id, seed, case, size)) == size:
        return ArchivePlan(server_id, size, seed, (), 0, 0, False, case)
    names = [f"{server_id}/{member}" for member in _MEMBERS]
    name_len = len(f"{server_id}-dump.tar".encode())
    # Overhead grows with the tar size, so the estimate from `size` is a floor; step up.
    tar_size = (size - _gzip_overhead(name_len, size)) // TAR_BLOCK * TAR_BLOCK
    while tar_size + TAR_BLOCK + _gzip_overhead(name_len, tar_size + TAR_BLOCK) <= size:
        tar_size += TAR_BLOCK
    if tar_size < TAR_BLOCK * (len(names) + 2):  # one header per member, two end-of-archive blocks
        raise ValueError(f"archive of {size} bytes is too small for {server_id}")
    blocks = tar_size // TAR_BLOCK - len(names) - 2
    nested_blocks = sum(1 + -(-len(data) // TAR_BLOCK) for _, data in nested_members(server_id, seed))
    nested = blocks >= 2 * nested_blocks + 8  # room for them and still some plain text
    if nested:
        blocks -= nested_blocks

    rng = random.Random(f"{seed}:{server_id}:layout")
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
        nested=nested,
    )


def _tar_header(name: str, length: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = length
    info.mtime = MTIME
    info.mode = 0o644
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _tar_pieces(plan: ArchivePlan) -> Iterator[bytes | memoryview]:
    data, starts = _text_pool(plan.seed)
    pool = memoryview(data)
    rng = random.Random(f"{plan.seed}:{plan.server_id}:content")
    nested = dict(nested_members(plan.server_id, plan.seed)) if plan.nested else {}
    after = {0: ROTATED, 1: EVENTS}  # a compressed member follows the plain one of its folder
    for index, (name, length) in enumerate(plan.members):
        yield _tar_header(name, length)
        head = f"# {name}: CloudDC simulator log bundle, seed {plan.seed}\n".encode()[:length]
        yield head
        remaining = length - len(head)
        while remaining:
            n = min(PIECE_BYTES, remaining)
            offset = starts[rng.randrange(len(starts))]
            yield pool[offset : offset + n]
            remaining -= n
        if length % TAR_BLOCK:
            yield bytes(TAR_BLOCK - length % TAR_BLOCK)
        content = nested.get(after.get(index, ""))
        if content is not None:
            yield _tar_header(f"{plan.server_id}/{after[index]}", len(content))
            yield content
            yield bytes(-len(content) % TAR_BLOCK)
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
    if plan.hostile is not None:
        data = hostile_archive(plan.server_id, plan.seed, plan.hostile, plan.size)
        for offset in range(0, len(data), chunk_bytes):
            yield data[offset : offset + chunk_bytes]
        return
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


def build_archive(server_id: str, size: int, seed: int, *, hostile: bool = False) -> bytes:
    """The whole archive in memory."""
    return b"".join(iter_archive(plan_archive(server_id, size, seed, hostile=hostile)))


# -- hostile archives ------------------------------------------------------------------------
#
# Whole gzip (a sweep checks only that), hostile inside. Each starts with a plain member
# holding ``hostile archive of {id}`` and the planted ``board serial {id}`` line, so a search
# still finds something in it before the hostile part.

HOSTILE_CASES = ("paths", "size-over", "size-under", "bomb", "long-line", "bad-text", "deep")
LONG_LINE = 1024**3  # bytes of the "long-line" case's line, without a newline
BOMB_BYTES = 8 * 1024**3  # zeros inside the "bomb" case's gzip in a gzip in a gzip
BAD_TEXT = (
    b"ERROR \x1b[31mred\x1b[0m \x1b]0;title\x07 invalid \xff\xfe\xc3\x28 bidi \xe2\x80\xae"
    b"desrever\xe2\x80\xac nul \x00 cr \r end\n"
)


def hostile_case(server_id: str) -> str | None:
    """Which hostile archive this server serves in hostile mode; None for a normal one. By the
    number the id ends with, so consecutive ids (the simulator's) take every case in turn."""
    digits = len(server_id) - len(server_id.rstrip("0123456789"))
    hashed = hashlib.sha256(f"hostile:{server_id}".encode()).digest()[0]
    pick = (int(server_id[-min(digits, 9) :]) if digits else hashed) % (len(HOSTILE_CASES) + 1)
    return HOSTILE_CASES[pick] if pick < len(HOSTILE_CASES) else None


def _raw_deflate(data: bytes, *, final: bool) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


_MIB = 1024 * 1024


@functools.lru_cache(maxsize=2)
def _repeated(byte: bytes, total: int) -> bytes:
    """Raw deflate blocks (not final) of `total` copies of `byte`, made of one flushed MiB
    repeated: after a full flush nothing refers back, so copies chain."""
    return _raw_deflate(byte * _MIB, final=False) * (total // _MIB)


@functools.lru_cache(maxsize=1)
def _long_prefix() -> tuple[bytes, int, int]:
    """The "long-line" case's first member, its header and its line, deflated; their CRC-32
    and length. Shared by every server: computing the CRC of a GiB takes a while."""
    header = _entry("long-line.log", size=LONG_LINE)[:TAR_BLOCK]
    crc = zlib.crc32(header)
    line = b"A" * _MIB
    for _ in range(LONG_LINE // _MIB):
        crc = zlib.crc32(line, crc)
    return _raw_deflate(header, final=False) + _repeated(b"A", LONG_LINE), crc, TAR_BLOCK + LONG_LINE


def _gzip_around(deflated: bytes, crc: int, size: int, name: bytes, pad_to: int = 0) -> bytes:
    flags = _FNAME | (_FCOMMENT if pad_to else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", MTIME) + b"\x00\x03" + name + b"\x00"
    body = deflated + struct.pack("<II", crc, size & 0xFFFFFFFF)
    if pad_to:
        room = pad_to - len(header) - len(body)
        if room < 1:
            return header + body  # too big for the size asked: the caller sees the length
        header += (b"padding " * (room // 8 + 1))[: room - 1] + b"\x00"
    return header + body


@functools.lru_cache(maxsize=1)
def _bomb() -> bytes:
    """A gzip of a gzip of a gzip of `BOMB_BYTES` zeros: a few KiB."""
    # Its CRC is not computed (a search gives up long before it would check it).
    blocks = _repeated(b"\x00", 16 * _MIB) * (BOMB_BYTES // (16 * _MIB))
    inner = _gzip_around(blocks + _raw_deflate(b"", final=True), 0, BOMB_BYTES, b"zeros")
    return _gzip(_gzip(inner, "zeros.gz.gz"), "zeros.gz.gz.gz")


def _entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "", size: int | None = None
) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    info.type = kind
    info.linkname = link
    info.mtime = MTIME
    info.mode = 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return header + data + bytes(-len(data) % TAR_BLOCK)


def _hostile_tar(server_id: str, case: str) -> bytes:
    """The tar of a hostile case, but for the "long-line" case's long member."""
    plain = (
        f"# hostile archive of {server_id}: {case}\n"
        f"SEL 0001 | 2026-11-27 09:00:00 | BMC | board serial {server_id} | event log start\n"
    ).encode()
    head = _entry(f"{server_id}/var/log/messages", plain)
    end = bytes(2 * TAR_BLOCK)
    if case == "paths":
        return (
            head
            + b"".join(
                [
                    _entry("/etc/collector-absolute.log", b"absolute path member ERROR\n"),
                    _entry("../../collector-escape.log", b"dot-dot member ERROR\n"),
                    _entry(f"{server_id}/link", kind=tarfile.SYMTYPE, link="/etc/passwd"),
                    _entry(f"{server_id}/hard", kind=tarfile.LNKTYPE, link="/etc/shadow"),
                    _entry(f"{server_id}/dev/tty9", kind=tarfile.CHRTYPE),
                    _entry(f"{server_id}/dev/sda9", kind=tarfile.BLKTYPE),
                    _entry(f"{server_id}/fifo", kind=tarfile.FIFOTYPE),
                    _entry(f"{server_id}/after-links.log", b"after the links ERROR\n"),
                ]
            )
            + end
        )
    if case == "size-over":  # says 1 GiB, holds a KiB, and the tar ends there
        return (
            head + _entry(f"{server_id}/liar.log", b"ERROR short\n" * 85, size=LONG_LINE)[: 2 * TAR_BLOCK + TAR_BLOCK]
        )
    if case == "size-under":  # says 16 bytes, holds 2 KiB: the rest is read as a header
        return head + _entry(f"{server_id}/liar.log", b"ERROR long member\n" * 120, size=16) + end
    if case == "bomb":
        return head + _entry(f"{server_id}/bmc/dump.gz", _bomb()) + end
    if case == "bad-text":
        return head + _entry(f"{server_id}/var/log/\x1b[2Jbad\u202e.log", BAD_TEXT) + end
    if case == "deep":  # zip > tar.gz > tar > gz > text: five containers
        inner = _gzip(b"deep ERROR marker\n", "sel.log")
        tar = _small_tar([("inner/sel.log.gz", inner)])
        targz = _gzip(_small_tar([("logs/inner.tar", tar)]), "logs.tar")
        buffer = io.BytesIO()
        import zipfile

        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            info = zipfile.ZipInfo("dump/logs.tar.gz", date_time=(2026, 11, 27, 10, 0, 0))
            archive.writestr(info, targz)
        return head + _entry(f"{server_id}/bmc/dump.zip", buffer.getvalue()) + end
    if case == "long-line":
        return head + end
    raise ValueError(f"no hostile case {case!r}")


@functools.lru_cache(maxsize=64)
def hostile_archive(server_id: str, seed: int, case: str, size: int) -> bytes:
    """The whole hostile archive, padded (by its gzip comment) to `size` bytes if it fits."""
    del seed  # the hostile cases are the same whatever the seed
    name = f"{server_id}-dump.tar".encode()
    if case != "long-line":
        tar = _hostile_tar(server_id, case)
        return _gzip_around(
            _raw_deflate(tar, final=False) + _raw_deflate(b"", final=True), zlib.crc32(tar), len(tar), name, size
        )
    # The long member comes first, so its compressed blocks and CRC are shared by every server.
    prefix, crc, length = _long_prefix()
    tail = _hostile_tar(server_id, case)
    deflated = prefix + _raw_deflate(tail, final=True)
    return _gzip_around(deflated, zlib.crc32(tail, crc), length + len(tail), name, size)


class ArchiveStore:
    """Serves archive bytes: small ones from a bounded LRU cache, large ones streamed."""

    def __init__(
        self,
        seed: int,
        *,
        hostile: bool = False,
        chunk_bytes: int = 256 * 1024,
        cache_bytes: int = 256 * 1024 * 1024,
        cacheable_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.seed = seed
        self.hostile = hostile
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
        data = build_archive(server_id, size, self.seed, hostile=self.hostile)
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
        plan = plan_archive(server_id, size, self.seed, hostile=self.hostile)
        for chunk in iter_archive(plan, self.chunk_bytes):
            end = position + len(chunk)
            if end > start and position < stop:
                yield memoryview(chunk)[max(start - position, 0) : min(stop, end) - position]
            if end >= stop:
                return
            position = end
