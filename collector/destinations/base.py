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


class PartialFile(Protocol):
    size: int

    async def write(self, chunks: list[bytes]) -> None: ...  # in order, after what came before
    async def truncate(self) -> None: ...
    async def commit(self) -> Archive: ...
    async def discard(self) -> None: ...
    def sha256(self) -> str: ...


class Destination(Protocol):
    async def open_partial(self, name: str) -> PartialFile: ...
    async def check(self, name: str, size: int, sha256: str | None) -> bool: ...
