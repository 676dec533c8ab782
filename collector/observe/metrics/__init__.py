"""Prometheus metrics of a run, for the runs nobody watches: the nightly job, the CronJob.

A `Metrics` holds what one run would tell a monitoring system: servers per state, requests
per operation and outcome, retries, 429s, bytes, what each endpoint's rate limiter allows,
and at the end the run's duration, exit code and, if it exited 0, when it succeeded. It has
its own `CollectorRegistry` (never prometheus_client's global one) and is read, not pushed
into: each scrape asks it for its current values, so the sweep's hot path adds to plain
counters and nothing else. Two ways out, both used at the end of a run, never in its way:

- `write_textfile_every` (`textfile.py`): the text format, atomically, into a file for
  node_exporter's textfile collector (`--metrics-file`), every 10 s and once more at the end;
- `push` (`pushgateway.py`): once, at the end, to a Pushgateway (`--pushgateway`).

`Metrics` itself, the collector a scrape reads, is in `registry.py`.

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

from collector.observe.metrics.pushgateway import (
    PUSH_TIMEOUT,
    basic_auth,
    push,
    push_target,
    pushgateway_url,
    shown_url,
)
from collector.observe.metrics.registry import OPERATIONS, Metrics, code_of
from collector.observe.metrics.textfile import (
    FINAL_WRITE_TIMEOUT,
    TEXTFILE_INTERVAL,
    previous_success,
    write_atomically,
    write_textfile,
    write_textfile_every,
)

__all__ = [
    "FINAL_WRITE_TIMEOUT",
    "OPERATIONS",
    "PUSH_TIMEOUT",
    "TEXTFILE_INTERVAL",
    "Metrics",
    "basic_auth",
    "code_of",
    "previous_success",
    "push",
    "push_target",
    "pushgateway_url",
    "shown_url",
    "write_atomically",
    "write_textfile",
    "write_textfile_every",
]
