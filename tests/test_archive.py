"""An archive is collected only when it is whole gzip; slow transfers and changed archives.

Damaged copies come from the simulator's scripted faults, over loopback, with a Content-Length
that matches what is sent: only the gzip stream itself can tell. A trickling server is caught
by a clock the test drives, never by waiting. The checker's own corner cases (members split
across chunks, a gzip bomb) are unit tests of `collector.transfer.gzipcheck`.
"""

from __future__ import annotations

import gzip
import itertools
import re
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from _fleet import archive_path, assert_exact, by_id, partials, sweep
from aiohttp import web

from collector.auth import StaticToken
from collector.clouddc.api import ArchiveResponse, CloudDC
from collector.control.throttle import RateLimiter, RetryPolicy, is_retryable
from collector.destinations.base import archive_name
from collector.destinations.local import LocalDestination
from collector.errors import ArchiveDamaged, ArchiveError, ExitCode, RequestTimeout
from collector.run.outcome import exit_code
from collector.simulator import SimConfig, Simulator
from collector.simulator.transfer import archive_etag
from collector.transfer import download
from collector.transfer.download import DownloadOptions, fetch_archive
from collector.transfer.gzipcheck import OUTPUT_BYTES, GzipCheck

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))
LARGE = dict(export_seconds=(0.05, 0.1), archive_bytes=(300_000, 400_000))
POLICY = RetryPolicy(base=0.01, cap=0.05, max_attempts=5, max_elapsed=30)

DAMAGE = {
    "damaged_short": r"the gzip stream stops before its end \(truncated after \d+ bytes\)",
    "damaged_header": r"bad gzip header",
    "damaged_trailing": r"bytes that are not gzip follow its end at byte \d+",
    "damaged_crc": r"its CRC-32 does not match its data",
}


def download_requests(sim: Simulator, server_id: str):
    return [r for r in sim.download_requests if r.server_id == server_id]


