"""Sanity tests of the CloudDC simulator itself, over real loopback sockets."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import yaml
from _clock import FakeClock

from collector.simulator import DEFAULT_PROJECT_ID, DEFAULT_TOKEN, SimConfig, Simulator, hostile
from collector.simulator.archive import build_archive
from collector.simulator.audit import audit_output
from collector.simulator.cli import add_arguments, bytes_range, config_from_args, seconds_range
from collector.simulator.fleet import COMPLETED_WORDS, FAILED_WORDS, RUNNING_WORDS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

FAST = dict(servers=5, export_seconds=(0.05, 0.1), archive_bytes=(16384, 65536))


def client(sim: Simulator, **kwargs) -> aiohttp.ClientSession:
    headers = {"X-Auth-Token": sim.token, "Accept-Encoding": "identity"}
    return aiohttp.ClientSession(auto_decompress=False, headers=headers, **kwargs)


def exports_url(sim: Simulator, sid: str) -> str:
    return f"{sim.url}/v1/{sim.project_id}/physicalservers/{sid}/logs/exports"


def percent(value: str | int) -> int:
    return int(str(value).rstrip("%"))


async def start_export(session: aiohttp.ClientSession, sim: Simulator, sid: str) -> str:
    async with session.post(exports_url(sim, sid)) as response:
        assert response.status == 202
        return (await response.json(content_type=None))["export_id"]


async def completed_export(session: aiohttp.ClientSession, sim: Simulator, sid: str) -> str:
    export_id = await start_export(session, sim, sid)
    await asyncio.sleep(sim.server(sid).export_seconds)
    return export_id


def content_url(sim: Simulator, sid: str, export_id: str) -> str:
    return f"{exports_url(sim, sid)}/{export_id}/content"


async def test_download_is_a_real_tar_gz_equal_to_expected_archive():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[1]
        export_id = await completed_export(session, sim, sid)
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream;charset=UTF-8"
            assert response.headers["Content-Disposition"] == f"attachment; filename={sid}-dump.tar.gz"
            assert response.headers["X-Request-Id"]
            body = await response.read()
    assert body == sim.expected_archive(sid)
    assert body[:2] == b"\x1f\x8b"
    assert len(body) == sim.archive_size(sid)
    assert 16384 <= len(body) <= 65536
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
    assert f"{sid}/var/log/messages" in names and f"{sid}/bmc/sel.log" in names


def test_archives_are_deterministic_and_exactly_sized():
    first = build_archive("2102313YJK10N1000042", 100_000, seed=7)
    assert first == build_archive("2102313YJK10N1000042", 100_000, seed=7)
    assert first != build_archive("2102313YJK10N1000042", 100_000, seed=8)
    assert len(first) == 100_000
    big = build_archive("2102313YJK10N1000042", 3 * 65536 + 17, seed=0)
    with tarfile.open(fileobj=io.BytesIO(big), mode="r:gz") as tar:
        assert sum(member.size for member in tar.getmembers()) > 150_000


async def test_export_runs_then_completes_with_server_spellings():
    clock = FakeClock()
    config = SimConfig(servers=3, export_seconds=(10, 10))
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        async with session.post(exports_url(sim, sid)) as response:
            assert response.status == 202
            assert response.headers["Content-Type"] == "application/octet-stream;charset=UTF-8"
            assert response.headers["Content-Disposition"] == f"attachment; filename={sid}-dump.tar.gz"
            created = await response.json(content_type=None)
        assert created["export_id"] == "1"
        status_url = f"{exports_url(sim, sid)}/{created['export_id']}"
        clock.advance(3.5)
        async with session.get(status_url) as response:
            running = await response.json(content_type=None)
        assert running["status"] in RUNNING_WORDS
        assert percent(running["percentage"]) == 35
        assert running["created_at"].endswith(("Z", "+00:00"))
        clock.advance(6.5)
        async with session.get(status_url) as response:
            done = await response.json(content_type=None)
        assert done["status"] in COMPLETED_WORDS and percent(done["percentage"]) == 100
        assert sim.exports_started[sid] == 1
        assert sim.stats["status", 200] == 2


async def test_stuck_and_failing_servers():
    clock = FakeClock()
    config = SimConfig(servers=4, stuck=1, failing=1, export_seconds=(1, 1))
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        assert not set(sim.stuck_ids) & set(sim.failing_ids)
        stuck, failing = sim.stuck_ids[0], sim.failing_ids[0]
        ids = {sid: await start_export(session, sim, sid) for sid in (stuck, failing)}
        clock.advance(3600)
        async with session.get(f"{exports_url(sim, stuck)}/{ids[stuck]}") as response:
            body = await response.json(content_type=None)
        assert body["status"] in RUNNING_WORDS and percent(body["percentage"]) < 100
        async with session.get(f"{exports_url(sim, failing)}/{ids[failing]}") as response:
            body = await response.json(content_type=None)
        assert body["status"] in FAILED_WORDS
        async with session.get(content_url(sim, failing, ids[failing])) as response:
            assert response.status == 409
            assert (await response.json())["error_code"] == "CLOUDDC.0409"


async def test_unknown_server_export_and_early_download():
    async with Simulator(SimConfig(servers=2, export_seconds=(5, 5))) as sim, client(sim) as session:
        async with session.post(exports_url(sim, "2102313YJK10N1999999")) as response:
            assert response.status == 404
            assert (await response.json())["error_code"] == "CLOUDDC.0404"
        sid = sim.server_ids[0]
        async with session.get(f"{exports_url(sim, sid)}/77") as response:
            assert response.status == 404
        export_id = await start_export(session, sim, sid)
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.status == 409
        async with session.get(f"{sim.url}/v1/other-project/physicalservers") as response:
            assert response.status == 404
            assert response.headers["X-Request-Id"]


async def test_expired_export_answers_404():
    clock = FakeClock()
    config = SimConfig(servers=1, export_seconds=(1, 1), export_ttl=60)
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await start_export(session, sim, sid)
        clock.advance(60)
        async with session.get(f"{exports_url(sim, sid)}/{export_id}") as response:
            assert response.status == 200
        clock.advance(2)
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.status == 404


async def test_bad_token_is_401_and_token_can_be_revoked():
    async with Simulator(SimConfig(servers=2)) as sim:
        async with client(sim) as session:
            url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
            async with session.get(url) as response:
                assert response.status == 200
            old = sim.token
            new = sim.revoke_token()
            assert new != old
            async with session.get(url) as response:
                assert response.status == 401
                body = await response.json()
        assert body["error_code"] == "APIGW.0301"
        assert body["error_msg"].startswith("Incorrect IAM authentication information")
        async with client(sim) as session, session.get(url) as response:
            assert response.status == 200
        assert sim.stats["list", 401] == 1


async def test_rate_limit_answers_429_with_retry_after():
    clock = FakeClock()
    async with Simulator(SimConfig(servers=2, rate_limit=2), clock=clock) as sim, client(sim) as session:
        url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        statuses, retry_afters = [], []
        for _ in range(4):
            async with session.get(url) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert (await response.json())["error_code"] == "APIGW.0308"
                    retry_afters.append(int(response.headers["Retry-After"]))
        assert statuses == [200, 200, 429, 429]
        assert retry_afters == [1, 1]
        clock.advance(0.5)
        async with session.get(url) as response:
            assert response.status == 200
        assert sim.stats["list", 429] == 2 and sim.stats["list", 200] == 3


async def test_rate_burst_sets_how_many_requests_get_through_at_once():
    clock = FakeClock()
    config = SimConfig(servers=2, rate_limit=100, rate_burst=3)
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        statuses = []
        for _ in range(5):
            async with session.get(url) as response:
                statuses.append(response.status)
        assert statuses == [200, 200, 200, 429, 429]
        clock.advance(1.0)  # a second refills 100 tokens, but the bucket holds 3
        for _ in range(4):
            async with session.get(url) as response:
                statuses.append(response.status)
        assert statuses[5:] == [200, 200, 200, 429]


async def test_rate_limit_without_retry_after_header():
    config = SimConfig(servers=1, rate_limit=1, retry_after=False)
    async with Simulator(config) as sim, client(sim) as session:
        url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        async with session.get(url), session.get(url) as response:
            assert response.status == 429
            assert "Retry-After" not in response.headers


async def test_max_concurrent_exports_answers_429_until_one_ends():
    clock = FakeClock()
    config = SimConfig(servers=3, export_seconds=(2.5, 2.5), max_concurrent_exports=2)
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        first, second, third = sim.server_ids
        await start_export(session, sim, first)
        await start_export(session, sim, second)
        async with session.post(exports_url(sim, third)) as response:
            assert response.status == 429
            assert (await response.json())["error_code"] == "APIGW.0308"
            assert response.headers["Retry-After"] == "3"
        assert sim.running_exports() == 2
        clock.advance(2.5)
        await start_export(session, sim, third)
        assert sim.exports_started == {first: 1, second: 1, third: 1}
        assert sim.stats["export", 429] == 1


async def test_list_servers_pages_with_markers():
    async with Simulator(SimConfig(servers=7)) as sim, client(sim) as session:
        url = f"{sim.url}/v1/{sim.project_id}/physicalservers"
        seen, marker = [], None
        while True:
            params = {"limit": "3", **({"marker": marker} if marker else {})}
            async with session.get(url, params=params) as response:
                body = await response.json()
            assert body["count"] == 7
            assert body["page_info"]["current_count"] == len(body["servers"])
            seen += [server["id"] for server in body["servers"]]
            marker = body["page_info"].get("next_marker")
            if marker is None:
                break
        assert seen == sim.server_ids
        assert all(len(sid) == 20 for sid in seen)
        async with session.get(url, params={"limit": "1001"}) as response:
            assert response.status == 400


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("500", 500, "CLOUDDC.0500"),
        ("503", 503, "CLOUDDC.0503"),
        ("401", 401, "APIGW.0301"),
        ("404", 404, "CLOUDDC.0404"),
    ],
)
async def test_scripted_error_statuses(fault, status, code):
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        sim.script(sid, export=[fault, None])
        async with session.post(exports_url(sim, sid)) as response:
            assert response.status == status
            assert (await response.json())["error_code"] == code
        await start_export(session, sim, sid)
        assert sim.stats["export", status] == 1 and sim.stats["export", 202] == 1
        assert sim.count("export", server_id=sid) == 2 and sim.count(status=status) == 1
        assert sim.count("export", status, sid) == 1 and sim.count(server_id=sim.server_ids[1]) == 0
        assert sim.calls["export", sid] == 2
        assert sim.pending_faults(sid)["export"] == []


async def test_scripted_429_with_and_without_retry_after():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await start_export(session, sim, sid)
        sim.script(sid, status=["429", "429-no-retry-after"])
        async with session.get(f"{exports_url(sim, sid)}/{export_id}") as response:
            assert response.status == 429 and response.headers["Retry-After"] == "1"
        async with session.get(f"{exports_url(sim, sid)}/{export_id}") as response:
            assert response.status == 429 and "Retry-After" not in response.headers


async def test_scripted_reset_drops_the_connection():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        sim.script(sid, export=["reset"])
        with pytest.raises(aiohttp.ClientError):
            async with session.post(exports_url(sim, sid)) as response:
                await response.read()
        await start_export(session, sim, sid)
        assert sim.stats["export", 0] == 1


async def test_scripted_redirect_points_at_the_storage_origin():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        sim.script(sid, export=["redirect"])
        async with session.post(exports_url(sim, sid), allow_redirects=False) as response:
            assert response.status == 302
            path = exports_url(sim, sid).removeprefix(sim.url)
            assert response.headers["Location"] == sim.storage_url + path


async def test_status_faults_backwards_unknown_failed():
    clock = FakeClock()
    config = SimConfig(servers=1, export_seconds=(1, 1))
    async with Simulator(config, clock=clock) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await start_export(session, sim, sid)
        url = f"{exports_url(sim, sid)}/{export_id}"
        sim.script(sid, status=[None, "backwards", "unknown", "failed"])
        clock.advance(0.5)
        async with session.get(url) as response:
            before = percent((await response.json(content_type=None))["percentage"])
        async with session.get(url) as response:
            body = await response.json(content_type=None)
        assert percent(body["percentage"]) < before
        async with session.get(url) as response:
            assert (await response.json(content_type=None))["status"] == "Exploding"
        for _ in range(2):  # a scripted failure sticks
            async with session.get(url) as response:
                assert (await response.json(content_type=None))["status"] in FAILED_WORDS
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.status == 409


def test_script_rejects_faults_the_operation_lacks():
    sim = Simulator(SimConfig(servers=1))
    with pytest.raises(ValueError):
        sim.script(sim.server_ids[0], export=["truncate"])
    with pytest.raises(ValueError):
        sim.script(sim.server_ids[0], status=["explode"])
    with pytest.raises(KeyError):
        sim.script("nope", download=[None])


async def fetch_with_fault(fault: str | None, **config) -> tuple[Simulator, int, bytes, BaseException | None]:
    """Download once with `fault` scripted: (sim, status, body read, error raised while reading)."""
    async with Simulator(SimConfig(**{**FAST, **config})) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=[fault])
        status, received, error = 0, bytearray(), None
        try:
            async with session.get(content_url(sim, sid, export_id), allow_redirects=False) as response:
                status = response.status
                async for chunk in response.content.iter_any():
                    received += chunk
        except aiohttp.ClientError as exc:
            error = exc
        return sim, status, bytes(received), error


@pytest.mark.parametrize("fault", ["truncate", "reset_mid", "chunked_cut"])
async def test_download_cut_short_raises_with_a_partial_body(fault):
    sim, status, body, error = await fetch_with_fault(fault)
    full = sim.expected_archive(sim.server_ids[0])
    assert status == 200
    assert isinstance(error, (aiohttp.ClientPayloadError, aiohttp.ClientOSError))
    assert len(body) < len(full) and full.startswith(body)
    assert sim.stats["download", 200] == 1


async def test_download_without_length_ends_in_a_clean_short_eof():
    sim, status, body, error = await fetch_with_fault("no_length_eof")
    full = sim.expected_archive(sim.server_ids[0])
    assert status == 200 and error is None
    assert 0 < len(body) < len(full) and full.startswith(body)


async def test_download_not_gzip_is_an_html_page():
    _, status, body, error = await fetch_with_fault("not_gzip")
    assert status == 200 and error is None
    assert body.startswith(b"<html>")


async def test_download_gzip_encoding_header_on_the_archive_bytes():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=["gzip_encoding", "evil_disposition"])
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert await response.read() == sim.expected_archive(sid)
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.headers["Content-Disposition"] == "attachment; filename=../../x"
            assert await response.read() == sim.expected_archive(sid)


async def test_download_oversize_is_a_valid_larger_archive():
    sim, status, body, error = await fetch_with_fault("oversize", oversize_bytes=300_000)
    assert status == 200 and error is None
    assert len(body) == 300_000 and body != sim.expected_archive(sim.server_ids[0])
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert tar.getnames()


async def test_download_stall_holds_the_connection_and_stop_ends_it():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=["stall"])
        async with session.get(content_url(sim, sid, export_id)) as response:
            first = await response.content.read(1024)
            assert first == sim.expected_archive(sid)[:1024]
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await response.read()
    # Leaving the simulator's context did not wait for the stall to end.


async def test_ranges_honoured_ignored_and_wrong():
    async with Simulator(SimConfig(**FAST, accept_ranges=True)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        full = sim.expected_archive(sid)
        export_id = await completed_export(session, sim, sid)
        url = content_url(sim, sid, export_id)
        sim.script(sid, download=[None, "range_ignored", "range_wrong_offset"])
        async with session.get(url, headers={"Range": "bytes=1000-"}) as response:
            assert response.status == 206 and response.headers["Accept-Ranges"] == "bytes"
            assert response.headers["Content-Range"] == f"bytes 1000-{len(full) - 1}/{len(full)}"
            assert await response.read() == full[1000:]
        async with session.get(url, headers={"Range": "bytes=1000-"}) as response:
            assert response.status == 200 and await response.read() == full
        async with session.get(url, headers={"Range": "bytes=1000-"}) as response:
            assert response.status == 206
            start = int(response.headers["Content-Range"].split()[1].split("-")[0])
            assert start != 1000 and await response.read() == full[start:]
        async with session.get(url, headers={"Range": f"bytes={len(full)}-"}) as response:
            assert response.status == 416


async def test_redirect_storage_serves_the_archive_and_records_headers():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=["redirect_storage"])
        async with session.get(content_url(sim, sid, export_id), allow_redirects=False) as response:
            assert response.status == 302
            location = response.headers["Location"]
        assert location.startswith(sim.storage_url + "/bucket/") and "X-Signature=" in location
        async with aiohttp.ClientSession(auto_decompress=False) as bare, bare.get(location) as response:
            assert response.status == 200
            assert await response.read() == sim.expected_archive(sid)
        async with session.get(location) as response:
            assert response.status == 200
        forged = location.replace("X-Signature=", "X-Signature=0")
        async with aiohttp.ClientSession() as bare, bare.get(forged) as response:
            assert response.status == 403
        clean, leaked, _ = sim.storage_requests
        assert clean.server_id == sid and "X-Auth-Token" not in clean.headers
        assert "Authorization" not in clean.headers
        assert leaked.headers["x-auth-token"] == sim.token
        assert sim.stats["storage", 200] == 2 and sim.stats["download", 302] == 1


async def test_download_redirect_to_the_same_path_on_storage_serves_the_archive():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=["redirect"])
        async with session.get(content_url(sim, sid, export_id), allow_redirects=False) as response:
            location = response.headers["Location"]
        assert location == sim.storage_url + content_url(sim, sid, export_id).removeprefix(sim.url)
        async with aiohttp.ClientSession(auto_decompress=False) as bare, bare.get(location) as response:
            assert await response.read() == sim.expected_archive(sid)


async def test_random_truncation_cuts_downloads():
    sim, status, body, error = await fetch_with_fault(None, fault_truncate=1.0)
    assert status == 200 and isinstance(error, aiohttp.ClientPayloadError)
    assert len(body) < sim.archive_size(sim.server_ids[0])


async def test_redirect_downloads_flag_redirects_every_download():
    async with Simulator(SimConfig(**FAST, redirect_downloads=True)) as sim, client(sim) as session:
        sid = sim.server_ids[2]
        export_id = await completed_export(session, sim, sid)
        async with session.get(content_url(sim, sid, export_id), allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"].startswith(sim.storage_url)


async def test_random_faults_are_seeded():
    async def run() -> list[int]:
        config = SimConfig(servers=3, fault_500=0.5, seed=3)
        async with Simulator(config) as sim, client(sim) as session:
            statuses = []
            for sid in sim.server_ids * 4:
                async with session.post(exports_url(sim, sid)) as response:
                    statuses.append(response.status)
            return statuses

    first = await run()
    assert first == await run()
    assert {500, 202} == set(first)


async def test_write_inventory(tmp_path: Path):
    async with Simulator(SimConfig(servers=3)) as sim:
        path = sim.write_inventory(tmp_path / "inventory.yaml")
    inventory = yaml.safe_load(path.read_text())
    assert inventory["endpoint"] == sim.url and inventory["project_id"] == DEFAULT_PROJECT_ID
    token_file = Path(inventory["auth"]["token_file"])
    assert token_file.is_absolute() and token_file.read_text().strip() == DEFAULT_TOKEN
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert [server["id"] for server in inventory["servers"]] == sim.server_ids
    assert inventory["servers"][0]["name"] == "node-0000"


def test_cli_parses_ranges_and_rejects_bad_values():
    assert seconds_range("2-5") == (2.0, 5.0) and seconds_range("0.5-1.5") == (0.5, 1.5)
    assert seconds_range("3") == (3.0, 3.0)
    assert bytes_range("256K-1M") == (256 * 1024, 1024 * 1024) and bytes_range("4096") == (4096, 4096)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = ["--servers", "9", "--archive-bytes", "8K-16K", "--no-retry-after", "--hostile", "0.3"]
    args = parser.parse_args([*flags, "--rate-limit", "100", "--rate-burst", "20"])
    config = config_from_args(args)
    assert config.servers == 9 and config.archive_bytes == (8192, 16384) and not config.retry_after
    assert (config.rate_limit, config.rate_burst) == (100.0, 20.0)
    assert config.hostile == 0.3 and config_from_args(parser.parse_args([])).hostile == 0.0
    bad_values = [
        ("--export-seconds", "5-2"),
        ("--archive-bytes", "lots"),
        ("--fault-500", "2"),
        ("--hostile", "1.5"),
        ("--servers", "-1"),
        ("--rate-burst", "0.5"),
        ("--rate-burst", "nan"),
        ("--rate-limit", "nan"),
    ]
    for flag, value in bad_values:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([flag, value])
        assert exit_info.value.code == 2


@pytest.mark.timeout(20)
def test_cli_prints_ready_line_and_exits_0_on_sigterm(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    inventory = tmp_path / "inv.yaml"
    command = [sys.executable, "-m", "collector.simulator", "--servers", "3"]
    command += ["--write-inventory", str(inventory)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        ready = process.stdout.readline()
        written = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert ready.startswith("simulator listening on http://127.0.0.1:")
    # The token it accepts, so that an inventory of your own can use it (issue 16).
    token = f"token {DEFAULT_TOKEN}: export CLOUDDC_TOKEN={DEFAULT_TOKEN}"
    assert ready.rstrip().endswith(f"(3 servers, project {DEFAULT_PROJECT_ID}, {token})")
    assert written.strip() == f"inventory written to {inventory}"
    assert inventory.exists()


async def test_stats_endpoint_counts_what_it_received_without_counting_itself():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        await start_export(session, sim, sid)
        await start_export(session, sim, sid)
        async with session.get(f"{sim.url}/v1/{sim.project_id}/physicalservers/{sid}/logs/exports/nope") as r:
            assert r.status == 404
        async with aiohttp.ClientSession() as anonymous:  # no token needed
            async with anonymous.get(f"{sim.url}/_sim/stats?timeline=0") as response:
                counts = await response.json()
            async with anonymous.get(f"{sim.url}/_sim/stats") as response:
                full = await response.json()
    assert counts["requests"] == {"export": {"202": 2}, "status": {"404": 1}}
    assert counts["requests_total"] == 3  # the stats calls are not recorded
    assert counts["exports_started"] == 2 and counts["exports_started_max_per_server"] == 2
    assert "timeline" not in counts
    assert [op for _, op, _ in full["timeline"]] == ["export", "export", "status"]
    assert len(full["export_spans"]) == 2


# The hostile catalogue (issue 8): each entry served as its docstring says.

HOSTILE_FIELDS = {
    "percentage_400_digits": ("percentage", 10**400 - 1),
    "percentage_backtrack": ("percentage", "9" * 60_000 + "x"),
    "export_id_surrogate": ("export_id", "\ud800"),
    "export_id_traversal": ("export_id", "../../../../x"),
    "export_id_slash": ("export_id", "/"),
    "export_id_control": ("export_id", "1\r\n\x00\x1b[31m\x07"),
    "export_id_long": ("export_id", "7" * 10_000),
    "created_at_year_1": ("created_at", "0001-01-01T00:00:00"),
    "created_at_year_9999": ("created_at", "9999-12-31T23:59:59Z"),
    "created_at_huge_year": ("created_at", "9" * 400 + "-01-01T00:00:00Z"),
    "created_at_garbage": ("created_at", "2025-13-45T25:61:61+99:99\x00\ufffd"),
    "status_null": ("status", None),
    "status_list": ("status", ["completed"]),
}
HOSTILE_BODIES = ["json_deep", "body_8mib", "export_id_number", "export_id_missing", "status_huge"]
HOSTILE_ERRORS = ["error_8mib", "error_control_bytes", "error_ansi_json", "503_retry_after"]
HOSTILE_REDIRECTS = {
    "redirect_bad_location": (307, "http://[::1"),
    "redirect_no_location": (302, None),
    "redirect_file": (302, "file:///etc/passwd"),
    "redirect_dotdot": (307, "../../../../../../etc/passwd"),
}
HOSTILE_ARCHIVES = ["gzip_truncated_stream", "gzip_html_magic", "gzip_trailing_junk", "gzip_bad_crc"]
HOSTILE_LENGTHS = ["length_short", "length_long", "length_conflicting"]
HOSTILE_TESTED_ELSEWHERE = {"trickle", "slow_archive", "burst_5xx"}


def test_every_hostile_entry_has_a_test_here():
    tested = {*HOSTILE_FIELDS, *HOSTILE_BODIES, *HOSTILE_ERRORS, *HOSTILE_REDIRECTS, *HOSTILE_ARCHIVES}
    tested |= {*HOSTILE_LENGTHS, *HOSTILE_TESTED_ELSEWHERE}
    assert tested == hostile.ANY_CALL | hostile.JSON_REPLIES | hostile.DOWNLOAD_ONLY


async def json_call_with_fault(sim: Simulator, session: aiohttp.ClientSession, call: str, fault: str):
    """Script `fault` on one export or status call of server 0; (response status, raw body, export id)."""
    sid = sim.server_ids[0]
    if call == "export":
        sim.script(sid, export=[fault])
        async with session.post(exports_url(sim, sid)) as response:
            return response.status, await response.read(), str(sum(sim.exports_started.values()))
    export_id = await start_export(session, sim, sid)
    sim.script(sid, status=[fault])
    async with session.get(f"{exports_url(sim, sid)}/{export_id}") as response:
        return response.status, await response.read(), export_id


@pytest.mark.parametrize("call", ["export", "status"])
@pytest.mark.parametrize("fault", sorted(HOSTILE_FIELDS))
async def test_hostile_field_is_the_only_change_to_a_normal_answer(call, fault):
    field, value = HOSTILE_FIELDS[fault]
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        status, raw, export_id = await json_call_with_fault(sim, session, call, fault)
    assert status == (202 if call == "export" else 200)
    body = json.loads(raw)
    assert body[field] == value
    normal = {"export_id": export_id, "status": "?", "percentage": "?", "created_at": "?"}
    assert body.keys() == normal.keys()
    if field != "export_id":
        assert body["export_id"] == export_id
    if fault == "export_id_surrogate":
        assert b'"export_id":"\\ud800"' in raw  # the JSON escape of a lone surrogate, as sent


@pytest.mark.parametrize("call", ["export", "status"])
@pytest.mark.parametrize("fault", HOSTILE_BODIES)
async def test_hostile_json_bodies(call, fault):
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        status, raw, export_id = await json_call_with_fault(sim, session, call, fault)
    assert status == (202 if call == "export" else 200)
    if fault == "json_deep":
        assert b"[" * 100_000 + b"]" * 100_000 in raw
        with pytest.raises(RecursionError):
            json.loads(raw)
        return
    body = json.loads(raw)
    if fault == "body_8mib":
        assert len(raw) > 8 * 1024 * 1024 and len(body["padding"]) == 8 * 1024 * 1024
        assert body["export_id"] == export_id and "status" in body
    elif fault == "export_id_number":
        assert body["export_id"] == int(export_id)
    elif fault == "export_id_missing":
        assert "export_id" not in body and "status" in body
    else:
        assert len(body["status"]) >= 1024 * 1024 and " " in body["status"].strip()
        assert body["status"] not in COMPLETED_WORDS


async def test_hostile_trickle_sends_headers_then_the_body_a_byte_at_a_time():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        sim.script(sid, export=["trickle"])
        async with session.post(exports_url(sim, sid)) as response:
            assert response.status == 202
            length = int(response.headers["Content-Length"])
            received = b""
            while len(received) < 2:
                received += await response.content.readany()
            assert received.strip(b" ") == b"" and not response.content.at_eof()
        assert sim.exports_started[sid] == 1
    assert hostile.TRICKLE_PADDING < length < hostile.TRICKLE_PADDING + 200  # spaces, then the JSON


async def test_hostile_burst_answers_502_504_502_then_normally():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        sim.script(sid, export=["burst_5xx", None])
        statuses, types = [], []
        for _ in range(4):
            async with session.post(exports_url(sim, sid)) as response:
                statuses.append(response.status)
                types.append(response.content_type)
                await response.read()
        assert statuses == [502, 504, 502, 202]
        assert types[:3] == ["text/html"] * 3
        assert sim.pending_faults(sid)["export"] == []


async def scripted_call(sim: Simulator, session: aiohttp.ClientSession, call: str, fault: str) -> tuple[str, str]:
    """Complete an export of server 0, script `fault` on its next `call`: that call's (method, URL)."""
    sid = sim.server_ids[0]
    export_id = await completed_export(session, sim, sid)
    sim.script(sid, **{call: [fault]})
    if call == "export":
        return "POST", exports_url(sim, sid)
    if call == "status":
        return "GET", f"{exports_url(sim, sid)}/{export_id}"
    return "GET", content_url(sim, sid, export_id)


