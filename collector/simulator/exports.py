"""Export tasks: their lifecycle on the event loop's clock, and the book that holds them.

An export runs for its server's `export_seconds`, reporting ``floor(elapsed / duration * 100)``
capped at 99, then ends completed (100) or, for a failing server, failed. A stuck server's
export reports one percentage forever. Ids are global, incrementing, and strings.

The book also answers "how many exports are running?" in O(log n), for the concurrent-export
cap, by keeping running exports in a heap keyed by when they end.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from collector.simulator.fleet import ServerProfile

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


@dataclass(slots=True)
class Export:
    export_id: str
    server: ServerProfile
    started: float
    ends: float  # math.inf for a stuck server
    fails: bool
    created_at: str
    fail_percentage: int
    last_percentage: int = -1  # the percentage last reported to a client

    def phase(self, now: float) -> tuple[str, int]:
        """The export's state and percentage at `now`."""
        if now >= self.ends:
            return (FAILED, self.fail_percentage) if self.fails else (COMPLETED, 100)
        stuck = self.server.stuck_percentage
        if stuck is not None:
            return RUNNING, stuck
        duration = self.ends - self.started
        return RUNNING, min(99, math.floor((now - self.started) / duration * 100))


class ExportBook:
    """Every export the simulator started, by id, with TTL expiry and a running count."""

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = ttl
        self._exports: dict[str, Export] = {}
        self._last_id = 0
        # (ends, id, export) of running exports that will end; the id breaks ties.
        self._ending: list[tuple[float, int, Export]] = []
        self._running = 0

    def start(self, server: ServerProfile, now: float, created_at: str) -> Export:
        self._last_id += 1
        export_id = str(self._last_id)
        stuck = server.stuck_percentage is not None
        export = Export(
            export_id=export_id,
            server=server,
            started=now,
            ends=math.inf if stuck else now + server.export_seconds,
            fails=server.failing,
            created_at=created_at,
            fail_percentage=server.fail_percentage,
        )
        self._exports[export_id] = export
        self._running += 1
        if not stuck:
            heapq.heappush(self._ending, (export.ends, self._last_id, export))
        return export

    def get(self, export_id: str, server_id: str, now: float) -> Export | None:
        """The export, or None if unknown, another server's, or finished longer than the TTL ago."""
        export = self._exports.get(export_id)
        if export is None or export.server.id != server_id:
            return None
        if self.ttl is not None and now - export.ends > self.ttl:
            del self._exports[export_id]
            return None
        return export

    def fail(self, export: Export, now: float) -> None:
        """End a running export as failed now (a scripted failure)."""
        state, percentage = export.phase(now)
        if state != RUNNING:
            return
        export.ends = now
        export.fails = True
        export.fail_percentage = percentage
        self._running -= 1

    def running(self, now: float) -> int:
        self._settle(now)
        return self._running

    def next_end(self, now: float) -> float | None:
        """When the next running export ends, if any will."""
        self._settle(now)
        return self._ending[0][0] if self._ending else None

    def _settle(self, now: float) -> None:
        while self._ending and self._ending[0][0] <= now:
            ends, _, export = heapq.heappop(self._ending)
            # A scripted failure already counted this export out, and moved its end.
            if export.ends == ends:
                self._running -= 1