# -- damaged archives over loopback ---------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(DAMAGE))
async def test_damaged_archive_once_is_fetched_again_from_zero_and_exact(tmp_path, fast_settings, fault):
    async with Simulator(SimConfig(servers=2, seed=41, accept_ranges=True, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=[fault])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        _first, second = download_requests(sim, target)
    assert "Range" not in second.headers  # from zero, although the server takes ranges
    assert exit_code(outcome) is ExitCode.OK
    assert by_id(outcome)[target].attempts == 2
    assert partials(tmp_path) == []


@pytest.mark.parametrize("fault", sorted(DAMAGE))
async def test_damaged_archive_twice_fails_the_server_as_damaged_on_the_server(tmp_path, fast_settings, fault):
    async with Simulator(SimConfig(servers=2, seed=42, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=[fault, fault])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert sim.count("download", server_id=target) == 2  # not the policy's 5 attempts
        assert_exact(tmp_path, sim, sim.server_ids[1:])
    result = by_id(outcome)[target]
    assert result.state == "failed"
    assert result.error.startswith("archive damaged on the server: "), result.error
    assert re.search(DAMAGE[fault], result.error), result.error
    assert result.reason == "archive damaged on the server"
    assert not archive_path(tmp_path, sim, target).exists() and partials(tmp_path) == []
    assert exit_code(outcome) is ExitCode.PARTIAL


async def test_damage_is_final_for_the_retry_policy_other_archive_errors_are_not():
    assert not is_retryable(ArchiveDamaged("x"))
    assert is_retryable(ArchiveError("transfer cut off"))
    assert ArchiveDamaged("x").kind == "archive"


# -- the fetch itself, with options a sweep does not expose -----------------------------------------


@asynccontextmanager
async def client(sim: Simulator) -> AsyncIterator[CloudDC]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=2)
    async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
        yield CloudDC.alone(
            session, sim.url, sim.project_id, StaticToken(sim.token, "test"), limiter=RateLimiter(1000), policy=POLICY
        )


async def fetch(sim: Simulator, api: CloudDC, server_id: str, tmp_path, options: DownloadOptions):
    """Export (instant), then fetch the archive; returns it, its attempts and the errors retried."""
    export = await api.export(server_id)
    retried: list[BaseException] = []
    archive, attempts = await fetch_archive(
        api,
        server_id,
        export.export_id,
        LocalDestination(tmp_path),
        archive_name(sim.project_id, server_id),
        options,
        on_retry=lambda exc, attempt, wait: retried.append(exc),
    )
    return archive, attempts, retried


async def test_trickling_transfer_is_cut_as_too_slow_and_retried_exact(tmp_path):
    """The clock advances one second per reading: a trickle of 16-byte pieces is far below 100 B/s."""
    ticks = itertools.count()
    options = DownloadOptions(policy=POLICY, stall_floor=100, stall_window=5, clock=lambda: float(next(ticks)))
    # stall_seconds bounds the trickle, so a collector that never cuts it still ends (and fails below).
    config = SimConfig(
        servers=1, seed=43, export_seconds=(0, 0), stall_seconds=5, accept_ranges=True, archive_bytes=(300_000, 300_000)
    )
    async with Simulator(config) as sim, client(sim) as api:
        target = sim.server_ids[0]
        sim.script(target, download=["trickle"])
        archive, attempts, retried = await fetch(sim, api, target, tmp_path, options)
        expected = sim.expected_archive(target)
        second = download_requests(sim, target)[1]
    assert (tmp_path / archive.name).read_bytes() == expected
    assert attempts == 2
    assert len(retried) == 1 and isinstance(retried[0], RequestTimeout), retried
    assert "too slow" in str(retried[0]) and "under the floor of 100 bytes/s" in str(retried[0])
    assert int(re.fullmatch(r"bytes=(\d+)-", second.headers["Range"])[1]) >= len(expected) // 2  # kept


async def test_default_floor_is_one_kib_per_second_over_a_minute():
    options = DownloadOptions()
    assert (options.stall_floor, options.stall_window) == (1024, 60)


# -- If-Range --------------------------------------------------------------------------------------


@pytest.mark.parametrize("changed", [False, True], ids=["same-archive", "archive-changed"])
async def test_resume_sends_if_range_with_the_etag_and_a_changed_archive_restarts_from_zero(
    tmp_path, fast_settings, changed
):
    async with Simulator(SimConfig(servers=2, seed=44, accept_ranges=True, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["reset_mid", "archive_changed" if changed else None])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        requests = download_requests(sim, target)
        answered_206 = sim.count("download", 206, target)
        etag = archive_etag(sim.config.seed, target, sim.archive_size(target))
    assert len(requests) == 2
    assert "Range" in requests[1].headers
    assert requests[1].headers["If-Range"] == etag
    assert answered_206 == (0 if changed else 1)  # a changed archive is answered whole, and kept
    assert exit_code(outcome) is ExitCode.OK


def answer(**headers: str | None) -> ArchiveResponse:
    return ArchiveResponse(
        status=200,
        content_length=None,
        content_range=None,
        accept_ranges=True,
        content_disposition=None,
        request_id=None,
        content=None,
        **headers,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "etag, last_modified, expected",
    [
        ('"abc-1"', "Fri, 27 Nov 2026 10:00:00 GMT", '"abc-1"'),
        ('W/"abc-1"', "Fri, 27 Nov 2026 10:00:00 GMT", "Fri, 27 Nov 2026 10:00:00 GMT"),  # weak: never in If-Range
        (None, "Fri, 27 Nov 2026 10:00:00 GMT", "Fri, 27 Nov 2026 10:00:00 GMT"),
        ('"a\r\nX-Evil: 1"', None, None),
        ("abc", "yesterday", None),
        (None, None, None),
    ],
    ids=["strong-etag", "weak-etag", "date-only", "control-chars", "unquoted-and-no-date", "none"],
)
async def test_if_range_prefers_a_strong_etag_then_the_date_and_sends_nothing_malformed(etag, last_modified, expected):
    assert download._validator(answer(etag=etag, last_modified=last_modified)) == expected


# -- the checker ------------------------------------------------------------------------------------


def members(*texts: bytes) -> bytes:
    return b"".join(gzip.compress(text, mtime=0) for text in texts)


def fed_bytewise(data: bytes) -> GzipCheck:
    check = GzipCheck()
    for n in range(len(data)):
        check.feed([data[n : n + 1]])
    return check


async def test_multi_member_gzip_is_accepted_even_split_byte_by_byte():
    data = members(b"first member\n" * 50, b"", b"third\n")
    check = fed_bytewise(data)
    check.finish()
    assert check.complete and check.members == 3 and check.fed == len(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (members(b"log\n" * 100)[:-1], "truncated"),
        (members(b"log\n" * 100) + b"\x1f", "follow its end"),
        (members(b"log\n" * 100) + b"\x00\x00", "follow its end at byte"),
        (members(b"log\n" * 100) + b"\x1f\x8b", "truncated"),  # a second member that never came
    ],
    ids=["short-by-one", "half-a-magic-after", "zeros-after", "empty-second-member"],
)
async def test_anything_but_whole_members_is_damage(data, message):
    with pytest.raises(ArchiveDamaged, match=message):
        fed_bytewise(data).finish()


async def test_multi_member_archive_is_collected_exact_over_loopback(tmp_path):
    data = members(b"messages\n" * 5000, b"sel.log\n" * 3000)
    project, server = "0123456789abcdef0123456789abcdef", "2102313YJK10N1000001"

    async def archive(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get(f"/v1/{project}/physicalservers/{server}/logs/exports/1/content", archive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            api = CloudDC.alone(
                session,
                f"http://{host}:{port}",
                project,
                StaticToken("t", "test"),
                limiter=RateLimiter(1000),
                policy=POLICY,
            )
            stored, attempts = await fetch_archive(
                api,
                server,
                "1",
                LocalDestination(tmp_path),
                archive_name(project, server),
                DownloadOptions(policy=POLICY),
            )
    finally:
        await runner.cleanup()
    assert (tmp_path / stored.name).read_bytes() == data
    assert attempts == 1


def bomb(inflated: int, piece: int = 1024 * 1024) -> list[bytes]:
    """Gzip of `inflated` zero bytes, in 64 KiB pieces: about 1000 to 1."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(piece)
    data = b"".join(deflate.compress(zeros) for _ in range(inflated // piece)) + deflate.flush()
    return [data[n : n + 65536] for n in range(0, len(data), 65536)]


async def test_gzip_bomb_is_checked_in_bounded_memory():
    pieces = bomb(256 * 1024 * 1024)
    assert sum(map(len, pieces)) < 1024 * 1024
    check = GzipCheck()
    tracemalloc.start()
    try:
        check.feed(pieces)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check.finish()
    assert peak < 4 * OUTPUT_BYTES, peak  # 256 MiB inflated, a few hundred KiB held
