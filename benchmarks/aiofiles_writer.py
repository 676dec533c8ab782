"""`collector run` with its archives written through aiofiles: the writer we measure against.

The project was asked to use aiofiles; `collector.destinations.local.LocalPartial` writes with its own
worker-thread calls instead. This is the aiofiles way of doing the same job, as plainly as
aiofiles allows, so the two can be measured on the same transfers
(``benchmarks/download.py --writer aiofiles``):

- the `.part` is opened through ``aiofiles.open`` (O_EXCL|O_NOFOLLOW, 0600, as ours) on the
  first batch; each batch is one ``writelines`` (one worker-thread trip; aiofiles has no
  ``writev``, so the file object writes chunk by chunk in that thread);
- the hash is computed in the event loop, as ours is;
- the commit flushes, fsyncs, renames and fsyncs the folder, each through aiofiles' thread pool.

What it cannot do like ours: keep a write in flight while the loop receives the next batch
(every aiofiles call is awaited), start writeback as it goes (no ``posix_fadvise``), or group
the commits of many archives into one thread trip and one folder fsync.

Run as ``python benchmarks/aiofiles_writer.py run -i INVENTORY -o OUT ...``: the arguments of
``collector``, with the run's destination (`collector.run.runner`'s) replaced.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

try:
    import aiofiles
    import aiofiles.os
except ImportError:  # a benchmark-only dependency
    sys.exit("aiofiles_writer.py: aiofiles is not installed (pip install aiofiles)")

from collector.cli import main as cli
from collector.destinations.base import WRITE_BATCH_BYTES, Archive
from collector.destinations.local import LocalDestination, fsync_folder
from collector.run import runner

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_fsync = aiofiles.os.wrap(os.fsync)


_fsync_folder_async = aiofiles.os.wrap(fsync_folder)


def _open_part(path: str, _flags: int) -> int:
    return os.open(path, _CREATE, 0o600)


class AiofilesPartial:
    """The `PartialFile` of `collector.transfer.download`, written through aiofiles."""

    batch = WRITE_BATCH_BYTES

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.final = root / name
        self.part = self.final.with_name(self.final.name + ".part")
        self.size = 0
        self._hash = hashlib.sha256()
        self._file = None

    async def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)
        if self._file is None:
            await aiofiles.os.makedirs(self.final.parent, mode=0o700, exist_ok=True)
            try:
                await aiofiles.os.unlink(self.part)  # a stale one from a killed run
            except FileNotFoundError:
                pass
            self._file = await aiofiles.open(self.part, "wb", buffering=0, opener=_open_part)
        await self._file.writelines(chunks)
        self.size += sum(map(len, chunks))

    async def truncate(self) -> None:
        await self._close()
        self.size = 0
        self._hash = hashlib.sha256()

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self) -> Archive:
        if self._file is None:
            await self.write([])
        file, self._file = self._file, None
        try:
            await _fsync(file.fileno())
        finally:
            await file.close()
        await aiofiles.os.replace(self.part, self.final)
        await _fsync_folder_async(self.final.parent)
        return Archive(self.name, self.size, self.sha256())

    async def discard(self) -> None:
        await self._close()
        try:
            await aiofiles.os.unlink(self.part)
        except FileNotFoundError:
            pass

    async def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await file.close()


class AiofilesDestination(LocalDestination):
    """`LocalDestination` (its `check` too) with archives written by `AiofilesPartial`."""

    async def open_partial(self, name: str) -> AiofilesPartial:
        return AiofilesPartial(self.root, name)


if __name__ == "__main__":
    runner.LocalDestination = AiofilesDestination  # the runner builds the run's destination
    sys.exit(cli.main(sys.argv[1:]))