@pytest.mark.parametrize("call", ["export", "status", "download"])
@pytest.mark.parametrize("fault", sorted(HOSTILE_REDIRECTS))
async def test_hostile_redirects(call, fault):
    want_status, location = HOSTILE_REDIRECTS[fault]
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        method, url = await scripted_call(sim, session, call, fault)
        async with session.request(method, url, allow_redirects=False) as response:
            assert response.status == want_status
            assert response.headers.get("Location") == location
        assert sim.count(call, want_status) == 1


@pytest.mark.parametrize("call", ["export", "status", "download"])
@pytest.mark.parametrize("fault", HOSTILE_ERRORS)
async def test_hostile_error_answers(call, fault):
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        method, url = await scripted_call(sim, session, call, fault)
        async with session.request(method, url) as response:
            status, headers, raw = response.status, response.headers, await response.read()
    if fault == "503_retry_after":
        assert status == 503 and headers["Retry-After"] == "2"
        assert json.loads(raw)["error_code"] == "CLOUDDC.0503"
        return
    assert status == 500
    if fault == "error_8mib":
        assert len(json.loads(raw)["error_msg"]) == 8 * 1024 * 1024
    elif fault == "error_control_bytes":
        assert raw.startswith(b"\x1b[2J") and b"\x00" in raw[:64] and b"\x07" in raw[:64]
        assert len(raw) >= 1024 * 1024
        with pytest.raises(ValueError):
            json.loads(raw)
    else:
        body = json.loads(raw)
        assert body["error_code"].startswith("\x1b[31m") and body["error_msg"].startswith("\x1b[2J")
        assert len(body["error_msg"]) > 1024 * 1024


