"""Which faults exist, scripted faults per server, and seeded random faults.

Scripted faults are how tests make one server misbehave on cue::

    sim.script(sid, status=[None, "backwards"], download=["truncate", None])

Each list is a queue for that (operation, server): every request of that kind for that server
that gets past authentication and throttling takes the next item, None meaning "answer
normally". When a queue is empty the server behaves normally (random faults still apply).

An outage (`SimConfig.outage`) is a time window in which the gateway refuses every API call
with ``429`` and ``Retry-After: retry_after_seconds``, as an API whose budget is exhausted for
everyone does; its clock starts at the first API call, so a client's own start-up time does
not move it (`Outage`).

Random faults are decided by hashing (seed, operation, server, attempt number), not by a shared
random stream, so the same server's n-th request meets the same fault whatever order the
fleet's requests arrive in. The hostile catalogue (`collector.simulator.hostile`) adds its
entries to each operation's names here, and `hostile_fault` draws from them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable

from collector.simulator import hostile

EXPORT, STATUS, DOWNLOAD, LIST, STORAGE = "export", "status", "download", "list", "storage"

ANY_CALL = frozenset(
    {
        "500",
        "502",
        "503",
        "503-retry-after",
        "504",
        "429",
        "429-no-retry-after",
        "401",
        "403",
        "404",
        "reset",
        "redirect",
    }
)
STATUS_ONLY = frozenset({"backwards", "unknown", "failed"})
DOWNLOAD_ONLY = frozenset(
    {
        "truncate",
        "reset_mid",
        "chunked_cut",
        "no_length_eof",
        "not_gzip",
        "gzip_encoding",
        "stall",
        "evil_disposition",
        "redirect_storage",
        "oversize",
        "range_ignored",
        "range_wrong_offset",
        "damaged_short",
        "damaged_header",
        "damaged_trailing",
        "damaged_crc",
        "trickle",
        "archive_changed",
    }
)
FAULTS = {
    EXPORT: ANY_CALL | hostile.ANY_CALL | hostile.JSON_REPLIES,
    STATUS: ANY_CALL | STATUS_ONLY | hostile.ANY_CALL | hostile.JSON_REPLIES,
    DOWNLOAD: ANY_CALL | DOWNLOAD_ONLY | hostile.ANY_CALL | hostile.DOWNLOAD_ONLY,
}
# What `--hostile` draws from, per operation: the catalogue, and a reset before any header.
HOSTILE_MENU = {
    EXPORT: hostile.names(hostile.ANY_CALL, hostile.JSON_REPLIES, {"reset"}),
    STATUS: hostile.names(hostile.ANY_CALL, hostile.JSON_REPLIES, {"reset"}),
    DOWNLOAD: hostile.names(hostile.ANY_CALL, hostile.DOWNLOAD_ONLY, {"reset"}),
}


class FaultScript:
    """Queues of scripted faults, per (operation, server id)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], deque[str | None]] = {}

    def add(self, operation: str, server_id: str, faults: Iterable[str | None]) -> None:
        """Append `faults` to the queue. Raises ValueError for a fault the operation lacks."""
        faults = list(faults)
        allowed = FAULTS[operation]
        for fault in faults:
            if fault is not None and fault not in allowed:
                raise ValueError(f"{fault!r} is not a {operation} fault; choose from {sorted(allowed)}")
        if faults:
            self._queues.setdefault((operation, server_id), deque()).extend(faults)

    def add_next(self, operation: str, server_id: str, faults: Iterable[str | None]) -> None:
        """Queue `faults` ahead of anything already queued (a burst that must come at once)."""
        faults = list(faults)
        if faults:
            self._queues.setdefault((operation, server_id), deque()).extendleft(reversed(faults))

    def next(self, operation: str, server_id: str) -> str | None:
        """The fault for this request, consuming it; None for a normal answer."""
        if not self._queues:
            return None
        key = (operation, server_id)
        queue = self._queues.get(key)
        if queue is None:
            return None
        fault = queue.popleft()
        if not queue:
            del self._queues[key]
        return fault

    def pending(self, operation: str, server_id: str) -> list[str | None]:
        """What is still queued, for tests that check a script was used up."""
        return list(self._queues.get((operation, server_id), ()))


def chance(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) fixed by the seed and the key."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


def hostile_fault(seed: int, probability: float, operation: str, server_id: str, attempt: int) -> str | None:
    """The hostile entry this request meets under ``--hostile probability``, or None."""
    if chance(seed, "hostile", operation, server_id, attempt) >= probability:
        return None
    menu = HOSTILE_MENU[operation]
    return menu[int(chance(seed, "hostile-pick", operation, server_id, attempt) * len(menu))]


class Outage:
    """The window ``(after, seconds)`` of `SimConfig.outage`, counted from the first API call:
    while it lasts, every call is refused (the gateway answers ``429``)."""

    def __init__(self, window: tuple[float, float] | None) -> None:
        self.window = window
        self._first: float | None = None

    def active(self, now: float) -> bool:
        """Whether a call at clock time `now` falls in the outage (the first call starts its clock)."""
        if self.window is None:
            return False
        if self._first is None:
            self._first = now
        after, seconds = self.window
        return after <= now - self._first < after + seconds
