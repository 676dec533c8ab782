"""`Simulator`: the fake CloudDC that the demo, the tests and the benchmarks run against.

It serves two origins on loopback: the API (`url`) and an object store (`storage_url`) that
downloads may be redirected to. It knows the answers (`expected_archive`), can be told to
misbehave (`script`, `token`), and records what it received (`stats`, `calls`,
`exports_started`, `timeline`, `storage_requests`, `download_requests`; `snapshot` sums it up,
and the API origin serves that at ``GET /_sim/stats`` for out-of-process readers)::

    async with Simulator(SimConfig(servers=200, seed=0)) as sim:
        sim.script(sim.server_ids[0], download=["truncate", None])
        ...
        assert sim.stats["download", 200] == 2

Lifecycle timing uses the event loop's clock (or an injected `clock`), never the wall clock.
The ends of IAM tokens and pod identity keys (`identity`, `iam_url`, `pod_identity_url`) and
the signature's date check use the wall clock (or an injected `wall_clock`): clients compare
those with their own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import yaml
from aiohttp import web

from collector.simulator.app import CloudDC
from collector.simulator.archive import ArchiveStore
from collector.simulator.config import SimConfig
from collector.simulator.faults import DOWNLOAD, EXPORT, STATUS, FaultScript
from collector.simulator.fleet import Fleet, ServerProfile
from collector.simulator.identity import POD_IDENTITY_PATH, Identity
from collector.simulator.recorder import Recorder, SeenRequest
from collector.simulator.storage import StorageOrigin
from collector.simulator.transfer import ArchiveSender

SHUTDOWN_TIMEOUT = 0.5  # seconds a handler may run on after stop(); stalled downloads end sooner
# aiohttp refuses request lines over 8190 bytes with a logged traceback; a client that puts a
# hostile 10,000-character export id in its URL gets an ordinary 404 here instead.
MAX_LINE_BYTES = 64 * 1024


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Simulator:
    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimConfig()
        self.fleet = Fleet(self.config)
        self.recorder = Recorder()
        self.archives = ArchiveStore(
            self.config.seed, hostile=self.config.hostile_archives, chunk_bytes=self.config.chunk_bytes
        )
        self._script = FaultScript()
        clock = clock or _loop_time
        sender = ArchiveSender(
            self.archives, accept_ranges=self.config.accept_ranges, stall_seconds=self.config.stall_seconds
        )
        self._sender = sender
        self._storage = StorageOrigin(self.config, fleet=self.fleet, sender=sender, recorder=self.recorder, clock=clock)
        self._api = CloudDC(
            self.config,
            fleet=self.fleet,
            sender=sender,
            storage=self._storage,
            script=self._script,
            recorder=self.recorder,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self._revocations = 0

    # Running.

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on `host`:`port` (default: the config's; port 0 picks a free one)."""
        if self._runners:
            raise RuntimeError("simulator already started")
        host = host or self.config.host
        port = self.config.port if port is None else port
        self._sender.stopping = False
        self._api.started()
        self._storage.t0 = self._api.t0
        try:
            self._storage.url = await self._serve(self._storage.app(), host, 0)
            self.url = await self._serve(self._api.app(), host, port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop both origins. Stalled and in-flight responses are ended, not waited for."""
        self._sender.stopping = True
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _serve(self, app: web.Application, host: str, port: int) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, max_line_size=MAX_LINE_BYTES)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        return f"http://{_url_host(bound_host)}:{bound_port}"

    # The fleet.

    @property
    def storage_url(self) -> str:
        return self._storage.url

    @property
    def iam_url(self) -> str:
        """IAM's endpoint, as an inventory's ``auth: {iam: {endpoint}}`` gives it."""
        return self.url

    @property
    def pod_identity_url(self) -> str:
        """What ``HC_CONTAINER_CREDENTIALS_FULL_URI`` is set to for pod identity."""
        return self.url + POD_IDENTITY_PATH

    @property
    def identity(self) -> Identity:
        """IAM and pod identity: credentials issued (``tokens_issued``, ``credentials_issued``),
        refused, and API requests refused because theirs had ended (``expired_refused``)."""
        return self._api.identity

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @property
    def token(self) -> str:
        """The token the API accepts now. Assign to change it mid-run."""
        return self._api.token

    @token.setter
    def token(self, value: str) -> None:
        self._api.token = value

    def revoke_token(self) -> str:
        """Stop accepting the current token (401 from now on); returns the new accepted one."""
        self._revocations += 1
        self._api.token = f"{self.config.token}-renewed-{self._revocations}"
        return self._api.token

    @property
    def server_ids(self) -> list[str]:
        return self.fleet.ids

    @property
    def stuck_ids(self) -> list[str]:
        return self.fleet.stuck_ids

    @property
    def failing_ids(self) -> list[str]:
        return self.fleet.failing_ids

    def server(self, server_id: str) -> ServerProfile:
        """A server's profile: export duration, archive size, spellings. KeyError if unknown."""
        profile = self.fleet.get(server_id)
        if profile is None:
            raise KeyError(server_id)
        return profile

    def expected_archive(self, server_id: str) -> bytes:
        """Exactly the bytes a normal download of this server's archive serves."""
        return self.archives.data(server_id, self.server(server_id).archive_bytes)

    def archive_size(self, server_id: str) -> int:
        return self.server(server_id).archive_bytes

    def running_exports(self) -> int:
        """Exports started and neither completed nor failed yet."""
        return self._api.book.running(self._api.clock())

    # Faults.

    def script(
        self,
        server_id: str,
        *,
        export: Iterable[str | None] = (),
        status: Iterable[str | None] = (),
        download: Iterable[str | None] = (),
    ) -> None:
        """Queue faults for this server's next requests of each kind; None means a normal answer.

        Appends to what is already queued. Raises ValueError for a fault name that operation does
        not have (see `collector.simulator.faults`), KeyError for an unknown server.
        """
        self.server(server_id)
        self._script.add(EXPORT, server_id, export)
        self._script.add(STATUS, server_id, status)
        self._script.add(DOWNLOAD, server_id, download)

    def pending_faults(self, server_id: str) -> dict[str, list[str | None]]:
        """Scripted faults not yet used, per operation."""
        return {op: self._script.pending(op, server_id) for op in (EXPORT, STATUS, DOWNLOAD)}

    # What was received.

    @property
    def stats(self) -> Counter[tuple[str, int]]:
        """Requests by (operation, status); operations: export, status, download, list, storage."""
        return self.recorder.stats

    @property
    def calls(self) -> Counter[tuple[str, str]]:
        """API requests by (operation, server id), whatever their answer (a fresh Counter)."""
        return self.recorder.calls()

    @property
    def exports_started(self) -> Counter[str]:
        return self.recorder.exports_started

    @property
    def timeline(self) -> list[tuple[float, str, int]]:
        return self.recorder.timeline

    @property
    def storage_requests(self) -> list[SeenRequest]:
        return self.recorder.storage_requests

    @property
    def download_requests(self) -> list[SeenRequest]:
        return self.recorder.download_requests

    def snapshot(self, *, timeline: bool = True) -> dict[str, object]:
        """Counts, peaks and (with `timeline`) every request: what ``GET /_sim/stats`` answers."""
        return self._api.snapshot(timeline=timeline)

    def count(self, operation: str | None = None, status: int | None = None, server_id: str | None = None) -> int:
        """Requests matching every filter given, e.g. ``count("download", server_id=sid)``."""
        return self.recorder.count(operation, status, server_id)

    # Files for the collector.

    def write_inventory(self, path: str | os.PathLike[str]) -> Path:
        """Write an inventory YAML for this simulator, and its token file (mode 0600) beside it.

        The token file is ``<inventory stem>.token``, holding the token and a newline.
        """
        if not self.url:
            raise RuntimeError("start the simulator before writing its inventory")
        path = Path(path).absolute()
        token_file = path.with_name(f"{path.stem}.token")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(self.token + "\n")
        os.chmod(token_file, 0o600)  # O_CREAT's mode does not apply to an existing file
        inventory = {
            "endpoint": self.url,
            "project_id": self.project_id,
            "auth": {"token_file": str(token_file)},
            "servers": [{"id": server.id, "name": server.name} for server in self.fleet.profiles],
        }
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C one is much faster for big fleets
        path.write_text(yaml.dump(inventory, Dumper=dumper, sort_keys=False))
        return path


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
