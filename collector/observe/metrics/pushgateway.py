"""The metrics pushed once, at the end of a run, to a Pushgateway (`--pushgateway`)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from contextlib import suppress
from urllib.parse import quote

import aiohttp
import anyio
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from yarl import URL

from collector.config.settings import Settings
from collector.config.urls import url_problem
from collector.errors import UsageError
from collector.log import ev
from collector.net.session import open_session
from collector.net.transport import translate
from collector.observe.metrics.registry import Metrics, describe, log

PUSH_TIMEOUT = 10.0
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class _PushRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.status = status


def pushgateway_url(text: str) -> URL:
    """`--pushgateway`, checked: an http(s) URL with a host. It may carry `user:password@`
    for basic auth, so no message here ever repeats it whole."""
    problem = url_problem(text, userinfo=True)
    if problem is not None:
        raise UsageError(
            f"--pushgateway: not a usable URL: {problem}",
            "give the Pushgateway's address, like https://pushgateway.example:9091",
        )
    return URL(text)


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
    job: str = Settings.metrics_job,
    grouping: Mapping[str, str] | None = None,
    timeout: float = PUSH_TIMEOUT,  # noqa: ASYNC109 - the push bounds itself: a caller's scope would raise
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
    the whole push is one cancellable, time-boxed scope. The session is the collector's one
    kind (`collector.net.session`: proxies from the environment, our User-Agent), and its
    errors are translated the one way (`collector.net.transport`). Basic auth comes from the URL's
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
            # The whole push is bounded by the scope; the session adds only the connect timeout.
            async with open_session(connect_timeout=timeout, read_timeout=None, connections=1) as session:
                try:
                    async with session.post(target, data=body, headers=headers, allow_redirects=False) as response:
                        if not 200 <= response.status < 300:
                            detail = (await response.content.read(300)).decode("utf-8", "replace").strip()
                            raise _PushRefused(response.status, detail)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise translate(exc, "push", target) from exc
    except Exception as exc:  # noqa: BLE001 - metrics never change how a run ends
        error = describe(exc)
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
