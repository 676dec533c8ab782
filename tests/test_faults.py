"""Every way a download or an export can go wrong, one at a time, over real loopback sockets.

Most tests script one fault for one server of a small simulated fleet and sweep it in-process:
the server is then either collected byte-for-byte (`sim.expected_archive`) or failed with a
reason that says why, and the others are collected either way. The few things the simulator
cannot do (TLS, odd `Content-Disposition` names, a full disk) get a tiny server here or a
real small tmpfs.
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import logging
import os
import re
import signal
import ssl
import stat
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import trustme
from _auth_servers import serving
from _fleet import archive_path, assert_exact, by_id, partials, sweep
from _mounts import fill, tmpfs
from _sockets import raw_http, raw_server
from aiohttp import web

from collector.auth import StaticToken
from collector.clouddc.api import CloudDC
from collector.control.throttle import RateLimiter, RetryPolicy
from collector.destinations import local as storage
from collector.destinations.base import WRITE_BATCH_BYTES, Archive, archive_name
from collector.destinations.local import LocalDestination
from collector.errors import APIError, AuthError, ExitCode, ProtocolError, StorageError
from collector.run.outcome import Outcome, exit_code
from collector.simulator import SimConfig, Simulator
from collector.simulator.archive import build_archive
from collector.sweep.pipeline import ServerResult
from collector.transfer.download import DownloadOptions, fetch_archive

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

SMALL = dict(export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192))
# Large enough that a fault "about half way" leaves a real partial body behind.
LARGE = dict(export_seconds=(0.05, 0.1), archive_bytes=(300_000, 400_000))


# -- sweeping the simulator ---------------------------------------------------------------------


def others(sim: Simulator, server_id: str) -> list[str]:
    return [sid for sid in sim.server_ids if sid != server_id]


def assert_failed_alone(tmp_path: Path, sim: Simulator, outcome: Outcome, server_id: str) -> ServerResult:
    """`server_id` failed and left nothing behind; every other server was collected exactly."""
    result = by_id(outcome)[server_id]
    assert result.state == "failed", result
    assert not archive_path(tmp_path, sim, server_id).exists()
    assert partials(tmp_path) == []
    assert_exact(tmp_path, sim, others(sim, server_id))
    assert exit_code(outcome) is ExitCode.PARTIAL
    return result


# -- tiny servers for what the simulator does not do -------------------------------------------

PROJECT = "0123456789abcdef0123456789abcdef"
SERVER = "2102313YJK10N1000001"
OTHER_SERVER = "2102313YJK10N1000002"
CONTENT = f"/v1/{PROJECT}/physicalservers/{SERVER}/logs/exports/1/content"


def api_client(session: aiohttp.ClientSession, endpoint: str, policy: RetryPolicy) -> CloudDC:
    credentials = StaticToken("test-token", "test")
    return CloudDC.alone(session, endpoint, PROJECT, credentials, limiter=RateLimiter(1000), policy=policy)


async def fetch_one(api: CloudDC, folder: Path) -> tuple[Archive, int]:
    """Fetch export "1" of SERVER into `folder`, retrying as the client's policy says."""
    return await fetch_archive(
        api, SERVER, "1", LocalDestination(folder), archive_name(PROJECT, SERVER), DownloadOptions(policy=api.policy)
    )


def plain_session(**kwargs) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=2)
    return aiohttp.ClientSession(auto_decompress=False, timeout=timeout, **kwargs)


def raw_answer(body: bytes, status: str = "200 OK", **headers: str) -> bytes:
    """An answer written by hand, Content-Length and all, whatever `body` really holds."""
    fields = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
    fields.update((name.replace("_", "-"), value) for name, value in headers.items())
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return (head + "Connection: close\r\n\r\n").encode("latin-1") + body


# -- broken transfers ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["truncate", "reset_mid", "chunked_cut", "no_length_eof"])
async def test_broken_transfer_is_retried_and_exact(tmp_path, fast_settings, fault):
    async with Simulator(SimConfig(servers=3, seed=11, **LARGE)) as sim:
        target = sim.server_ids[1]
        sim.script(target, download=[fault])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("download", server_id=target) == 2
    assert exit_code(outcome) is ExitCode.OK
    assert by_id(outcome)[target].attempts == 2
    assert partials(tmp_path) == []


