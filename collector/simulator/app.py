"""The simulated CloudDC API: the aiohttp application and its handlers.

Every API request goes through the same gate, in this order:

1. authentication (``X-Auth-Token``: the configured token or a live one IAM issued; or an AK/SK
   ``SDK-HMAC-SHA256`` signature checked by `collector.simulator.signing`, with the configured
   keys or live pod identity keys, and the security token temporary keys need), 401
   ``APIGW.0301``;
2. an outage (`SimConfig.outage`), then the gateway's token bucket, 429 ``APIGW.0308``;
3. the project id and server id in the path, 404;
4. the next scripted fault for this (operation, server), else a seeded random 500, else
   (with `SimConfig.hostile`) a seeded entry of the hostile catalogue
   (`collector.simulator.hostile`);
5. the operation itself: export (202), status (200), download (200/206), list (200).

Responses carry the documented quirks: the 202 is JSON labelled octet-stream, statuses and
percentages are spelled per server, and some servers label their JSON as octet-stream too.
Handlers do a few dict lookups and one small JSON dump, so thousands of servers fit on a core.

IAM (``POST /v3/auth/tokens``) and the pod identity agent are served here too, outside the
gate (`collector.simulator.identity`).

``GET /_sim/stats`` is outside the API: no authentication, not rate limited, not recorded. It
answers `CloudDC.snapshot` as JSON, for benchmarks that run the simulator in another process.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from multidict import CIMultiDict

from collector.simulator import hostile
from collector.simulator.config import SimConfig
from collector.simulator.exports import COMPLETED, FAILED, RUNNING, Export, ExportBook
from collector.simulator.faults import DOWNLOAD, EXPORT, LIST, STATUS, FaultScript, Outage, chance, hostile_fault
from collector.simulator.fleet import Fleet, ServerProfile
from collector.simulator.gateway import TokenBucket, retry_after_header
from collector.simulator.hostile import HostileReplies
from collector.simulator.identity import Identity, check_security_token
from collector.simulator.recorder import Recorder, SeenRequest
from collector.simulator.responses import (
    JSON_TYPE,
    OCTET_TYPE,
    Abandoned,
    error_response,
    json_response,
    redirect,
    reset_connection,
)
from collector.simulator.signing import SignatureError, is_signed, parse_authorization, verify
from collector.simulator.storage import StorageOrigin
from collector.simulator.transfer import ArchiveSender

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100

_NOT_GZIP_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<h1>502 Bad Gateway</h1><p>The log service is temporarily unavailable.</p>"
    b"</body></html>\n"
)

# (request, server or None for ListServers, fault, now, request id) -> response
Respond = Callable[..., Awaitable[web.StreamResponse]]


class CloudDC:
    """State and handlers of the API origin. `Simulator` owns one and serves `app()`."""

    def __init__(
        self,
        config: SimConfig,
        *,
        fleet: Fleet,
        sender: ArchiveSender,
        storage: StorageOrigin,
        script: FaultScript,
        recorder: Recorder,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.sender = sender
        self.storage = storage
        self.script = script
        self.recorder = recorder
        self.hostile = HostileReplies(lambda: sender.stopping)
        self.clock = clock
        self.wall_clock = wall_clock  # for X-Sdk-Date, which is UTC wall time
        self.token = config.token
        self.book = ExportBook(ttl=config.export_ttl)
        self.t0 = 0.0
        self._bucket: TokenBucket | None = None
        self._outage = Outage(config.outage)
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._request_ids = random.Random(f"{config.seed}:request-ids")
        self._exports: list[Export] = []  # every export started, for the snapshot's spans
        self.identity = Identity(config, wall_clock=wall_clock, request_id=self.request_id)

    def app(self) -> web.Application:
        app = web.Application()
        servers = "/v1/{project_id}/physicalservers"
        exports = servers + "/{server_id}/logs/exports"
        app.router.add_get(servers, self._list)
        app.router.add_post(exports, self._export)
        app.router.add_get(exports + "/{export_id}", self._status)
        app.router.add_get(exports + "/{export_id}/content", self._download)
        app.router.add_get("/_sim/stats", self._stats)
        self.identity.add_routes(
            app, lambda operation, status: self.recorder.record(self.clock() - self.t0, operation, status)
        )
        app.router.add_route("*", "/{tail:.*}", self._no_route)
        return app

    def started(self) -> None:
        """Start the clocks: the timeline's zero and a full token bucket."""
        self.t0 = self.clock()
        self.identity.started()
        if self.config.rate_limit is not None and self.config.burst is not None:
            self._bucket = TokenBucket(self.config.rate_limit, self.t0, self.config.burst)

    def request_id(self) -> str:
        return f"{self._request_ids.getrandbits(128):032x}"

    # Routes: each names its operation and hands over to `_handle`.

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, LIST, self._list_servers)

    async def _export(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, EXPORT, self._start_export)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, STATUS, self._show_status)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, DOWNLOAD, self._send_archive)

    async def _no_route(self, request: web.Request) -> web.StreamResponse:
        self.recorder.record(self.clock() - self.t0, "other", 404)
        return error_response(404, "CLOUDDC.0404", f"no API at {request.path}", self.request_id())

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        with_timeline = request.query.get("timeline", "1") not in ("0", "false", "no")
        return json_response(200, self.snapshot(timeline=with_timeline), self.request_id())

    def snapshot(self, *, timeline: bool = True) -> dict[str, object]:
        """What the simulator received so far, as JSON-able values.

        ``requests`` counts by operation and status; ``export_spans`` are ``[start, end]`` of
        every export (seconds since start; a running one ends now), and
        ``peak_running_exports`` is the most that ran at once; ``faults`` counts the faults
        drawn by name (scripted, random, hostile). ``clock_t0`` is the clock at
        start: `time.monotonic()` seconds under the default (event loop) clock, so another process
        can place these times on its own clock. With `timeline`, also every request as
        ``[t, operation, status]``, the spans, and ``exports_by_server``: ``[server_id, n]``
        in the order of each server's first export; without, only the counts.
        """
        now = self.clock()
        requests: dict[str, dict[str, int]] = {}
        for (operation, status), n in sorted(self.recorder.stats.items()):
            requests.setdefault(operation, {})[str(status)] = n
        started = self.recorder.exports_started
        spans = [(export.started - self.t0, min(export.ends, now) - self.t0) for export in self._exports]
        snapshot: dict[str, object] = {
            "servers": len(self.fleet),
            "uptime_s": round(now - self.t0, 6),
            "clock_t0": self.t0,
            "rate_limit": self.config.rate_limit,
            "max_concurrent_exports": self.config.max_concurrent_exports,
            "requests": requests,
            "requests_total": sum(self.recorder.stats.values()),
            "exports_started": sum(started.values()),
            "exports_started_max_per_server": max(started.values(), default=0),
            "servers_exported": len(started),
            "running_exports": self.book.running(now),
            "peak_running_exports": _peak(spans),
            "hostile": self.config.hostile,
            "faults": dict(sorted(self.recorder.faults.items())),
            "identity": self.identity.snapshot(timeline=timeline),
        }
        if timeline:
            snapshot["timeline"] = [[round(t, 6), op, status] for t, op, status in self.recorder.timeline]
            snapshot["export_spans"] = [[round(start, 6), round(end, 6)] for start, end in spans]
            snapshot["exports_by_server"] = [[server_id, n] for server_id, n in started.items()]
        return snapshot

    # The gate.

    async def _handle(self, request: web.Request, operation: str, respond: Respond) -> web.StreamResponse:
        now = self.clock()
        rid = self.request_id()
        sid = request.match_info.get("server_id")
        if operation == DOWNLOAD:
            self.recorder.download_requests.append(
                SeenRequest(request.method, request.path_qs, CIMultiDict(request.headers), sid)
            )
        recorded = False

        def record(status: int) -> None:  # once: when the sender says the head is out, or here
            nonlocal recorded
            if not recorded:
                recorded = True
                self.recorder.record(now - self.t0, operation, status, sid)

        response: web.StreamResponse | None = await self._refuse(request, now, rid)
        server = None if sid is None else self.fleet.get(sid)
        if response is None and sid is not None and server is None:
            response = error_response(404, "CLOUDDC.0404", f"physical server {sid} not found", rid)
        if response is None:
            fault = self._fault(operation, sid)
            if fault is not None:
                self.recorder.faults[fault] += 1
            response = self._common_fault(request, operation, fault, rid)
            if response is None:
                self.sender.answering[id(request)] = record
                try:
                    response = await respond(request, server, fault, now, rid)
                finally:
                    del self.sender.answering[id(request)]
        assert response is not None  # `respond` always answers
        record(response.sent_status if isinstance(response, Abandoned) else response.status)
        return response

    async def _refuse(self, request: web.Request, now: float, rid: str) -> web.Response | None:
        """The gateway's answers: bad token or signature, throttled, wrong project."""
        if is_signed(request.headers.get("Authorization")):
            try:
                await self._check_signature(request)
            except SignatureError as exc:
                message = f"Incorrect IAM authentication information: verify aksk signature fail: {exc}"
                return error_response(401, "APIGW.0301", message, rid)
        elif request.headers.get("X-Auth-Token") != self.token:
            reason = self.identity.token_refusal(request.headers.get("X-Auth-Token"))
            if reason is not None:
                message = f"Incorrect IAM authentication information: {reason}"
                return error_response(401, "APIGW.0301", message, rid)
        if self._outage.active(now):
            return self._throttled(rid, self.config.retry_after_seconds, "outage")
        if self._bucket is not None:
            wait = self._bucket.take(now)
            if wait:
                return self._throttled(rid, wait, f"limit:{self.config.rate_limit:g} per second")
        if request.match_info["project_id"] != self.config.project_id:
            message = f"project {request.match_info['project_id']} not found"
            return error_response(404, "CLOUDDC.0404", message, rid)
        return None

    async def _check_signature(self, request: web.Request) -> None:
        access_key, keys = self.identity.signing_keys(request.headers["Authorization"])
        body = await request.read() if request.body_exists else b""
        verify(
            request.method,
            request.rel_url.raw_path,
            request.rel_url.raw_query_string,
            request.headers,
            body,
            access_key=access_key,
            secret_key=keys.secret,
            now=self.wall_clock(),
        )
        if keys.security_token is not None:
            signed = parse_authorization(request.headers["Authorization"]).signed_headers
            check_security_token(request.headers, signed, keys.security_token)

    def _fault(self, operation: str, sid: str | None) -> str | None:
        key = sid or ""
        self._attempts[operation, key] += 1
        fault = self.script.next(operation, key) if sid is not None else None
        attempt = self._attempts[operation, key]
        probability = self.config.fault_500
        if fault is None and probability and chance(self.config.seed, "500", operation, key, attempt) < probability:
            fault = "500"
        if fault is None and self.config.hostile and sid is not None:
            fault = hostile_fault(self.config.seed, self.config.hostile, operation, key, attempt)
        return fault

    def _common_fault(
        self, request: web.Request, operation: str, fault: str | None, rid: str
    ) -> web.StreamResponse | None:
        """Answer the faults any call can meet; None for the rest (and for no fault)."""
        if fault is None:
            return None
        if fault == "burst_5xx":
            # A gateway having a bad minute: this call's next answers for this server fail too.
            self.script.add_next(operation, request.match_info["server_id"], hostile.BURST_AFTER)
            return hostile.gateway_page(502, rid)
        if fault == "500":
            return error_response(500, "CLOUDDC.0500", "Internal error", rid)
        if fault == "503":
            return error_response(503, "CLOUDDC.0503", "Service unavailable, try again later", rid)
        if fault == "503-retry-after":  # this one request, told to come back in retry_after_seconds
            headers = {"Retry-After": retry_after_header(self.config.retry_after_seconds)}
            return error_response(503, "CLOUDDC.0503", "Service unavailable, try again later", rid, headers)
        if fault in ("502", "504"):
            return hostile.gateway_page(int(fault), rid)
        if fault == "429":
            return self._throttled(rid, self.config.retry_after_seconds, "scripted")
        if fault == "429-no-retry-after":
            return self._throttled(rid, None, "scripted")
        if fault == "401":
            message = "Incorrect IAM authentication information: token expired"
            return error_response(401, "APIGW.0301", message, rid)
        if fault == "403":
            return error_response(403, "CLOUDDC.0403", "Forbidden: the policy does not allow this action", rid)
        if fault == "404":
            return error_response(404, "CLOUDDC.0404", "resource not found", rid)
        if fault == "reset":
            reset_connection(request)
            return Abandoned(0)
        if fault == "redirect":
            return redirect(self.storage.url + request.path_qs, rid)
        if fault in hostile.ANY_CALL:
            return self.hostile.any_call(fault, rid)
        return None

    def _throttled(self, rid: str, wait: float | None, detail: str) -> web.Response:
        headers = {}
        if wait is not None and self.config.retry_after:
            headers["Retry-After"] = retry_after_header(wait)
        message = f"The throttling threshold has been reached: {detail}"
        return error_response(429, "APIGW.0308", message, rid, headers)

    # The operations.

    async def _list_servers(
        self, request: web.Request, _server: None, _fault: str | None, _now: float, rid: str
    ) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", DEFAULT_LIST_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return error_response(400, "CLOUDDC.0400", f"limit must be 1..{MAX_LIST_LIMIT}", rid)
        try:
            page, next_marker = self.fleet.page(limit, request.query.get("marker") or None)
        except KeyError:
            return error_response(400, "CLOUDDC.0400", "marker is not a server id", rid)
        page_info: dict[str, object] = {"current_count": len(page)}
        if next_marker is not None:
            page_info["next_marker"] = next_marker
        body = {
            "servers": [server.listing() for server in page],
            "page_info": page_info,
            "count": len(self.fleet),
        }
        return json_response(200, body, rid)

    async def _start_export(
        self, request: web.Request, server: ServerProfile, fault: str | None, now: float, rid: str
    ) -> web.StreamResponse:
        cap = self.config.max_concurrent_exports
        if cap is not None and self.book.running(now) >= cap:
            next_end = self.book.next_end(now)
            wait = self.config.retry_after_seconds if next_end is None else next_end - now
            return self._throttled(rid, wait, f"at most {cap} concurrent exports")
        export = self.book.start(server, now, _created_at(server))
        self._exports.append(export)
        self.recorder.exports_started[server.id] += 1
        state, percentage = export.phase(now)
        export.last_percentage = percentage
        headers = {
            "Content-Transfer-Encoding": "binary",
            "Content-Disposition": f"attachment; filename={server.id}-dump.tar.gz",
        }
        body = _export_body(export, state, percentage)
        return await self._json_reply(request, fault, 202, body, rid, content_type=OCTET_TYPE, headers=headers)

    async def _show_status(
        self, request: web.Request, server: ServerProfile, fault: str | None, now: float, rid: str
    ) -> web.StreamResponse:
        export = self.book.get(request.match_info["export_id"], server.id, now)
        if export is None:
            return _no_export(request, rid)
        if fault == "failed":
            self.book.fail(export, now)
        state, percentage = export.phase(now)
        word = None
        if fault == "backwards":
            state, percentage = RUNNING, max(0, export.last_percentage) // 2
        elif fault == "unknown":
            word = "Exploding"
        export.last_percentage = percentage
        body = _export_body(export, state, percentage, word)
        content_type = JSON_TYPE if server.status_is_json else OCTET_TYPE
        return await self._json_reply(request, fault, 200, body, rid, content_type=content_type)

    async def _json_reply(
        self,
        request: web.Request,
        fault: str | None,
        status: int,
        body: dict[str, object],
        rid: str,
        *,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """An export or status answer, unless a hostile entry spoils it."""
        if fault in hostile.JSON_REPLIES:
            return await self.hostile.json_reply(
                request, fault, status, body, rid, content_type=content_type, headers=headers
            )
        return json_response(status, body, rid, content_type=content_type, headers=headers)

    async def _send_archive(
        self, request: web.Request, server: ServerProfile, fault: str | None, now: float, rid: str
    ) -> web.StreamResponse:
        export = self.book.get(request.match_info["export_id"], server.id, now)
        if export is None:
            return _no_export(request, rid)
        state, percentage = export.phase(now)
        if state == FAILED:
            return error_response(409, "CLOUDDC.0409", f"export task {export.export_id} failed", rid)
        if state != COMPLETED:
            message = f"export task {export.export_id} is not completed ({percentage}%)"
            return error_response(409, "CLOUDDC.0409", message, rid)
        if fault == "redirect_storage" or (fault is None and self.config.redirect_downloads):
            return redirect(self.storage.url + self.storage.presigned_path(server.id), rid)
        if fault == "not_gzip":
            headers = {"X-Request-Id": rid}
            return web.Response(status=200, body=_NOT_GZIP_PAGE, content_type="text/html", headers=headers)
        probability = self.config.fault_truncate
        if fault is None and probability:
            attempt = self._attempts[DOWNLOAD, server.id]
            if chance(self.config.seed, "truncate", server.id, attempt) < probability:
                fault = "truncate"
        size = self.config.oversize_bytes if fault == "oversize" else server.archive_bytes
        filename = "../../x" if fault == "evil_disposition" else f"{server.id}-dump.tar.gz"
        headers = {
            "X-Request-Id": rid,
            "Content-Type": OCTET_TYPE,
            "Content-Disposition": f"attachment; filename={filename}",
        }
        if fault in hostile.DOWNLOAD_ONLY:
            return await self.hostile.archive(request, fault, self.sender.store.data(server.id, size), headers)
        return await self.sender.send(request, server.id, size, headers, fault)


def _created_at(server: ServerProfile) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ") if server.zulu else now.isoformat()


def _export_body(export: Export, state: str, percentage: int, word: str | None = None) -> dict[str, object]:
    server = export.server
    if word is None:
        words = {RUNNING: server.running_word, COMPLETED: server.completed_word, FAILED: server.failed_word}
        word = words[state]
    return {
        "export_id": export.export_id,
        "status": word,
        "percentage": server.percentage(percentage),
        "created_at": export.created_at,
    }


def _peak(spans: list[tuple[float, float]]) -> int:
    """The most spans that overlap at any instant (an end at t comes before a start at t)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _no_export(request: web.Request, rid: str) -> web.Response:
    message = f"export task {request.match_info['export_id']} not found or expired"
    return error_response(404, "CLOUDDC.0404", message, rid)
