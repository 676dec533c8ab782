"""Sanity tests of the CloudDC simulator itself, over real loopback sockets."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import aiohttp
import pytest
import yaml

from collector.simulator import DEFAULT_PROJECT_ID, DEFAULT_TOKEN, SimConfig, Simulator
from collector.simulator.archive import build_archive
from collector.simulator.cli import add_arguments, bytes_range, config_from_args, seconds_range
from collector.simulator.fleet import COMPLETED_WORDS, FAILED_WORDS, RUNNING_WORDS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

FAST = dict(servers=5, export_seconds=(0.05, 0.1), archive_bytes=(16384, 65536))


class FakeClock:
    """Stands in for the event loop's clock, so lifecycle tests do not sleep."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
    async with Simulator(SimConfig(**FAST)) as sim:
        async with client(sim) as session:
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
    args = parser.parse_args(["--servers", "9", "--archive-bytes", "8K-16K", "--no-retry-after"])
    config = config_from_args(args)
    assert config.servers == 9 and config.archive_bytes == (8192, 16384) and not config.retry_after
    bad_values = [
        ("--export-seconds", "5-2"),
        ("--archive-bytes", "lots"),
        ("--fault-500", "2"),
        ("--servers", "-1"),
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
    assert ready.rstrip().endswith(f"(3 servers, project {DEFAULT_PROJECT_ID})")
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
