"""The run journal: what each server has reached, durable across kills, for resuming.

`OUT/.collector/journal.db` is SQLite in WAL mode with `synchronous=FULL`: once a write
returns, it survives a SIGKILL or a power cut. The sweep's events are the only input: the
journal is an events listener, so the pipeline does not know it exists. The export id is
written the moment the POST returns and before the first poll (the `polling` event carries
it, and `emit` waits for the listener), so a killed run never forgets an export it asked for.

Writes never block the event loop: one writer task takes every row waiting and commits them
together in a worker thread (group commit), so a thousand servers changing phase cost a few
fsyncs, not a thousand. A caller whose row must be durable (export id, final state) waits
until it is.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector.config.settings import JOURNAL_DIR
from collector.destinations.local import make_folders
from collector.errors import CollectorError
from collector.log import ev
from collector.sweep.events import Phase, PhaseChanged

log = logging.getLogger(__name__)

_Row = dict[str, object]  # the named parameters of `_UPSERT`
_Queued = tuple[_Row, anyio.Event | None]  # a row, and what its writer sets once it is durable

JOURNAL_NAME = "journal.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    project_id  TEXT NOT NULL,
    server_id   TEXT NOT NULL,
    phase       TEXT NOT NULL,
    export_id   TEXT,
    exports     INTEGER NOT NULL DEFAULT 0,   -- exports asked for, over all runs
    error       TEXT,
    bytes       INTEGER,
    sha256      TEXT,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (project_id, server_id)
) WITHOUT ROWID;
"""

# One statement for every event: the row becomes what the event says. An event without an
# export id keeps the one we had, except `exporting`, which is about to ask for a new one.
_UPSERT = """
INSERT INTO servers (project_id, server_id, phase, export_id, exports, error, bytes, sha256, updated_at)
VALUES (:project_id, :server_id, :phase, :export_id, :new_export, :error, :bytes, :sha256, :now)
ON CONFLICT (project_id, server_id) DO UPDATE SET
    phase = excluded.phase,
    export_id = CASE WHEN excluded.phase = 'exporting' THEN NULL
                     ELSE coalesce(excluded.export_id, servers.export_id) END,
    exports = servers.exports + excluded.exports,
    error = excluded.error,
    bytes = coalesce(excluded.bytes, CASE WHEN excluded.phase = 'collected' THEN servers.bytes END),
    sha256 = coalesce(excluded.sha256, CASE WHEN excluded.phase = 'collected' THEN servers.sha256 END),
    updated_at = excluded.updated_at
"""


# What a resume relies on: the export id (never ask twice), and how each server ended.
# `emit` waits until these are on disk; the other transitions are written, not waited for.
_MUST_BE_DURABLE = frozenset({Phase.POLLING, Phase.COLLECTED, Phase.FAILED})


class JournalError(CollectorError):
    """The journal cannot be opened or written (disk full, read-only, corrupt)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What an earlier run left for one server."""

    phase: Phase
    export_id: str | None
    exports: int
    error: str | None
    bytes: int | None
    sha256: str | None


class Journal:
    """Open with `Journal.open(out_dir)`; run `writer()` in a task; subscribe `record`."""

    GATHER = 0.02  # seconds a batch waits for more rows before it is committed

    def __init__(self, connection: sqlite3.Connection, path: Path, lock_fd: int) -> None:
        self._db = connection
        self.path = path
        self._lock_fd = lock_fd
        send, receive = anyio.create_memory_object_stream[_Queued](math.inf)
        self._send: MemoryObjectSendStream[_Queued] = send
        self._receive: MemoryObjectReceiveStream[_Queued] = receive
        self.failure: JournalError | None = None
        self._shut = False

    @classmethod
    def open(cls, out_dir: Path, *, fresh: bool = False, folder: Path | None = None) -> Journal:
        """The journal of the run into `out_dir`, in `OUT/.collector` (or `folder`: a shard's own)."""
        folder = Path(out_dir) / JOURNAL_DIR if folder is None else Path(folder)
        path = folder / JOURNAL_NAME
        try:
            make_folders(folder)
        except OSError as exc:
            raise JournalError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        lock_fd = _lock_folder(folder, out_dir)
        try:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns. We rely on it for export ids.
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
            if fresh:
                connection.execute("DELETE FROM servers")
        except (OSError, sqlite3.Error) as exc:
            os.close(lock_fd)
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        return cls(connection, path, lock_fd)

    def entries(self) -> dict[tuple[str, str], Entry]:
        """Everything earlier runs recorded, by (project_id, server_id)."""
        rows = self._db.execute(
            "SELECT project_id, server_id, phase, export_id, exports, error, bytes, sha256 FROM servers"
        )
        return {
            (project_id, server_id): Entry(Phase(phase), export_id, exports, error, size, sha256)
            for project_id, server_id, phase, export_id, exports, error, size, sha256 in rows
        }

    async def record(self, event: PhaseChanged) -> None:
        """Events listener: returns once the row is durable (or the journal has failed)."""
        if self.failure is not None:
            return
        row: _Row = {
            "project_id": event.project_id,
            "server_id": event.server_id,
            "phase": event.phase.value,
            "export_id": event.export_id,
            "new_export": 1 if event.phase is Phase.EXPORTING else 0,
            "error": event.error,
            "bytes": event.size,
            "sha256": event.sha256,
            "now": time.time(),
        }
        if event.phase not in _MUST_BE_DURABLE:
            self._send.send_nowait((row, None))  # written in order with the rest, not waited for
            return
        done = anyio.Event()
        self._send.send_nowait((row, done))
        await done.wait()

    async def writer(self) -> None:
        """Commit rows as they come, all waiting rows in one transaction. Ends after `close()`.

        After the first row of a batch it waits `GATHER` seconds for more: a few
        milliseconds more per transition, and a few dozen fsyncs a second instead of
        hundreds (each one a trip to a worker thread that competes for the GIL).
        """
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                await anyio.sleep(self.GATHER)
                while True:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(self._commit, [row for row, _ in batch])
                    except (OSError, sqlite3.Error) as exc:
                        self._fail(exc)
                    finally:
                        for _, done in batch:
                            if done is not None:
                                done.set()

    def _commit(self, rows: list[_Row]) -> None:
        with self._db:  # one transaction: BEGIN ... COMMIT, or ROLLBACK on error
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_UPSERT, rows)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = JournalError(f"cannot write the journal {self.path}: {exc}")
            log.error(
                "%s; the run goes on, but a re-run may repeat work",
                self.failure,
                extra=ev("journal_failed", error=str(self.failure), reason="journal not written"),
            )

    def close(self) -> None:
        """No more rows; the writer finishes what it has and returns."""
        self._send.close()

    def shutdown(self) -> None:
        """Close the database and let the folder go (after the writer has returned). Once."""
        if self._shut:
            return
        self._shut = True
        self._send.close()
        self._receive.close()
        self._db.close()
        os.close(self._lock_fd)


def _lock_folder(folder: Path, out_dir: Path) -> int:
    """Hold the output folder for this run: two runs into one folder would race for every
    `.part` file, and one could rename the other's half-written bytes into place."""
    lock_path = folder / "lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise JournalError(f"cannot create {lock_path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise JournalError(
            f"{out_dir} is in use by another collector run (pid {holder}); "
            "wait for it to finish, or choose another folder with -o"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def summarize(entries: Mapping[tuple[str, str], Entry]) -> str:
    phases: dict[str, int] = {}
    for entry in entries.values():
        phases[entry.phase.value] = phases.get(entry.phase.value, 0) + 1
    return ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()))
