"""One server's outcome, as the report shows it: `ServerResult` and the transitions it goes through.

A result starts `pending` and moves only through its methods, each of which sets every field
its state needs: `collected` (by this run, or found from an earlier one), `failed` (an error,
or only its words when the exception is gone: a crash ledger's event, a rejected server), and
`pending` (left for the next run: the endpoint was given up, credentials were rejected, the
run stopped). The counters the pipeline keeps on the way (tries, exports asked for, the
export polled) have their own small methods. Nothing outside this module assigns a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collector.errors import CollectorError
from collector.sweep.events import Phase

if TYPE_CHECKING:
    from collector.sweep.polling import OwnTime


@dataclass(slots=True)  # one per server of the run: 100,000 in a large shard
class ServerResult:
    """One server's line in the report."""

    project_id: str
    server_id: str
    name: str | None
    state: str = Phase.PENDING.value  # collected | failed | pending (run stopped before it finished)
    file: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    export_id: str | None = None
    attempts: int = 0
    duration_s: float | None = None
    error: str | None = None
    error_kind: str | None = None  # the error's `kind`: "timeout", "http", "archive", ...
    status: int | None = None  # the HTTP status of the final error, if any
    error_code: str | None = None  # the API's error_code of the final error, if any
    request_id: str | None = None  # of the final error, for support
    exports: int = 0  # exports this run asked for (a POST retried after a timeout counts again)
    collected_earlier: bool = False  # collected by an earlier run into this folder
    reason: str | None = field(default=None, repr=False)  # short grouping key for the summary
    # What its export took, for the next run (`collector.run.learned`): not in the report.
    export_s: float | None = field(default=None, repr=False)
    export_exact: bool = field(default=False, repr=False)  # its percentages said it; else a bound

    # -- on the way ---------------------------------------------------------------------------

    def started(self) -> None:
        """This run's first try at the server."""
        self.attempts = 1

    def retried(self) -> None:
        self.attempts += 1

    def export_sent(self) -> None:
        self.exports += 1

    def polling(self, export_id: str | None) -> None:
        """The export this server waits for (asked for now, or by an earlier run)."""
        self.export_id = export_id

    def exported_in(self, took: OwnTime) -> None:
        self.export_s, self.export_exact = took

    def finished(self, duration_s: float) -> None:
        self.duration_s = round(duration_s, 3)

    # -- where it ends --------------------------------------------------------------------------

    def collected(
        self, file: str, size: int | None, sha256: str | None, *, earlier: bool = False, export_id: str | None = None
    ) -> None:
        """The archive is stored whole; `earlier`: by an earlier run, so this run tried nothing."""
        self.state = Phase.COLLECTED.value
        self.file, self.bytes, self.sha256 = file, size, sha256
        if export_id is not None:
            self.export_id = export_id
        if earlier:
            self.attempts, self.collected_earlier = 0, True

    def failed(self, exc: BaseException, reason: str | None) -> None:
        """This server failed with `exc`; `reason` groups it in the summary."""
        self.state = Phase.FAILED.value
        if isinstance(exc, CollectorError):
            self.error, self.error_kind = str(exc), exc.kind
        else:
            self.error, self.error_kind = f"internal error: {type(exc).__name__}: {exc}", "internal"
        self.reason = reason
        self.status = getattr(exc, "status", None)
        self.error_code = getattr(exc, "error_code", None)
        self.request_id = getattr(exc, "request_id", None)

    def failed_as(self, error: str | None, reason: str | None, *, kind: str | None = None) -> None:
        """Failed, known only by its words (the exception is gone, or there never was one)."""
        self.state = Phase.FAILED.value
        self.error, self.reason, self.error_kind = error, reason, kind

    def pending(self, reason: str, error: str, exc: CollectorError | None = None) -> None:
        """Not collected, and not this server's fault: left for the next run."""
        self.state = Phase.PENDING.value
        self.error, self.reason = error, reason
        if exc is not None:
            self.error_kind, self.status = exc.kind, getattr(exc, "status", None)

    def cut_off(self, deadline: str) -> None:
        """The deadline came first: pending (unless already done), for the next run to finish."""
        if self.state == Phase.PENDING.value and self.error is None:
            self.pending("deadline", f"not collected: the deadline ({deadline}) came first")

    def stopped(self, why: str) -> None:
        """The run stopped (`why`) before this server was done: pending, unless already told why."""
        if self.state == Phase.PENDING.value and self.error is None:
            self.pending(f"run stopped: {why}", f"not collected: run stopped ({why})")
