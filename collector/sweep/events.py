"""Progress events: what the sweep says happened, for whoever listens.

The sweep emits one `PhaseChanged` per step of each server and nothing else; the live
display, the log lines, the journal and (later) metrics subscribe. A listener may be a plain
function or a coroutine function; the sweep awaits `emit`, so a listener that must be
durable (the journal) is done before the sweep moves on.
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    PENDING = "pending"
    EXPORTING = "exporting"
    POLLING = "polling"
    DOWNLOADING = "downloading"
    COLLECTED = "collected"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.COLLECTED, Phase.FAILED)


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    project_id: str
    server_id: str
    phase: Phase
    previous: Phase
    export_id: str | None = None
    error: str | None = None  # the full message, for a failed server
    size: int | None = None
    sha256: str | None = None
    ts: float = field(default_factory=time.time)  # wall clock, for logs and metrics
    endpoint: str | None = None
    attempt: int = 0  # attempts so far for this server (1 + retries)
    reason: str | None = None  # why it failed or stopped: a short grouping key


Listener = Callable[[PhaseChanged], Awaitable[None] | None]


class Events:
    """Listeners of the sweep. A listener's exception never reaches the pipeline: it is logged
    (with its traceback the first time) and the other listeners still hear the event."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._broken: set[int] = set()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def emit(self, event: PhaseChanged) -> None:
        for listener in self._listeners:
            try:
                outcome = listener(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                first = id(listener) not in self._broken
                self._broken.add(id(listener))
                log.error(
                    "internal error in event listener %s: %s: %s",
                    getattr(listener, "__qualname__", type(listener).__name__),
                    type(exc).__name__,
                    exc,
                    exc_info=first,
                    extra={"event": "internal_error", "fields": {"error": f"{type(exc).__name__}: {exc}"}},
                )


class Waits:
    """Servers waiting out a `Retry-After`, for the display to say what the run waits for.

    The sweep notes each wait as its retry begins; the display reads those not yet over. A
    wait needs no clearing: it is over when its time is.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[tuple[str, str], tuple[float, float, float]] = {}

    def note(self, key: tuple[str, str], seconds: float, asked: float) -> None:
        """Server `key` waits `seconds` because the API asked for `asked` seconds."""
        self._until[key] = (self._clock() + seconds, time.time() + seconds, asked)

    def current(self) -> list[tuple[float, float]]:
        """(the wall-clock time it ends, the seconds asked) of each wait not over yet."""
        now = self._clock()
        over = [key for key, (until, _, _) in self._until.items() if until <= now]
        for key in over:
            del self._until[key]
        return [(wall, asked) for _, wall, asked in self._until.values()]
