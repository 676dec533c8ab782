"""Prometheus metrics of a run, for the runs nobody watches: the nightly job, the CronJob.

A `Metrics` holds what one run would tell a monitoring system: servers per state, requests
per operation and outcome, retries, 429s, bytes, what each endpoint's rate limiter allows,
and at the end the run's duration, exit code and, if it exited 0, when it succeeded. It has
its own `CollectorRegistry` (never prometheus_client's global one) and is read, not pushed
into: each scrape asks it for its current values, so the sweep's hot path adds to plain
counters and nothing else. Two ways out, both used at the end of a run, never in its way:

- `write_textfile_every`: the text format, atomically, into a file for node_exporter's
  textfile collector (`--metrics-file`), every 10 s and once more at the end;
- `push`: once, at the end, to a Pushgateway (`--pushgateway`).

Neither can fail a run: a write or push that fails is logged (event `metrics_failed`) and
the run's exit code stays what the run decided.

Wiring, for the runner::

    metrics = Metrics(shard=...)                       # before the inventory loads: exit 2 counts too
    metrics.set_servers(inventory.server_count)        # all pending, until events say otherwise
    sweep.events.subscribe(metrics.on_event)           # a plain function listener
    metrics.observe_stats(sweep.stats)                 # retries, 429s, bytes: read at each scrape
    metrics.observe_limiters({c.endpoint: c.limiter for c in sweep.clients.values()})
    tasks.start_soon(write_textfile_every, path, metrics)
    ...                                                # CloudDC calls metrics.request(...) per request
    metrics.finish(exit_code, duration_s)              # then cancel the writer: its last write has it
    await push(url, metrics, job=job)                  # outside any cancelled scope

`metrics.request(operation, code)` is the one call the API client makes: once per request
sent, with `operation` one of `OPERATIONS` and `code` the answer's HTTP status, or the error
that stood for an answer (its `kind` for a transport failure: "timeout", "refused", ...).

A run that does not exit 0 keeps the last success an earlier run recorded (the textfile's
previous value; the Pushgateway's, because we push with POST): otherwise every failed run
would erase it, and "no success in 26 h" would go quiet exactly when it should fire.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import aiohttp
import anyio
import anyio.to_thread
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from collector.errors import APIError, CollectorError, UsageError
from collector.log import ev
from collector.sweep.events import Phase, PhaseChanged

log = logging.getLogger("collector.metrics")

Sleep = Callable[[float], Awaitable[None]]

# What `request()` expects as `operation`: the three CloudDC calls, listing servers, and
# getting credentials (an IAM token).
OPERATIONS = ("export", "status", "download", "list", "auth")

TEXTFILE_INTERVAL = 10.0  # seconds between writes of --metrics-file
FINAL_WRITE_TIMEOUT = 10.0  # seconds the last write may take once the run is over
PUSH_TIMEOUT = 10.0
_PREVIOUS_FILE_LIMIT = 1024 * 1024  # bytes of an earlier metrics file we read; ours are a few KiB
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

_LAST_SUCCESS = "collector_last_success_timestamp_seconds"


class _Stats(Protocol):
    """What `observe_stats` reads: `collector.clouddc.api.CallStats`."""

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
                _LAST_SUCCESS, "When a run last exited 0, in seconds since the epoch.", self._last_success
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


# -- the textfile ------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """`data` under `path`, all or nothing: node_exporter may read the file at any moment.

    Written to a hidden temporary file in the same folder (its name does not end in `.prom`,
    so the textfile collector never reads it), fsynced, then renamed over `path`; the
    folder is fsynced so the rename survives a crash. 0644: node_exporter runs as another
    user, and metrics hold no secrets.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o644)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    with suppress(OSError):  # some file systems cannot fsync a folder; the file is in place
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def previous_success(path: Path, shard: str | None) -> float | None:
    """The last success an earlier run wrote into `path` for this shard, if it did."""
    try:
        with open(path, "rb") as file:
            text = file.read(_PREVIOUS_FILE_LIMIT).decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == _LAST_SUCCESS and sample.labels.get("shard") == shard:
                    return sample.value
    except Exception:  # noqa: BLE001 - none yet, or not one we can read: nothing to carry
        return None
    return None


