"""The log line's contract: every event name a call site may log, with its fields, and `ev`.

Call sites say what happened with a stable event name and its fields:

    log.warning("%s: failed: %s", server_id, error, extra=ev("server_failed", server_id=..., error=...))

A leaf: every layer logs through it, and it imports nothing of ours. The formatters that
render these records (text for people, JSON lines for shippers) are `collector.cli.logs`.
"""

from __future__ import annotations

from typing import Any

# Every event name a call site may pass to `ev`, with who logs it, at what level, and its
# fields; tests/test_logs.py holds the code to it. Common fields, wherever they apply:
# project_id, server_id, export_id, endpoint, attempt, wait_s, error (the full message),
# error_kind (the error's `kind`), status, error_code, request_id, bytes, reason.
EVENTS: dict[str, str] = {
    "log": "any record made without `ev`; has `logger`",
    "run_started": "runner, collector.run, info: servers, projects, endpoints, collected_earlier, output, "
    "resumed, concurrency, downloads, rate, version",
    "cleartext_endpoint": "runner, collector.run, warning, an http:// endpoint: endpoint",
    "proxy": "proxies, info, a proxy from the environment: scheme (of the requests it takes), proxy (its URL, "
    "login masked)",
    "netrc_default": "proxies, warning, a proxy is set and netrc has a default entry: path",
    "progress": "collector.observe.progress, info: see progress.Snapshot.fields",
    "asking_order": "collector.sweep.pipeline, debug, a run with servers' times kept: rules (endpoint -> the "
    "rule its exports are asked by, collector.sweep.plan)",
    "summary": "runner through report.emit_summary, collector.summary, info: see report.summary_record",
    "run_stopping": "runner, collector.run, warning, first signal: reason (SIGTERM), wait_s (the grace)",
    "run_cancelled": "runner, collector.run, warning, second signal or grace over: reason",
    "run_crashed": "runner, collector.run, error, JSON logs only, a bug ended the run (exit 70): error, crash_file",
    "retry": "sweep on_retry, info: project_id, server_id, export_id, endpoint, operation, attempt, wait_s, "
    "error, error_kind, status, error_code, request_id",
    "export_renewed": "sweep, info, a 404 for a known export: project_id, server_id, export_id, error, status, "
    "request_id",
    "server_collected": "sweep, info: project_id, server_id, export_id, bytes, attempt, duration_s",
    "server_skipped": "sweep, debug, collected by an earlier run: project_id, server_id, bytes",
    "archive_recollected": "sweep, warning, an earlier archive is missing or changed: project_id, server_id, reason",
    "server_failed": "sweep, warning: project_id, server_id, export_id, endpoint, attempt, error, error_kind, "
    "status, error_code, request_id, reason",
    "internal_error": "sweep, error, with exc_info: project_id, server_id, error",
    "credentials_rejected": "sweep, error, the run stops: project_id, endpoint, status, error_code, request_id, error",
    "endpoint_unreachable": "endpoint, warning, never answered yet; probing: endpoint, error, reason (its kind)",
    "endpoint_outage": "endpoint, warning, answered before, stopped; probing: endpoint, error, reason (its kind)",
    "endpoint_recovered": "endpoint, warning, answers again: endpoint, wait_s (how long it did not)",
    "endpoint_given_up": "endpoint, error, its servers stay pending: endpoint, reason",
    "download_restarted": "download, info, a resume was refused: project_id, server_id, export_id, status, bytes",
    "file_name_ignored": "download, warning: project_id, server_id, reason (the name the server suggested)",
    "journal_failed": "journal, error: error, reason",
    "servers_discovered": "prepare, collector.run, info: project_id, endpoint, servers (listed by the API), "
    "chosen (by discover:)",
    "discovery_failed": "prepare, collector.run, error: project_id, endpoint, error, error_kind",
    "tls_unverified": "runner, collector.run, warning, every run: endpoint",
    "selection_unmatched": "prepare, collector.run, warning, terms of --select (or its @FILE) that match no server: "
    "terms (as written, with file:line)",
    "rate_learned": "runner, collector.run, info, an endpoint starts where an earlier run left it: endpoint, rate",
    "learned_ignored": "learned, collector.run, debug, the learned rates could not be read: error",
    "learned_not_kept": "learned, collector.run, warning, the learned rates could not be written: error",
    "usage_error": "cli, error, JSON logs only, a mistake found before any request (exit 2): message",
    "credentials_found": "prepare, collector.run, info, no auth in the inventory: source (kind and where)",
    "metrics_failed": "metrics, warning, once per file or push: destination (path, or URL without credentials), "
    "error, error_kind, status",
}


def ev(event: str, **fields: Any) -> dict[str, Any]:
    """The `extra=` of a log call: a stable snake_case event name and its fields."""
    return {"event": event, "fields": fields}
