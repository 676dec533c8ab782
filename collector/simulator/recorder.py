"""What the simulator received, for tests to assert on and benchmarks to plot.

Recording is a few dict increments and a list append per request. Status 0 means the
simulator gave no answer at all (a scripted "reset"); a response cut short mid-body is
recorded with the status its headers carried.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from multidict import CIMultiDict


class SeenRequest(NamedTuple):
    """A request kept whole: the storage origin's, and every download's."""

    method: str
    path: str  # with the query string
    headers: CIMultiDict[str]  # case-insensitive: ``"x-auth-token" in r.headers``
    server_id: str | None


class Recorder:
    """Counters and logs of every request both origins answered."""

    def __init__(self) -> None:
        self.stats: Counter[tuple[str, int]] = Counter()  # (operation, status) -> requests
        # (operation, server id, status) -> requests; "" for requests without a server id
        self.by_server: Counter[tuple[str, str, int]] = Counter()
        self.exports_started: Counter[str] = Counter()  # server id -> exports started
        # fault name -> requests it was drawn for, scripted or random (a request that then
        # failed an earlier check, such as an unknown export id, still counts)
        self.faults: Counter[str] = Counter()
        self.timeline: list[tuple[float, str, int]] = []  # (seconds since start, operation, status)
        self.storage_requests: list[SeenRequest] = []
        self.download_requests: list[SeenRequest] = []

    def record(self, t: float, operation: str, status: int, server_id: str | None = None) -> None:
        self.stats[operation, status] += 1
        self.by_server[operation, server_id or "", status] += 1
        self.timeline.append((t, operation, status))

    def count(self, operation: str | None = None, status: int | None = None, server_id: str | None = None) -> int:
        """Requests matching every filter given: operation, status answered, server id."""

        def wanted(op: str, st: int) -> bool:
            return (operation is None or op == operation) and (status is None or st == status)

        if server_id is None:
            return sum(n for (op, st), n in self.stats.items() if wanted(op, st))
        return sum(n for (op, sid, st), n in self.by_server.items() if sid == server_id and wanted(op, st))

    def calls(self) -> Counter[tuple[str, str]]:
        """Requests by (operation, server id), whatever their answer."""
        calls: Counter[tuple[str, str]] = Counter()
        for (operation, server_id, _), n in self.by_server.items():
            calls[operation, server_id] += n
        return calls

    def clear(self) -> None:
        """Forget everything recorded so far (the fleet and its exports stay)."""
        self.stats.clear()
        self.by_server.clear()
        self.exports_started.clear()
        self.faults.clear()
        self.timeline.clear()
        self.storage_requests.clear()
        self.download_requests.clear()