async def test_html_page_answered_200_is_retried_and_exact(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=12, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["not_gzip"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("download", server_id=target) == 2
    assert exit_code(outcome) is ExitCode.OK


async def test_html_page_on_every_attempt_fails_the_server_without_leftovers(tmp_path, fast_settings):
    attempts = fast_settings.policy.max_attempts
    async with Simulator(SimConfig(servers=2, seed=12, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["not_gzip"] * attempts)
        outcome = await sweep(sim, tmp_path, fast_settings)
        result = assert_failed_alone(tmp_path, sim, outcome, target)
        assert sim.count("download", server_id=target) == attempts
    assert "gzip" in result.error


async def test_gzip_content_encoding_is_stored_as_served_not_decoded(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=13, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["gzip_encoding"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("download", server_id=target) == 1
        stored = archive_path(tmp_path, sim, target).read_bytes()
    assert stored.startswith(b"\x1f\x8b")
    assert exit_code(outcome) is ExitCode.OK


# -- size limit ---------------------------------------------------------------------------------


async def test_archive_over_the_size_limit_fails_that_server_others_collected(tmp_path, fast_settings):
    settings = replace(fast_settings, max_archive_bytes=100_000)
    async with Simulator(SimConfig(servers=3, seed=14, oversize_bytes=300_000, **SMALL)) as sim:
        target = sim.server_ids[1]
        sim.script(target, download=["oversize"])
        outcome = await sweep(sim, tmp_path, settings)
        result = assert_failed_alone(tmp_path, sim, outcome, target)
        assert sim.count("download", server_id=target) == 1  # not retried
    assert "limit of 100000" in result.error and "--max-archive-bytes" in result.error


async def test_archive_without_length_is_cut_off_at_the_size_limit(tmp_path, fast_settings):
    settings = replace(fast_settings, max_archive_bytes=100_000)
    async with Simulator(SimConfig(servers=1, seed=15, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["no_length_eof"])  # no Content-Length; half is > 100 kB
        outcome = await sweep(sim, tmp_path, settings)
        assert sim.count("download", server_id=target) == 1
    result = by_id(outcome)[target]
    assert result.state == "failed"
    assert "limit of 100000" in result.error and "--max-archive-bytes" in result.error
    assert not archive_path(tmp_path, sim, target).exists() and partials(tmp_path) == []


# -- resuming with Range ------------------------------------------------------------------------


def download_requests(sim: Simulator, server_id: str):
    return [r for r in sim.download_requests if r.server_id == server_id]


async def test_reset_transfer_resumes_with_range_from_the_bytes_kept(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=16, accept_ranges=True, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["reset_mid"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        first, second = download_requests(sim, target)
        assert sim.count("download", 206, target) == 1
    assert "Range" not in first.headers
    resumed_at = re.fullmatch(r"bytes=(\d+)-", second.headers["Range"])
    assert resumed_at and 0 < int(resumed_at[1]) < sim.archive_size(target)
    assert exit_code(outcome) is ExitCode.OK


@pytest.mark.parametrize("fault", ["range_ignored", "range_wrong_offset"])
async def test_wrong_answer_to_a_range_restarts_from_zero_never_appends(tmp_path, fast_settings, fault):
    async with Simulator(SimConfig(servers=2, seed=17, accept_ranges=True, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["reset_mid", fault])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        requests = download_requests(sim, target)
    assert "Range" in requests[1].headers
    # After the bad answer we ask for everything again (or, for a 200 to a range, keep it all).
    assert all("Range" not in r.headers for r in requests[2:])
    assert len(requests) == (2 if fault == "range_ignored" else 3)
    assert exit_code(outcome) is ExitCode.OK


async def test_range_answered_from_another_offset_is_never_written(tmp_path):
    """A 206 from the wrong offset, even one that starts like a gzip file, restarts from zero."""
    # Log bundles hold rotated .gz logs; stored in the outer gzip, their magic shows up inside it.
    archive = gzip.compress(
        b"log line\n" * 2000 + gzip.compress(b"rotated log\n") + b"log line\n" * 2000, compresslevel=0, mtime=0
    )
    wrong = archive.index(b"\x1f\x8b", 2)
    size = len(archive)
    ranges: list[str | None] = []

    def respond(head: bytes) -> bytes:
        asked = re.search(rb"\r\nRange: bytes=(\d+)-\r\n", head, re.IGNORECASE)
        ranges.append(asked and asked[1].decode())
        if len(ranges) == 1:  # cut off half way
            return raw_answer(archive, Accept_Ranges="bytes")[: -size // 2]
        if len(ranges) == 2:  # the rest asked for; bytes from elsewhere sent, labelled as such
            return raw_answer(
                archive[wrong:],
                "206 Partial Content",
                Accept_Ranges="bytes",
                Content_Range=f"bytes {wrong}-{size - 1}/{size}",
            )
        if asked:
            start = int(asked[1])
            return raw_answer(
                archive[start:],
                "206 Partial Content",
                Accept_Ranges="bytes",
                Content_Range=f"bytes {start}-{size - 1}/{size}",
            )
        return raw_answer(archive, Accept_Ranges="bytes")

    async with raw_http(respond) as url, plain_session() as session:
        api = api_client(session, url, RetryPolicy(base=0.01, cap=0.05, max_attempts=5))
        stored, _ = await fetch_one(api, tmp_path)
    assert (tmp_path / stored.name).read_bytes() == archive
    assert ranges[0] is None and ranges[1] is not None and ranges[2] is None, ranges


async def test_stalled_transfer_times_out_and_is_retried_exact(tmp_path, fast_settings):
    settings = replace(fast_settings, read_timeout=0.5)
    async with Simulator(SimConfig(servers=2, seed=18, **LARGE)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["stall"])
        outcome = await sweep(sim, tmp_path, settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("download", server_id=target) == 2
    assert exit_code(outcome) is ExitCode.OK


# -- exports that never complete ----------------------------------------------------------------


@pytest.mark.parametrize(
    "case, expected",
    [
        ("stuck", r"export stuck at \d+%: not completed after [\d.]+ s \(--export-timeout 0.6 s\)"),
        (
            "backwards",
            r"export progress went backwards \(\d+% -> \d+%\) and it did not complete after [\d.]+ s "
            r"\(--export-timeout 0.6 s\)",
        ),
        ("unknown", r"export status 'Exploding' not understood after [\d.]+ s \(--export-timeout 0.6 s\)"),
    ],
    ids=["stuck", "backwards", "unknown"],
)
async def test_export_that_never_completes_fails_with_a_reason_saying_why(tmp_path, fast_settings, case, expected):
    settings = replace(fast_settings, export_timeout=0.6)
    # Exports of 3 s cannot complete within the 0.6 s allowed, whatever the scripted faults.
    config = SimConfig(
        servers=2, seed=19, export_seconds=(3, 3), archive_bytes=(4096, 8192), stuck=1 if case == "stuck" else 0
    )
    async with Simulator(config) as sim:
        target = sim.stuck_ids[0] if case == "stuck" else sim.server_ids[0]
        if case == "backwards":
            sim.script(target, status=[None, None] + ["backwards"] * 40)
        elif case == "unknown":
            sim.script(target, status=["unknown"] * 40)
        outcome = await sweep(sim, tmp_path, settings)
        assert sim.exports_started[target] == 1
    result = by_id(outcome)[target]
    assert result.state == "failed"
    assert re.search(expected, result.error), result.error
    assert not archive_path(tmp_path, sim, target).exists()


# -- exports that vanish ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["status", "download"])
async def test_vanished_export_is_asked_for_again_and_collected(tmp_path, fast_settings, where):
    async with Simulator(SimConfig(servers=2, seed=20, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, **{where: ["404"]})
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert sim.exports_started[target] == 2
        assert sim.count(where, 404, target) == 1
        assert_exact(tmp_path, sim, sim.server_ids)
    assert exit_code(outcome) is ExitCode.OK


async def test_export_vanishing_on_every_poll_fails_after_one_renewal(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=21, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, status=["404"] * 10)
        outcome = await sweep(sim, tmp_path, fast_settings)
        result = assert_failed_alone(tmp_path, sim, outcome, target)
        assert sim.exports_started[target] == 2
    assert "vanished" in result.error


# -- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["redirect_storage", "redirect", "redirect_downloads"])
async def test_download_redirected_to_storage_is_followed_without_credentials(tmp_path, fast_settings, how):
    config = SimConfig(servers=2, seed=22, redirect_downloads=how == "redirect_downloads", **SMALL)
    async with Simulator(config) as sim:
        target = sim.server_ids[0]
        if how != "redirect_downloads":
            sim.script(target, download=[how])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        seen = sim.storage_requests
    assert {r.server_id for r in seen} >= {target}
    for request in seen:
        assert "X-Auth-Token" not in request.headers and "Authorization" not in request.headers, request
    assert exit_code(outcome) is ExitCode.OK


@pytest.mark.parametrize("where", ["export", "status"])
async def test_redirect_on_export_or_status_fails_the_server_and_is_not_followed(tmp_path, fast_settings, where):
    async with Simulator(SimConfig(servers=2, seed=23, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, **{where: ["redirect"]})
        outcome = await sweep(sim, tmp_path, fast_settings)
        result = assert_failed_alone(tmp_path, sim, outcome, target)
        assert sim.storage_requests == []
    assert "redirect" in result.error


async def test_https_download_redirected_to_http_is_refused(tmp_path):
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    archive = build_archive(SERVER, 8192, seed=0)
    plain_hits: list[str] = []

    async def plain(request: web.Request) -> web.Response:
        plain_hits.append(request.path)
        return web.Response(body=archive)

    plain_app = web.Application()
    plain_app.router.add_get("/{tail:.*}", plain)
    async with serving(plain_app) as plain_url:

        async def downgrade(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": f"{plain_url}/bucket/x.tar.gz"})

        tls_app = web.Application()
        tls_app.router.add_get(CONTENT, downgrade)
        async with (
            serving(tls_app, server_tls) as tls_url,
            plain_session(connector=aiohttp.TCPConnector(ssl=client_tls)) as session,
        ):
            api = api_client(session, tls_url, RetryPolicy(base=0.01, cap=0.05, max_attempts=3))
            with pytest.raises(ProtocolError, match="refused redirect from https to http"):
                await fetch_one(api, tmp_path)
    assert plain_hits == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("cut", [False, True], ids=["whole-body", "body-cut-short"])
async def test_storage_refusing_a_redirected_download_fails_that_download_not_the_run(tmp_path, cut):
    """Object storage's 403 (an expired presigned URL) is not our credentials being rejected."""
    refusal = raw_answer(
        b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        "403 Forbidden",
        Content_Type="application/xml",
    )
    async with raw_http(lambda head: refusal[:-20] if cut else refusal) as storage_url:

        async def to_storage(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": f"{storage_url}/bucket/x?X-Signature=old"})

        app = web.Application()
        app.router.add_get(CONTENT, to_storage)
        async with serving(app) as url, plain_session() as session:
            api = api_client(session, url, RetryPolicy(base=0.01, cap=0.05, max_attempts=3))
            with pytest.raises(APIError) as refused:
                await fetch_one(api, tmp_path)
    assert refused.value.status == 403 and not isinstance(refused.value, AuthError)
    assert "redirected to 127.0.0.1" in str(refused.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# -- names and paths on our side ----------------------------------------------------------------


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="../../x"',
        'attachment; filename="{outside}"',
        'attachment; filename="x\x01y\x1b[2J.tar.gz"',
        f"attachment; filename={OTHER_SERVER}-dump.tar.gz",
        "attachment; filename*=UTF-8''..%2F..%2Fx%00.tar.gz",
    ],
    ids=["parent-dirs", "absolute", "control-chars", "other-server", "rfc5987-nul"],
)
async def test_server_suggested_file_name_is_ignored_and_warned_once(tmp_path, caplog, disposition):
    """The name comes from our ids; the server's suggestion is logged once per transfer."""
    outside = tmp_path / "outside"
    disposition = disposition.replace("{outside}", str(outside))
    archive = build_archive(SERVER, 8192, seed=0)
    out = tmp_path / "out"
    other_file = out / archive_name(PROJECT, OTHER_SERVER)
    other_file.parent.mkdir(mode=0o700, parents=True)
    other_file.write_bytes(b"the other server's archive")
    caplog.set_level(logging.WARNING, logger="collector.transfer.download")
    # Both answers suggest the name: an HTML page (retried), then the archive.
    bodies = iter([b"<html>busy</html>", archive])

    def respond(head: bytes) -> bytes:
        return raw_answer(next(bodies), Content_Disposition=disposition)

    async with raw_http(respond) as url, plain_session() as session:
        api = api_client(session, url, RetryPolicy(base=0.01, cap=0.05, max_attempts=3))
        archive_info, attempts = await fetch_one(api, out)
    assert attempts == 2
    assert archive_info.name == archive_name(PROJECT, SERVER)
    assert (out / archive_info.name).read_bytes() == archive
    assert other_file.read_bytes() == b"the other server's archive"
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    assert files == sorted(f"out/{archive_name(PROJECT, sid)}" for sid in (SERVER, OTHER_SERVER))
    warnings = [r.getMessage() for r in caplog.records if "server-suggested file name" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith(f"saving as {SERVER}-dump.tar.gz")
    assert warnings[0].isprintable()  # no control characters reach the log


async def test_content_disposition_path_from_the_simulator_is_ignored(tmp_path, fast_settings, caplog):
    caplog.set_level(logging.WARNING, logger="collector.transfer.download")
    async with Simulator(SimConfig(servers=2, seed=24, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["evil_disposition"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
    assert exit_code(outcome) is ExitCode.OK
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    assert [r.getMessage() for r in caplog.records if "server-suggested" in r.getMessage()] == [
        f"{target}: ignoring server-suggested file name '../../x'; saving as {target}-dump.tar.gz"
    ]


async def test_symlinks_planted_at_part_and_final_paths_are_not_followed(tmp_path, fast_settings):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim_part, victim_final = outside / "part-victim", outside / "final-victim"
    victim_part.write_bytes(b"precious 1")
    victim_final.write_bytes(b"precious 2")
    async with Simulator(SimConfig(servers=2, seed=25, **SMALL)) as sim:
        target = sim.server_ids[0]
        final = archive_path(tmp_path, sim, target)
        final.parent.mkdir(mode=0o700, parents=True)
        final.with_name(final.name + ".part").symlink_to(victim_part)
        final.symlink_to(victim_final)
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
    assert exit_code(outcome) is ExitCode.OK
    assert victim_part.read_bytes() == b"precious 1" and victim_final.read_bytes() == b"precious 2"
    assert not final.is_symlink() and stat.S_ISREG(final.lstat().st_mode)
    assert not os.path.lexists(final.with_name(final.name + ".part"))


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


async def test_archives_are_0600_in_a_0700_project_folder_whatever_the_umask(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=26, **SMALL)) as sim:
        with umask(0):
            outcome = await sweep(sim, tmp_path, fast_settings)
        folder = tmp_path / "out" / sim.project_id
        files = [archive_path(tmp_path, sim, sid) for sid in sim.server_ids]
    assert exit_code(outcome) is ExitCode.OK
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600, 0o600]


# -- retried API errors -------------------------------------------------------------------------


async def test_500s_on_download_are_retried_then_exact(tmp_path, fast_settings):
    async with Simulator(SimConfig(servers=2, seed=27, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, download=["500", "500"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("download", 500, target) == 2 and sim.count("download", 200, target) == 1
    assert exit_code(outcome) is ExitCode.OK
    assert by_id(outcome)[target].attempts == 3


async def test_429_on_export_waits_at_least_retry_after_then_collects(tmp_path, fast_settings, caplog):
    caplog.set_level(logging.INFO, logger="collector.sweep.pipeline")
    async with Simulator(SimConfig(servers=2, seed=28, retry_after_seconds=1, **SMALL)) as sim:
        target = sim.server_ids[0]
        sim.script(target, export=["429"])
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        assert sim.count("export", 429, target) == 1 and sim.exports_started[target] == 1
    assert exit_code(outcome) is ExitCode.OK
    assert by_id(outcome)[target].attempts == 2
    assert outcome.throttled == 1
    # The wait the retry policy chose (not a measured time): Retry-After is its floor.
    waits = [float(m[1]) for r in caplog.records if (m := re.search(r"retry 1 in ([\d.]+) s", r.getMessage()))]
    assert waits and min(waits) >= 1.0


# -- a full disk --------------------------------------------------------------------------------


async def test_full_disk_fails_that_server_removes_its_part_and_the_run_goes_on(tmp_path, fast_settings):
    """A real 1 MiB tmpfs holds the project's archives only (the journal stays on the big disk),
    and one transfer runs at a time, so the other archives fit once the big one's `.part` is gone.
    """
    config = SimConfig(servers=3, seed=29, oversize_bytes=2 * 1024 * 1024, **SMALL)
    settings = replace(fast_settings, downloads=1)
    async with Simulator(config) as sim:
        target = sim.server_ids[1]
        sim.script(target, download=["oversize"])  # 2 MiB: more than the disk holds
        (tmp_path / "out").mkdir(mode=0o700)
        with tmpfs(tmp_path / "out" / sim.project_id, "1m"):
            outcome = await sweep(sim, tmp_path, settings)
            result = assert_failed_alone(tmp_path, sim, outcome, target)
        assert sim.count("download", server_id=target) == 1  # a full disk is not the server's fault
    assert "No space left on device" in result.error


@pytest.mark.parametrize(
    "archive",
    [
        # A small archive waits in memory until commit: that is where the full disk shows.
        pytest.param(gzip.compress(b"one short log line\n", mtime=0), id="at-commit"),
        # A big one is written one batch behind the socket: the failed write still ends it.
        pytest.param(build_archive(SERVER, 5 * 1024 * 1024, seed=3), id="while-streaming"),
    ],
)
async def test_full_disk_removes_the_part_and_says_why(tmp_path, archive):
    """A real tmpfs, filled to the last byte before the transfer: the `.part` can be created
    (that takes an inode, not a block), and the first byte written to it cannot."""
    with tmpfs(tmp_path / "disk", "256k") as disk:
        destination = disk / "out"
        destination.mkdir(mode=0o700)
        fill(disk)
        async with raw_http(lambda head: raw_answer(archive)) as url, plain_session() as session:
            api = api_client(session, url, RetryPolicy(base=0.01, cap=0.05, max_attempts=3))
            with pytest.raises(StorageError, match="No space left on device"):
                await fetch_one(api, destination)
        assert [p for p in destination.rglob("*") if not p.is_dir()] == []


# -- streaming to disk --------------------------------------------------------------------------


def files_open_under(folder: Path) -> list[str]:
    """What this process holds open in `folder` (also files removed since)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
async def test_cancelled_transfer_waits_for_the_write_in_flight_then_closes_and_removes(tmp_path):
    """Cancelled mid-body (a second signal, say): no `.part`, no descriptor left open."""
    archive = build_archive(SERVER, 6 * 1024 * 1024, seed=4)
    released = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw_answer(archive)[: 4 * 1024 * 1024])  # then hold the rest back
        await writer.drain()
        await released.wait()
        writer.close()

    destination = LocalDestination(tmp_path)
    name = archive_name(PROJECT, SERVER)
    part = tmp_path / (name + ".part")
    async with raw_server(answer) as url:
        try:
            async with plain_session() as session:
                api = api_client(session, url, RetryPolicy(base=0.01, cap=0.05, max_attempts=1))
                task = asyncio.ensure_future(
                    fetch_archive(api, SERVER, "1", destination, name, DownloadOptions(policy=api.policy))
                )
                for _ in range(500):  # until the .part exists and holds a few MiB: writes are under way
                    await asyncio.sleep(0.01)
                    if part.exists() and part.stat().st_size >= 2 * 1024 * 1024:
                        break
                assert files_open_under(tmp_path) == [str(part)]  # the check can see what it looks for
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            released.set()
    assert not part.exists() and not (tmp_path / name).exists()
    assert files_open_under(tmp_path) == []


async def test_archive_streamed_across_many_writes_is_exact(tmp_path, fast_settings):
    """Over 16 MiB, so the file is written in many batches, one in flight while the next arrives."""
    size = 16 * 1024 * 1024 + 3 * WRITE_BATCH_BYTES + 12345  # a local file's batch
    config = SimConfig(servers=2, seed=31, export_seconds=(0.05, 0.1), archive_bytes=(size, size))
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, fast_settings)
        assert_exact(tmp_path, sim, sim.server_ids)
        for result in outcome.results:
            assert result.sha256 == hashlib.sha256(sim.expected_archive(result.server_id)).hexdigest()
    assert exit_code(outcome) is ExitCode.OK


def test_short_writes_are_continued_where_they_stopped():
    """`write` may write less than asked (a signal, a nearly full disk): the rest follows, in order.

    A real short write: a writer thread blocks in `write` on a full pipe of one page, and a
    signal sent to that thread ends the call with what it had written so far.
    """
    chunks = [bytes([n]) * (20_000 + n) for n in range(1, 8)]  # each more than the pipe holds
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    interrupted = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: interrupted.append(signum))
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            storage.write_all(write_end, chunks)
        except BaseException as exc:  # handed to the test thread
            failed.append(exc)
        finally:
            os.close(write_end)

    thread = threading.Thread(target=writer)
    received = bytearray()
    try:
        thread.start()
        for _ in range(2):  # twice: in the first chunk, then again in what is left of it
            for _ in range(1000):  # until the pipe is full: the writer is blocked inside write
                if int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, bytes(4)), "little") >= capacity:
                    break
                time.sleep(0.005)
            signal.pthread_kill(thread.ident, signal.SIGUSR1)
            for _ in range(1000):  # until the handler has run: the write returned short
                if interrupted:
                    break
                time.sleep(0.005)
            assert interrupted
            interrupted.clear()
            received += os.read(read_end, capacity)  # room again: the writer goes on with the rest
        while block := os.read(read_end, 65536):
            received += block
    finally:
        thread.join(10)
        signal.signal(signal.SIGUSR1, previous)
        os.close(read_end)
    assert not failed, failed
    assert bytes(received) == b"".join(chunks)
