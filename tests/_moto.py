"""moto's S3 server on loopback, for the object-storage tests.

moto runs as its own process (`python -m moto.server`, port 0): the bytes it keeps do not
count against the memory of the process under test, and its threads share no GIL with our
event loop. The fixture starts it once per session, with dummy credentials in the
environment and every AWS configuration file pointed away from ~/.aws.

`FaultyProxy` stands between a client and moto where moto cannot misbehave by itself: it
answers scripted requests with an S3 error (503 SlowDown) and forwards the rest, recording
each request and how many part uploads were in flight at once.
"""

from __future__ import annotations

import io
import itertools
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probes when credentials are missing
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_RUNNING = re.compile(r"Running on (http://[0-9.]+:\d+)")


class MotoServer:
    """`python -m moto.server` on 127.0.0.1 and a free port; `url` once started."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )
        found: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, args=(self._process.stderr, found), daemon=True)
        self._reader.start()
        try:
            self.url = found.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError("moto server did not start") from None
        if not self.url:
            self.stop()
            raise RuntimeError("moto server exited before listening")
        return self.url

    @staticmethod
    def _drain(stream, found: queue.Queue[str]) -> None:
        """Find the address it listens on, then keep reading: its request log would fill the pipe."""
        announced = False
        for line in stream:
            if not announced and (match := _RUNNING.search(line)):
                found.put(match.group(1))
                announced = True
        if not announced:
            found.put("")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._reader is not None:
                self._reader.join(10)  # it reads to the end of the pipe, then returns
            self._process.stderr.close()
            self._process = self._reader = None


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                patch.delenv(name)
        for name, value in DUMMY_ENV.items():
            patch.setenv(name, value)
        server = MotoServer()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
async def bucket(moto_server: MotoServer) -> str:
    """A new, empty bucket on the session's moto server."""
    name = new_bucket_name()
    async with raw_client(moto_server.url) as client:
        await client.create_bucket(Bucket=name)
    return name


_buckets = itertools.count()


def new_bucket_name() -> str:
    return f"collector-test-{os.getpid()}-{next(_buckets)}"


@asynccontextmanager
async def raw_client(endpoint_url: str) -> AsyncIterator:
    """A plain aiobotocore client, for a test to look at the bucket behind a destination's back."""
    async with get_session().create_client("s3", endpoint_url=endpoint_url, region_name="us-east-1") as client:
        yield client


# -- a proxy that misbehaves on cue --------------------------------------------------------------


def operation(request: web.BaseRequest) -> str:
    """The S3 operation a request is, as far as these tests need to tell."""
    query = request.query
    if request.method == "PUT" and "partNumber" in query:
        return "UploadPartCopy" if "x-amz-copy-source" in request.headers else "UploadPart"
    if request.method == "PUT" and "x-amz-copy-source" in request.headers:
        return "CopyObject"
    if request.method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if request.method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if request.method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        request.method, request.method
    )


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy-1</RequestId></Error>"
)


@dataclass
class FaultyProxy:
    """Forwards to `upstream`; `faults[operation]` is how many of the next ones get 503 SlowDown."""

    upstream: str
    faults: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[str, int]] = field(default_factory=list)  # (operation, status) in order
    uploading: int = 0
    peak_uploading: int = 0
    url: str = ""

    def count(self, op: str, status: int | None = None) -> int:
        return sum(1 for o, s in self.seen if o == op and (status is None or s == status))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = operation(request)
        body = await request.read()
        if self.faults.get(op, 0) > 0:
            self.faults[op] -= 1
            self.seen.append((op, 503))
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "expect")}
        if op == "UploadPart":
            self.uploading += 1
            self.peak_uploading = max(self.peak_uploading, self.uploading)
        try:
            async with self._session.request(
                request.method, self.upstream + request.raw_path, headers=headers, data=io.BytesIO(body)
            ) as answer:
                payload = await answer.read()
                self.seen.append((op, answer.status))
                skip = ("transfer-encoding", "content-encoding", "connection")
                if request.method != "HEAD":  # a HEAD answer keeps the length of the object
                    skip += ("content-length",)
                return web.Response(
                    status=answer.status,
                    body=payload or None,
                    headers={k: v for k, v in answer.headers.items() if k.lower() not in skip},
                )
        finally:
            if op == "UploadPart":
                self.uploading -= 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FaultyProxy]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        async with aiohttp.ClientSession(auto_decompress=False) as self._session:
            try:
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                host, port = runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
                yield self
            finally:
                await runner.cleanup()
