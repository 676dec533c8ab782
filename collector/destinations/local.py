"""Archives on a local disk: written beside their final name, made durable, renamed into place.

`LocalDestination` is the `Destination` a run writes to: `ROOT/<project_id>/<server_id>-dump.tar.gz`.
Each archive grows as `<name>.part` (created with O_EXCL|O_NOFOLLOW, mode 0600) and is
published by fsync, rename, and an fsync of its folder, so a crash leaves either the whole
archive or no archive under the final name.

Where the time goes, and what is done about it:

- Most log bundles arrive as one batch of chunks: nothing touches the disk until `commit`,
  which creates, writes, fsyncs and renames the file in one go.
- Larger ones stream: a worker thread writes each batch, chunk by chunk, while the event
  loop hashes it and reads the next (one write in flight). Hashing in the writer thread
  instead made the writer the bottleneck (one 2 GiB archive: 5.3-6.1 s against 3.6-4.2 s).
  One `writev` per batch and `posix_fadvise` writeback hints were dropped when they no
  longer paid (``benchmarks/download.py``, issue 8): on ext4 a `writev` of several buffers
  cost several times the system time of one `write` per buffer, and the hints bought
  nothing measurable.
- Commits are grouped (`_GroupCommit`): one worker-thread trip per batch of archives and one
  fsync per folder per batch, instead of a trip and two fsyncs per archive. Each system call
  in a worker thread hands the GIL back and forth with the busy event loop; per archive that
  handover and the journal commits of ext4 cost more than the transfer itself.

The write in flight and the commit leader are tasks of the destination's own task group,
open while it is used as ``async with LocalDestination(root) as destination`` (the runner
does). Used without the block, a destination does the same work in its caller's task: each
batch written before the next is taken, each archive committed alone.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from collector.destinations import jobs
from collector.destinations.base import WRITE_BATCH_BYTES, Archive, StoredObject
from collector.destinations.jobs import Job

READ_CHUNK = 1024 * 1024  # rereading an archive to check its sha256
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class LocalDestination:
    """Archives under a local folder: `ROOT/<project_id>/<server_id>-dump.tar.gz`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tasks: TaskGroup | None = None
        self._commits = _GroupCommit()

    async def __aenter__(self) -> LocalDestination:
        self._tasks = self._commits.tasks = await jobs.open_group()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks, self._tasks, self._commits.tasks = self._tasks, None, None
        if tasks is not None:
            await jobs.close_group(tasks, failed=exc is not None)

    async def open_partial(self, name: str) -> LocalPartial:
        return LocalPartial(self.root, name, self._commits, self._tasks)

    async def check(self, name: str, size: int, sha256: str | None) -> bool:
        """Is the archive there with this size (and, if given, this sha256)?"""
        return await anyio.to_thread.run_sync(_check_file, self.root / name, size, sha256)

    async def stat(self, name: str) -> StoredObject | None:
        """None: a local file carries no sha256 of ours; the journal beside it is the record."""
        return None

    async def write_document(self, name: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(write_atomically, self.root / name, data)


class LocalPartial:
    """One archive on its way to `ROOT/name`: see the module's docstring."""

    batch = WRITE_BATCH_BYTES

    def __init__(
        self, root: Path, name: str, commits: _GroupCommit | None = None, tasks: TaskGroup | None = None
    ) -> None:
        self.name = name
        self.final = root / name
        self.part = self.final.with_name(self.final.name + ".part")
        self.size = 0
        self._commits = commits or _GroupCommit()
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        self._first: list[bytes] | None = None  # the first chunks, while the file does not exist yet
        self._tasks = tasks  # where a write runs while the next batch arrives (None: inline)
        self._writing: Job | None = None  # the write in flight

    # -- in the event loop -------------------------------------------------------------------

    async def write(self, chunks: list[bytes]) -> None:
        """Write these chunks, in order, after what was written before. Takes over the list."""
        for chunk in chunks:
            self._hash.update(chunk)
        size = sum(map(len, chunks))
        if self._fd is None:
            if self._first is None and not self.size:
                self._first = chunks
                self.size += size
                return
            self._fd = await anyio.to_thread.run_sync(self._create_fd)
            if self._first:
                first, self._first = self._first, None
                await self._start_write(self._fd, first)
        await self._settle()
        await self._start_write(self._fd, chunks)
        self.size += size

    async def truncate(self) -> None:
        """Start again from zero."""
        await self._close()
        self._first = None
        self.size = 0
        self._hash = hashlib.sha256()

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self) -> Archive:
        """Make the archive durable under its final name. Not cancellable once begun."""
        if self._fd is None:
            first, self._first = self._first or [], None
            await self._commits.run(lambda: self._store_whole(first))
        else:
            await self._settle()
            fd, self._fd = self._fd, None  # the commit closes it
            await self._commits.run(lambda: self._finish(fd))
        return Archive(self.name, self.size, self.sha256())

    async def discard(self) -> None:
        self._first = None
        with suppress(OSError):  # the write in flight may have failed too (a full disk); remove it anyway
            await self._close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_unlink_quietly, self.part)

    async def _start_write(self, fd: int, chunks: list[bytes]) -> None:
        """Write `chunks` in a worker thread: as a task that the next `_settle` waits for, so
        the event loop receives the next batch meanwhile; without a task group, now."""
        if self._tasks is None:
            await anyio.to_thread.run_sync(write_all, fd, chunks)  # waits for the thread, cancelled or not
        else:
            self._writing = jobs.start(self._tasks, lambda: anyio.to_thread.run_sync(write_all, fd, chunks))

    async def _settle(self) -> None:
        """Wait for the write in flight and raise its error."""
        if self._writing is not None:
            # A cancelled caller leaves the write running: `_close` waits for it.
            await self._writing.result()
            self._writing = None

    async def _close(self) -> None:
        """Close the file once no thread writes to it any more (else its number could be reused)."""
        if self._fd is None:
            return
        fd, writing = self._fd, self._writing
        self._fd = self._writing = None
        if writing is not None:
            await writing.finished()  # an error there is this file's, now unwanted
        os.close(fd)

    # -- in a worker thread ------------------------------------------------------------------

    def _create_fd(self) -> int:
        """Create the `.part` afresh and return a descriptor to write it."""
        try:
            return os.open(self.part, _CREATE, 0o600)
        except FileNotFoundError:
            make_folders(self.final.parent)
        except FileExistsError:
            _unlink_quietly(self.part)  # left by a killed run, or a planted symlink: removed, never followed
        return os.open(self.part, _CREATE, 0o600)

    def _store_whole(self, chunks: list[bytes]) -> Path:
        """Create, write, fsync and rename; returns the folder whose fsync makes it durable."""
        fd = self._create_fd()
        try:
            write_all(fd, chunks)
        except BaseException:
            os.close(fd)
            raise
        return self._finish(fd)

    def _finish(self, fd: int) -> Path:
        """fsync and close `fd`, rename the `.part` into place; returns the folder to fsync."""
        return publish(fd, self.part, self.final)


