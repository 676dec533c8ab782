"""The second origin: object storage that downloads may be redirected to.

It serves each server's archive at a presigned-looking URL
(``/bucket/{project}/{id}-dump.tar.gz?X-Expires=...&X-Signature=...``), and mirrors the API's
download path so a "redirect to the same path" lands somewhere real. It needs no credentials
and must never be sent any: every request's headers are recorded so a test can assert that no
``X-Auth-Token`` or ``Authorization`` reached it. Anything else is refused the way object
stores refuse, with a 403 XML body.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

from collector.simulator.config import SimConfig
from collector.simulator.faults import STORAGE
from collector.simulator.fleet import Fleet
from collector.simulator.recorder import Recorder, SeenRequest
from collector.simulator.responses import Abandoned
from collector.simulator.transfer import ArchiveSender

EXPIRES = 4102444800  # 2100-01-01: presigned URLs here do not expire


class StorageOrigin:
    """State and handlers of the storage origin. `Simulator` owns one and serves `app()`."""

    def __init__(
        self,
        config: SimConfig,
        *,
        fleet: Fleet,
        sender: ArchiveSender,
        recorder: Recorder,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.sender = sender
        self.recorder = recorder
        self.clock = clock
        self.url = ""  # set when listening
        self.t0 = 0.0
        self._key = f"{config.seed}:{config.project_id}:storage".encode()
        self._served = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/bucket/{project_id}/{name}", self._object)
        app.router.add_get(
            "/v1/{project_id}/physicalservers/{server_id}/logs/exports/{export_id}/content", self._mirror
        )
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    def presigned_path(self, server_id: str) -> str:
        path = f"/bucket/{self.config.project_id}/{server_id}-dump.tar.gz"
        return f"{path}?X-Expires={EXPIRES}&X-Signature={self._sign(path, str(EXPIRES))}"

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._key, f"{path}?{expires}".encode(), hashlib.sha256).hexdigest()

    def _request_id(self) -> str:
        self._served += 1
        return f"{self._served:032x}"

    async def _object(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        sid = name.removesuffix("-dump.tar.gz")
        self._seen(request, sid)
        signature = request.query.get("X-Signature", "")
        expected = self._sign(request.path, request.query.get("X-Expires", ""))
        if not hmac.compare_digest(signature, expected):
            error = _xml_error(403, "SignatureDoesNotMatch", "bad or missing X-Signature", self._request_id())
            return self._finish(error, sid)
        return self._finish(await self._serve(request, sid, name), sid)

    async def _mirror(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["server_id"]
        self._seen(request, sid)
        return self._finish(await self._serve(request, sid, f"{sid}-dump.tar.gz"), sid)

    async def _other(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, None)
        message = f"{request.method} {request.path} is not allowed"
        return self._finish(_xml_error(403, "AccessDenied", message, self._request_id()), None)

    async def _serve(self, request: web.Request, sid: str, name: str) -> web.StreamResponse:
        server = self.fleet.get(sid)
        if request.match_info["project_id"] != self.config.project_id or server is None:
            return _xml_error(404, "NoSuchKey", f"{name} does not exist", self._request_id())
        headers = {
            "Content-Type": "binary/octet-stream",
            "ETag": f'"{self._sign(name, "etag")[:32]}"',
            "X-Request-Id": self._request_id(),
        }
        return await self.sender.send(request, sid, server.archive_bytes, headers)

    def _seen(self, request: web.Request, sid: str | None) -> None:
        self.recorder.storage_requests.append(
            SeenRequest(request.method, request.path_qs, CIMultiDict(request.headers), sid)
        )

    def _finish(self, response: web.StreamResponse, sid: str | None) -> web.StreamResponse:
        status = response.sent_status if isinstance(response, Abandoned) else response.status
        self.recorder.record(self.clock() - self.t0, STORAGE, status, sid)
        return response


def _xml_error(status: int, code: str, message: str, request_id: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{html.escape(message)}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>\n"
    )
    headers = {"X-Request-Id": request_id}
    return web.Response(status=status, text=body, content_type="application/xml", headers=headers)