def inflate(data: bytes) -> zlib._Decompress:
    """Decompress a gzip stream as far as it goes (raises zlib.error on bad data)."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    inflater.decompress(data)
    return inflater


@pytest.mark.parametrize("fault", HOSTILE_ARCHIVES)
async def test_hostile_archives_are_complete_answers_that_are_not_the_archive(fault):
    sim, status, body, error = await fetch_with_fault(fault)
    full = sim.expected_archive(sim.server_ids[0])
    assert status == 200 and error is None  # a complete answer: as long as its Content-Length says
    assert body[:2] == b"\x1f\x8b"
    if fault == "gzip_truncated_stream":
        assert body == full[: len(full) // 2] and not inflate(body).eof
    elif fault == "gzip_html_magic":
        assert len(body) == 28 and body.startswith(b"\x1f\x8b<html>")
    elif fault == "gzip_trailing_junk":
        assert body.startswith(full) and len(body) > len(full)
        assert inflate(body).unused_data == body[len(full) :]
    else:
        assert len(body) == len(full) and body[:-8] == full[:-8] and body[-4:] == full[-4:]
        with pytest.raises(zlib.error, match="incorrect data check"):
            inflate(body)


async def raw_get(sim: Simulator, url: str) -> tuple[list[str], bytes]:
    """GET `url` on a bare socket, to see what aiohttp's client refuses to parse: (header lines, the rest)."""
    path = url.removeprefix(sim.url)
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Auth-Token: {sim.token}\r\n\r\n".encode())
        data = await reader.read()  # these answers close the connection when done
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), rest


