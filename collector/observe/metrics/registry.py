"""`Metrics`: one run's Prometheus metrics, in a registry of their own, read at each scrape
(see the package's docstring for how the runner wires it)."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.errors import APIError, CollectorError
from collector.sweep.events import Phase, PhaseChanged

# Both ways out (the textfile, the push) log under this one name.
log = logging.getLogger("collector.metrics")

# What `request()` expects as `operation`: the three CloudDC calls, listing servers, and
# getting credentials (an IAM token).
OPERATIONS = ("export", "status", "download", "list", "auth")

LAST_SUCCESS = "collector_last_success_timestamp_seconds"


class _Stats(Protocol):
    """What `observe_stats` reads: `collector.clouddc.gateway.CallStats`."""

    retries: int
    throttled: int
    bytes_downloaded: int


class _Limiter(Protocol):
    """What `observe_limiters` reads: `collector.control.throttle.RateLimiter`."""

    rate: float


class Metrics:
    """One run's metrics, in a registry of their own (`registry`), read at each scrape.

    With `shard`, every sample carries a `shard` label, so the shards of one fleet can
    share a Pushgateway job or a node_exporter folder; without, no sample has one.
    """

    def __init__(self, *, shard: str | None = None, servers: int = 0) -> None:
        self.shard = shard or None
        self._label_names = ["shard"] if self.shard else []
        self._label_values = [self.shard] if self.shard else []
        self._phases: Counter[Phase] = Counter({Phase.PENDING: servers})
        self._requests: Counter[tuple[str, str]] = Counter()
        self._stats: list[_Stats] = []
        # The counters as last exposed: a counter never goes down, whatever its source does.
        self._held = {"retries": 0, "throttled": 0, "bytes_downloaded": 0}
        self._limiters: dict[str, _Limiter] = {}
        self._duration_s: float | None = None
        self._exit_code: int | None = None
        self._last_success: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- what the run tells us --------------------------------------------------------------

    def set_servers(self, total: int) -> None:
        """The fleet this run covers: `total` servers, pending until events move them."""
        moved = sum(count for phase, count in self._phases.items() if phase is not Phase.PENDING)
        self._phases[Phase.PENDING] = total - moved

    def on_event(self, event: PhaseChanged) -> None:
        """Listener for the sweep's `Events`: one server moved from `previous` to `phase`."""
        self._phases[event.previous] -= 1
        self._phases[event.phase] += 1

    def request(self, operation: str, code: int | str | BaseException) -> None:
        """Count one request sent: `code` is the HTTP status it got, or the error that stood
        for an answer (an `APIError` counts as its status, any other of ours as its `kind`)."""
        self._requests[operation, code_of(code)] += 1

    def observe_stats(self, stats: _Stats) -> None:
        """Follow `stats` (a `CallStats`): retries, 429s and bytes are read from it at every
        scrape. Several are summed. Exposed values never go down."""
        if not any(known is stats for known in self._stats):
            self._stats.append(stats)

    def observe_limiters(self, limiters: Mapping[str, _Limiter]) -> None:
        """Follow each endpoint's limiter: its `rate` is read at every scrape."""
        self._limiters.update(limiters)

    def carry_last_success(self, timestamp: float | None) -> None:
        """A success an earlier run recorded (if any): shown until this run succeeds, never
        renewed by it."""
        if timestamp is not None and math.isfinite(timestamp) and timestamp > 0:
            self._last_success = max(self._last_success or 0.0, timestamp)

    def finish(self, exit_code: int, duration_s: float, *, now: float | None = None) -> None:
        """The run is over: its exit code and duration, and the time of success if it exited 0."""
        self._exit_code = int(exit_code)
        self._duration_s = duration_s
        if exit_code == 0:
            self._last_success = time.time() if now is None else now

    def grouping(self) -> dict[str, str]:
        """The Pushgateway grouping key beyond the job: one group per shard."""
        return {"shard": self.shard} if self.shard else {}

    def text(self) -> bytes:
        """The text exposition format (0.0.4) of every metric now."""
        return generate_latest(self.registry)

    # -- what a scrape reads ------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's custom collector protocol: the families, built from now."""
        servers = self._gauge("collector_servers", "Servers of this run in each state.", "state")
        for phase in Phase:
            servers.add_metric([*self._label_values, phase.value], self._phases[phase])
        yield servers

        requests = self._counter(
            "collector_requests_total",
            "Requests sent, by operation and HTTP status or error kind.",
            "operation",
            "code",
        )
        for (operation, code), count in sorted(self._requests.items()):
            requests.add_metric([*self._label_values, operation, code], count)
        yield requests

        for key, value in self._stats_now().items():
            name, doc = _STATS_METRICS[key]
            counter = self._counter(name, doc)
            counter.add_metric(self._label_values, value)
            yield counter

        rates = self._gauge(
            "collector_rate_limit_per_second",
            "Requests per second each endpoint's rate limiter allows now.",
            "endpoint",
        )
        for endpoint, limiter in sorted(self._limiters.items()):
            rates.add_metric([*self._label_values, endpoint], limiter.rate)
        yield rates

        if self._exit_code is not None:
            yield self._single("collector_run_duration_seconds", "How long the last run took.", self._duration_s)
            yield self._single(
                "collector_exit_code", "The exit code of the last run (0: every server collected).", self._exit_code
            )
        if self._last_success is not None:
            # Absent until some run succeeded: a push (POST) then leaves the gateway's value be.
            yield self._single(
                LAST_SUCCESS, "When a run last exited 0, in seconds since the epoch.", self._last_success
            )

    def _stats_now(self) -> dict[str, int]:
        for key in self._held:
            now = sum(getattr(stats, key) for stats in self._stats)
            self._held[key] = max(self._held[key], now)
        return dict(self._held)

    def _gauge(self, name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*self._label_names, *labels])

    def _counter(self, name: str, doc: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=[*self._label_names, *labels])

    def _single(self, name: str, doc: str, value: float | None) -> GaugeMetricFamily:
        gauge = self._gauge(name, doc)
        gauge.add_metric(self._label_values, value if value is not None else math.nan)
        return gauge


_STATS_METRICS = {
    "retries": ("collector_retries_total", "Calls retried, after any failure (429, 5xx, timeout, ...)."),
    "throttled": ("collector_throttled_total", "Answers that asked us to slow down (429, or an overloaded API)."),
    "bytes_downloaded": ("collector_bytes_total", "Archive bytes downloaded."),
}


def code_of(outcome: int | str | BaseException) -> str:
    """The `code` label of a request: '200', '429', or an error's kind ('timeout', ...)."""
    if isinstance(outcome, APIError):
        return str(outcome.status)
    if isinstance(outcome, CollectorError):
        return outcome.kind
    if isinstance(outcome, BaseException):
        return "error"
    return str(outcome)


def describe(exc: BaseException) -> str:
    """What a `metrics_failed` line says about `exc`."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