class _GroupCommit:
    """Commits archives in batches: one worker-thread trip and one fsync per folder per batch.

    Group commit, as databases do for their logs: a leader, a task of `tasks`, takes the
    waiting commits to a worker thread, then the ones that arrived meanwhile, until none wait.
    The leader is a task of its own, so no caller's cancellation can strand the others'
    outcomes; and a caller waits for its own step even when cancelled, so it never races a
    thread that is renaming its file (the cancellation lands once the step is done). Without
    `tasks` (a destination used outside its `async with`), each caller commits alone.
    """

    def __init__(self, tasks: TaskGroup | None = None) -> None:
        self.tasks = tasks
        self._waiting: list[tuple[Callable[[], Path], Job]] = []
        self._leading = False

    async def run(self, step: Callable[[], Path]) -> None:
        """Run `step` (in a worker thread; it returns the folder to fsync) as part of a batch."""
        if self.tasks is None:
            [error] = await anyio.to_thread.run_sync(_commit_batch, [step])  # waits for the thread, cancelled or not
            if error is not None:
                raise error
            return
        done = Job()
        self._waiting.append((step, done))
        if not self._leading:
            self._leading = True
            self.tasks.start_soon(self._lead)
        await done.result_through_cancellation()

    async def _lead(self) -> None:
        batch: list[tuple[Callable[[], Path], Job]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                outcomes = await anyio.to_thread.run_sync(_commit_batch, [step for step, _ in batch])
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    done.settle(outcome)
                batch = []
        except BaseException as exc:  # the destination is being torn down under us
            for _, done in [*batch, *self._waiting]:
                done.settle(exc)
            self._waiting = []
            raise
        finally:
            self._leading = False


def _commit_batch(steps: list[Callable[[], Path]]) -> list[BaseException | None]:
    """Run each step, then fsync each folder they renamed into once. One outcome per step."""
    outcomes: list[BaseException | None] = []
    folders: dict[Path, list[int]] = {}
    for index, step in enumerate(steps):
        try:
            folders.setdefault(step(), []).append(index)
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - it belongs to that step's caller
            outcomes.append(exc)
    for folder, indices in folders.items():
        try:
            fsync_folder(folder)
        except OSError as exc:
            for index in indices:
                outcomes[index] = exc
    return outcomes


# -- the one atomic write ----------------------------------------------------------------------
#
# Every file the collector publishes whole goes through `publish` and `fsync_folder`: the
# archives here (their folder fsyncs batched by `_GroupCommit`), and through `write_atomically`
# the report (`collector.observe.report`) and the metrics textfile (`collector.observe.metrics`).


def make_folders(folder: Path) -> None:
    """Create `folder` and every missing parent, each 0700 whatever the umask: `Path.mkdir`'s
    `parents=True` makes the parents with the umask's mode (0777 under `umask 0`), and a
    folder of log bundles, or one on the way to it, is nobody else's to list."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            if not level.is_dir():
                raise
            continue
        os.chmod(level, 0o700)  # mkdir masks its mode with the umask: one that takes the owner's bits would lock us out


def write_atomically(path: Path, data: bytes | Iterable[bytes], *, mode: int = 0o600) -> None:
    """`data` under `path`, all or nothing, durable: a reader sees the old file or the new one.

    `data` is the bytes, or chunks of them written as they come (a large file need not be
    whole in memory first).

    Written to a hidden temporary file in the same folder (`.NAME.XXXXXX.tmp`, created with
    O_EXCL), fsynced, renamed over `path`, and the folder fsynced so the rename survives a
    crash (where the file system allows: some cannot fsync a folder, and the file is in place).
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            if mode != 0o600:  # mkstemp's own
                os.fchmod(fd, mode)
            write_all(fd, [data] if isinstance(data, bytes) else data)
        except BaseException:
            os.close(fd)
            raise
        publish(fd, Path(temporary), path)
    except BaseException:
        _unlink_quietly(Path(temporary))
        raise
    with suppress(OSError):
        fsync_folder(path.parent)


def publish(fd: int, temporary: Path, final: Path) -> Path:
    """fsync and close `fd` (open on `temporary`), rename it to `final`; returns the folder
    whose fsync (`fsync_folder`) makes the rename durable.

    os.replace swaps the name atomically, and replaces a symlink at the final path rather
    than following it.
    """
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    return final.parent


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, chunks: Iterable[bytes]) -> None:
    """Write the chunks in order, one `write` each; after a short write, the rest of that chunk."""
    for chunk in chunks:
        written = os.write(fd, chunk)
        if written < len(chunk):
            view = memoryview(chunk)[written:]
            while view:
                view = view[os.write(fd, view) :]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _check_file(path: Path, size: int, sha256: str | None) -> bool:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
            return False
    except OSError:
        return False
    if sha256 is None:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == sha256