@pytest.mark.parametrize("fault", HOSTILE_LENGTHS)
async def test_hostile_content_length_lies(fault):
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        full = sim.expected_archive(sid)
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=[fault])
        lines, body = await raw_get(sim, content_url(sim, sid, export_id))
    lengths = [int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")]
    assert lines[0] == "HTTP/1.1 200 OK" and body == full
    assert (
        lengths
        == {
            "length_short": [len(full) // 2],
            "length_long": [len(full) + 4096],
            "length_conflicting": [len(full), len(full) + 1],
        }[fault]
    )


async def test_hostile_slow_archive_trickles_the_real_archive():
    async with Simulator(SimConfig(**FAST)) as sim, client(sim) as session:
        sid = sim.server_ids[0]
        full = sim.expected_archive(sid)
        export_id = await completed_export(session, sim, sid)
        sim.script(sid, download=["slow_archive"])
        async with session.get(content_url(sim, sid, export_id)) as response:
            assert response.status == 200 and response.content_length == len(full)
            received = b"".join([await response.content.readany() for _ in range(3)])
            assert received == full[: len(received)]
            # Three pieces, a quarter of a second apart; this much only if the test stalled for seconds.
            assert len(received) <= 8 * hostile.SLOW_ARCHIVE_BYTES_PER_SECOND
            assert not response.content.at_eof()


def test_script_rejects_hostile_entries_of_another_call():
    sim = Simulator(SimConfig(servers=1))
    sid = sim.server_ids[0]
    with pytest.raises(ValueError):
        sim.script(sid, export=["gzip_bad_crc"])
    with pytest.raises(ValueError):
        sim.script(sid, download=["json_deep"])
    sim.script(sid, export=["json_deep"], status=["trickle"], download=["slow_archive", "error_8mib"])


async def post_every_server(config: SimConfig, rounds: int) -> tuple[list[int], Counter[str]]:
    """POST an export for every server `rounds` times, bodies unread: (statuses, faults drawn)."""
    async with Simulator(config) as sim, client(sim) as session:
        statuses = []
        for sid in sim.server_ids * rounds:
            try:
                async with session.post(exports_url(sim, sid), allow_redirects=False) as response:
                    statuses.append(response.status)
            except aiohttp.ClientError:
                statuses.append(0)  # a reset
        assert sim.snapshot(timeline=False)["faults"] == dict(sorted(sim.recorder.faults.items()))
        return statuses, Counter(sim.recorder.faults)


async def test_hostile_draws_are_seeded_and_come_at_the_asked_rate():
    config = SimConfig(servers=100, seed=3, hostile=0.3)
    statuses, faults = await post_every_server(config, 2)
    assert (statuses, faults) == await post_every_server(config, 2)
    drawn = sum(n for name, n in faults.items() if name not in hostile.BURST_AFTER)  # not a burst's tail
    assert 0.22 <= drawn / len(statuses) <= 0.38
    assert set(faults) <= set(hostile.ANY_CALL | hostile.JSON_REPLIES | {"reset", "502", "504"})
    assert len(faults) >= 10  # drawn from across the catalogue
    _, other_seed = await post_every_server(SimConfig(servers=100, seed=4, hostile=0.3), 2)
    assert other_seed != faults
    calm, none = await post_every_server(SimConfig(servers=100, seed=3), 2)
    assert calm == [202] * 200 and not none


async def test_a_10000_character_export_id_in_the_url_is_answered_404():
    """A collector that believed `export_id_long` sends it back in a URL: a 404, not a server error."""
    async with (
        Simulator(SimConfig(**FAST)) as sim,
        client(sim) as session,
        session.get(f"{exports_url(sim, sim.server_ids[0])}/{'7' * 10_000}") as response,
    ):
        assert response.status == 404


def _true_output(tmp_path: Path, sim: Simulator) -> tuple[Path, dict]:
    """An output folder as a correct run leaves it: servers 0 and 1 collected, 2 failed, 3 pending."""
    out = tmp_path / "out"
    folder = out / sim.project_id
    folder.mkdir(parents=True)
    entries = []
    for sid in sim.server_ids[:2]:
        data = sim.expected_archive(sid)
        (folder / f"{sid}-dump.tar.gz").write_bytes(data)
        entries.append(
            {
                "server_id": sid,
                "state": "collected",
                "file": f"{sim.project_id}/{sid}-dump.tar.gz",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "error": None,
            }
        )
    entries.append({"server_id": sim.server_ids[2], "state": "failed", "error": "not a gzip archive"})
    entries.append({"server_id": sim.server_ids[3], "state": "pending", "error": "not collected: run stopped"})
    report = {"totals": {"servers": 4, "collected": 2, "failed": 1, "pending": 1}, "servers": entries}
    (out / "report.json").write_text(json.dumps(report))
    return out, report


def _rewrite_archive(out: Path, report: dict, data: bytes) -> None:
    """Server 0's archive replaced by `data`, and report.json made to agree with it."""
    entry = report["servers"][0]
    (out / entry["file"]).write_bytes(data)
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / "report.json").write_text(json.dumps(report))


def _break_output(how: str, out: Path, report: dict, full: bytes) -> None:
    if how == "truncated":
        _rewrite_archive(out, report, full[: len(full) // 2])
    elif how == "trailing":
        _rewrite_archive(out, report, full + b"junk")
    elif how == "bad_crc":
        _rewrite_archive(out, report, full[:-8] + bytes(4) + full[-4:])
    elif how == "size_lie":
        report["servers"][0]["bytes"] += 1
        (out / "report.json").write_text(json.dumps(report))
    elif how == "missing_file":
        (out / report["servers"][0]["file"]).unlink()
    elif how == "foreign_archive":
        entry = report["servers"].pop(0)
        (out / entry["file"]).rename(out / "elsewhere-dump.tar.gz")
        report["totals"]["collected"] -= 1
        report["servers"].append({"server_id": entry["server_id"], "state": "failed", "error": "x"})
        report["totals"]["failed"] += 1
        (out / "report.json").write_text(json.dumps(report))
    elif how == "part":
        (out / report["servers"][0]["file"]).with_suffix(".gz.part").write_bytes(b"\x1f\x8b")
    elif how == "totals":
        report["totals"]["failed"] = 0
        (out / "report.json").write_text(json.dumps(report))
    elif how == "server_missing":
        report["servers"].pop()
        report["totals"]["pending"] = 0
        (out / "report.json").write_text(json.dumps(report))
    elif how == "no_report":
        (out / "report.json").unlink()


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("truncated", "cut short"),
        ("trailing", "bytes after the gzip stream"),
        ("bad_crc", "incorrect data check"),
        ("size_lie", "report.json says"),
        ("missing_file", "is not there"),
        ("foreign_archive", "an archive report.json does not call collected"),
        ("part", "partial file left"),
        ("totals", "report totals say 0 failed"),
        ("server_missing", "listed 0 times"),
        ("no_report", "report.json is missing"),
    ],
)
def test_audit_accepts_a_true_output_and_names_each_broken_rule(tmp_path: Path, how: str, says: str):
    config = SimConfig(servers=4, seed=3)
    sim = Simulator(config)
    out, report = _true_output(tmp_path, sim)
    audit = audit_output(out, config)
    assert audit.ok and audit.states == Counter(collected=2, failed=1, pending=1)
    _break_output(how, out, report, sim.expected_archive(sim.server_ids[0]))
    problems = audit_output(out, config).problems
    assert any(says in problem for problem in problems), problems
