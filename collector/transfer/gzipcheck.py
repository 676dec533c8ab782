"""Is this whole gzip? Decided while the bytes stream, in constant memory.

A matching Content-Length says the transfer is complete, not that the server sent a whole
archive: a truncated file, an HTML page behind two magic bytes, or an archive followed by
junk all arrive with the right length. `GzipCheck` inflates every byte as it is fed and
throws the output away, then asks at the end what zlib knows:

- the deflate stream reached its end (`eof`), so nothing was cut off;
- the trailer's CRC-32 and ISIZE match the data (zlib checks them at that end);
- nothing follows but further gzip members. gzip allows several members in one file (RFC
  1952 §2.2, `cat a.gz b.gz`); tar.gz from real systems has one, but accepting several costs
  nothing. Anything else after the end is damage.

Output per call is bounded (`OUTPUT_BYTES`), so a gzip bomb costs time, not memory.

`collector.transfer.download` feeds it in the event loop. zlib lets go of the GIL while it inflates,
so a worker thread (one batch in flight) was tried, and measured no faster, on the
simulator's archives (``benchmarks/download.py``: stored deflate blocks, inflated at several
GB/s) nor on compressed ones over loopback, single and 16 at a time (issue 8): with two cores,
the thread competes with the event loop and the sender for the same CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from collector.errors import ArchiveDamaged

if TYPE_CHECKING:
    from zlib import _Decompress  # typeshed's name; at run time the class is zlib.Decompress

GZIP_MAGIC = b"\x1f\x8b"
OUTPUT_BYTES = 256 * 1024  # inflated bytes held at once, whatever the compression ratio

_ZLIB_SAYS = {
    "incorrect data check": "its CRC-32 does not match its data",
    "incorrect length check": "its length field (ISIZE) does not match its data",
    "incorrect header check": "bad gzip header",
    "unknown compression method": "bad gzip header (unknown compression method)",
    "unknown header flags set": "bad gzip header (unknown flags)",
}


def _new_member() -> _Decompress:
    return zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)


class GzipCheck:
    """Feed it every byte of the file in order; `finish` says whether they were whole gzip.

    Raises `ArchiveDamaged` as soon as the bytes cannot be gzip, and from `finish` when the
    stream stopped short. `fed` counts the bytes fed, so a resumed transfer can check that
    the checker saw exactly the bytes on disk.
    """

    def __init__(self) -> None:
        self.fed = 0
        self.members = 0
        self._inflate: _Decompress | None = _new_member()
        self._between = b""  # bytes after a member's end, until there are enough to judge

    def feed(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        start = self.fed
        self.fed += len(data)
        while data:
            if self._inflate is None:
                # After a member: another member may follow, nothing else may.
                data = self._between + data
                if len(data) < len(GZIP_MAGIC):
                    self._between = data
                    return
                if not data.startswith(GZIP_MAGIC):
                    at = self.fed - len(data)
                    raise ArchiveDamaged(f"{len(data)} or more bytes that are not gzip follow its end at byte {at}")
                self._between = b""
                self._inflate = _new_member()
            before = len(data)
            try:
                out = self._inflate.decompress(data, OUTPUT_BYTES)
            except zlib.error as exc:
                raise ArchiveDamaged(f"{_explain(exc)}, within bytes {start}-{self.fed}") from exc
            if self._inflate.eof:
                self.members += 1
                data = self._inflate.unused_data
                self._inflate = None
            else:
                data = self._inflate.unconsumed_tail
                if not out and len(data) == before:  # zlib made no progress: never spin on it
                    raise ArchiveDamaged(f"gzip stream stopped making progress at byte {self.fed - len(data)}")

    @property
    def complete(self) -> bool:
        """The bytes so far end exactly where a gzip member ends."""
        return self._inflate is None and not self._between

    def finish(self) -> None:
        """Raise `ArchiveDamaged` unless the bytes fed were one or more whole gzip members."""
        if self._between:
            raise ArchiveDamaged(f"{len(self._between)} byte(s) that are not gzip follow its end")
        if self._inflate is not None:
            raise ArchiveDamaged(f"the gzip stream stops before its end (truncated after {self.fed} bytes)")


def _explain(exc: zlib.error) -> str:
    message = str(exc).partition(": ")[2] or str(exc)
    return _ZLIB_SAYS.get(message, f"not valid gzip ({message})")
