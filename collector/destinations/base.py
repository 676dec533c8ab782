"""What a destination is, to the code that writes archives into it: the protocols the
download streams through, and the archive's name. Local folders (`local.py`) and object
storage (`s3.py`) implement them; the download and the sweep use only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


def archive_name(project_id: str, server_id: str) -> str:
    """The archive's path relative to the output root. Always from our own ids, never the server's."""
    return f"{project_id}/{server_id}-dump.tar.gz"


@dataclass(frozen=True, slots=True)
class Archive:
    name: str  # relative to the destination root
    size: int
    sha256: str


WRITE_BATCH_BYTES = 1024 * 1024  # a destination's usual `PartialFile.batch`


class PartialFile(Protocol):
    size: int
    batch: int  # bytes the download gathers before each `write` (a file: one writev of this many)

    async def write(self, chunks: list[bytes]) -> None: ...  # in order, after what came before
    async def truncate(self) -> None: ...
    async def commit(self) -> Archive: ...
    async def discard(self) -> None: ...
    def sha256(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a destination vouches for about a stored archive: its size, and the sha256 we
    stamped on it (None if it carries none)."""

    name: str
    size: int
    sha256: str | None


class Destination(Protocol):
    async def open_partial(self, name: str) -> PartialFile: ...
    async def check(self, name: str, size: int, sha256: str | None) -> bool: ...

    async def stat(self, name: str) -> StoredObject | None:
        """The archive stored under `name` as the destination itself records it, or None if it
        holds no record of one (a local folder: its journal is the record). Asked by a run
        without a journal entry for the server, before it collects it."""
        ...

    async def write_document(self, name: str, data: bytes) -> None:
        """Store a small document (the report, encoded) under `name`, whole or not at all."""
        ...