class _Textfile:
    """One metrics file: written atomically, its first failure logged, none ever raised."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.carried = False
        self._reported = False

    def carry(self, metrics: Metrics) -> None:
        """Before the first write replaces it: keep the last success the file holds."""
        if not self.carried:
            self.carried = True
            metrics.carry_last_success(previous_success(self.path, metrics.shard))

    def write(self, data: bytes) -> bool:
        try:
            write_atomically(self.path, data)
        except Exception as exc:  # noqa: BLE001 - metrics never stop a run
            self.failed(exc)
            return False
        return True

    def failed(self, exc: Exception) -> None:
        if self._reported:
            return
        self._reported = True
        error = _describe(exc)
        log.warning(
            "metrics: cannot write %s: %s; the run goes on without it",
            self.path,
            error,
            extra=ev("metrics_failed", destination=str(self.path), error=error, error_kind=type(exc).__name__),
        )


def write_textfile(path: Path | str, metrics: Metrics) -> bool:
    """Write the metrics file once, now (blocking); False, and a log line, if it failed.

    For when no event loop runs (a usage error, exit 2); during a run use
    `write_textfile_every`.
    """
    textfile = _Textfile(path)
    try:
        textfile.carry(metrics)
        data = metrics.text()
    except Exception as exc:  # noqa: BLE001 - metrics never stop a run
        textfile.failed(exc)
        return False
    return textfile.write(data)


async def write_textfile_every(
    path: Path | str,
    metrics: Metrics,
    interval: float = TEXTFILE_INTERVAL,
    *,
    sleep: Sleep = anyio.sleep,
    final_timeout: float = FINAL_WRITE_TIMEOUT,
) -> None:
    """Write the metrics file now, every `interval` seconds, and once more when cancelled.

    Run it as a task and cancel it when the run is over, after `metrics.finish`: the last
    write (shielded, at most `final_timeout` s) then holds the exit code. The text is made
    on the event loop's thread, where the sweep changes what it reads; the file is written
    in a worker thread, since an fsync can take a while.
    """
    textfile = _Textfile(path)

    async def write(*, abandon_on_cancel: bool = False) -> None:
        try:
            if not textfile.carried:  # read in a thread, applied here: metrics live on this thread
                earlier = await anyio.to_thread.run_sync(
                    previous_success, textfile.path, metrics.shard, abandon_on_cancel=abandon_on_cancel
                )
                textfile.carried = True
                metrics.carry_last_success(earlier)
            data = metrics.text()
        except Exception as exc:  # noqa: BLE001 - metrics never stop a run
            textfile.failed(exc)
            return
        await anyio.to_thread.run_sync(textfile.write, data, abandon_on_cancel=abandon_on_cancel)

    try:
        while True:
            await write()
            await sleep(interval)
    finally:
        # The run is over (or being torn down): one last write, whatever cancelled us, but
        # bounded, so a hung file system cannot hold the process.
        with anyio.move_on_after(final_timeout, shield=True):
            await write(abandon_on_cancel=True)


# -- the Pushgateway ---------------------------------------------------------------------------


class _PushRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.status = status


def pushgateway_url(text: str) -> URL:
    """`--pushgateway`, checked: an http(s) URL with a host. It may carry `user:password@`
    for basic auth, so no message here ever repeats it whole."""
    try:
        url = URL(text)
        host = url.host
    except (ValueError, TypeError):
        raise UsageError(
            "--pushgateway: not a valid URL", "give the Pushgateway's address, like https://pushgateway.example:9091"
        ) from None
    if url.scheme not in ("http", "https") or not host:
        raise UsageError(
            f"--pushgateway: {shown_url(url)} is not an http:// or https:// URL with a host",
            "give the Pushgateway's address, like https://pushgateway.example:9091",
        )
    return url


def shown_url(url: URL) -> str:
    """`url` as logs may show it: no user, password, query or fragment."""
    with suppress(ValueError, TypeError):
        return str(url.with_user(None).with_query(None).with_fragment(None))
    return "<the --pushgateway URL>"


def push_target(url: URL, job: str, grouping: Mapping[str, str]) -> URL:
    """PUT/POST target of the Pushgateway API: {url}/metrics/job/{job}[/{label}/{value}...].

    A value with a `/` (or an empty one) goes base64-encoded, as `{label}@base64/{value}`;
    any path in `url` is kept, for a gateway behind a proxy.
    """
    segments = [_grouping_segment("job", job)]
    for name, value in grouping.items():
        if name == "job" or not _LABEL_NAME.match(name):
            raise UsageError(f"Pushgateway grouping label {name!r} is not a label name")
        segments.append(_grouping_segment(name, value))
    base = url.with_user(None).with_query(None).with_fragment(None)
    return URL(str(base.origin()) + base.raw_path.rstrip("/") + "/metrics/" + "/".join(segments), encoded=True)


def _grouping_segment(name: str, value: str) -> str:
    if not value or "/" in value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
        return f"{name}@base64/{encoded}"
    return f"{name}/{quote(value, safe='')}"


async def push(
    url: str,
    metrics: Metrics,
    *,
    job: str = "collector",
    grouping: Mapping[str, str] | None = None,
    timeout: float = PUSH_TIMEOUT,
) -> bool:
    """Push the metrics once to the Pushgateway at `url`; False, and one log line, if that
    failed. Never raises (but cancellation): the push cannot change a run's exit code.

    POST, not PUT: a POST replaces only the metric names it carries, so a run that did not
    exit 0 (and so sends no `collector_last_success_timestamp_seconds`) leaves the last
    success where an earlier run put it. The group is `job` plus `grouping` (by default the
    shard, so shards do not replace each other).

    With aiohttp rather than prometheus_client's `push_to_gateway`: that one blocks in
    urllib, so it would need a worker thread, which could neither be cancelled nor read the
    registry while the event loop changes it; here the text is made on the loop's thread and
    the whole push is one cancellable, time-boxed scope. Basic auth comes from the URL's
    `user:password@` and goes into the Authorization header, never into a log line.
    """
    shown = "<the --pushgateway URL>"
    try:
        base = pushgateway_url(url)
        shown = shown_url(base)
        target = push_target(base, job, metrics.grouping() if grouping is None else grouping)
        headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        if base.user or base.password:
            headers["Authorization"] = basic_auth(base.user or "", base.password or "")
        body = metrics.text()
        with anyio.fail_after(timeout):
            async with aiohttp.ClientSession() as session:
                async with session.post(target, data=body, headers=headers, allow_redirects=False) as response:
                    if not 200 <= response.status < 300:
                        detail = (await response.content.read(300)).decode("utf-8", "replace").strip()
                        raise _PushRefused(response.status, detail)
    except Exception as exc:  # noqa: BLE001 - metrics never change how a run ends
        error = _describe(exc)
        log.warning(
            "metrics: push to %s failed: %s",
            shown,
            error,
            extra=ev(
                "metrics_failed",
                destination=shown,
                error=error,
                error_kind=type(exc).__name__,
                status=getattr(exc, "status", None),
            ),
        )
        return False
    return True


def basic_auth(user: str, password: str) -> str:
    """The `Authorization` header of HTTP basic auth (RFC 7617), UTF-8."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
