"""Archives into object storage, against moto's S3 server over loopback (see tests/_moto.py).

moto enforces S3's 5 MiB minimum part, so these tests use 5 MiB parts: a 20 MiB archive is
four. Where moto cannot misbehave (throttling), `FaultyProxy` stands in front of it.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import anyio
import pytest
from _moto import FaultyProxy, MotoServer, raw_client
from _sockets import closed_port
from botocore.loaders import Loader

from collector.auth import StaticToken
from collector.clouddc.api import CloudDC
from collector.control.throttle import RateLimiter, RetryPolicy
from collector.destinations import LocalLocation, S3Location, parse_destination
from collector.destinations.base import archive_name
from collector.destinations.s3 import KEPT_ENDPOINTS, Buffers, MiB, PartBody, S3Destination, S3EndpointsOnly
from collector.errors import StorageError, UsageError
from collector.simulator import SimConfig, Simulator
from collector.transfer.download import DownloadOptions, fetch_archive

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PART = 5 * MiB
BATCH = 1 * MiB  # what download.py hands over per write
NAME = archive_name("0123456789abcdef0123456789abcdef", "2102313YJK10N1000001")


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def write_in_batches(partial, data: bytes, chunk: int = 256 * 1024, batch: int = BATCH) -> None:
    """Hand `data` over as download.py does: lists of socket-sized chunks, about 1 MiB a list."""
    for start in range(0, len(data), batch):
        piece = data[start : start + batch]
        await partial.write([piece[i : i + chunk] for i in range(0, len(piece), chunk)])


async def get(url: str, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    async with raw_client(url) as client:
        answer = await client.get_object(Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            return await body.read(), answer["Metadata"]


async def keys(url: str, bucket: str) -> list[str]:
    async with raw_client(url) as client:
        listed = await client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


async def open_uploads(url: str, bucket: str) -> list[str]:
    async with raw_client(url) as client:
        listed = await client.list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in listed.get("Uploads", [])]


# -- streaming and committing ---------------------------------------------------------------------


async def test_large_archive_streams_as_multipart_with_one_part_uploading_at_a_time(moto_server, bucket):
    data = payload(20 * MiB)
    async with (
        FaultyProxy(moto_server.url).running() as proxy,
        S3Destination(bucket, "nightly", endpoint_url=proxy.url, part_size=PART) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, data)
        archive = await partial.commit()
        assert destination.buffered == 0
    digest = hashlib.sha256(data).hexdigest()
    assert (archive.name, archive.size, archive.sha256) == (NAME, len(data), digest)
    # Bounded: the part uploading, and the next one filling (cut at the part's size).
    assert partial.peak_buffered <= 2 * PART
    assert destination.peak_buffered <= 2 * PART
    assert proxy.peak_uploading == 1
    assert proxy.count("CreateMultipartUpload") == 1 and proxy.count("UploadPart") == 4
    assert proxy.count("CompleteMultipartUpload") == 1 and proxy.count("PutObject") == 0
    assert proxy.count("CopyObject") == 1  # the sha256 stamped on the completed object
    stored, metadata = await get(moto_server.url, bucket, f"nightly/{NAME}")
    assert stored == data
    assert metadata == {"sha256": digest}
    assert await open_uploads(moto_server.url, bucket) == []


async def test_many_transfers_share_one_buffer_budget_and_every_object_is_exact(moto_server, bucket):
    """Twelve transfers at once, large and small, under a budget of two parts: the bytes held
    never exceed it, nobody deadlocks (each waits for room instead), every object is exact."""
    budget = 2 * PART
    sizes = [
        12 * MiB,
        300 * 1024,
        7 * MiB,
        11 * MiB,
        64 * 1024,
        5 * MiB,
        13 * MiB,
        1 * MiB,
        6 * MiB,
        10 * MiB,
        2,
        9 * MiB,
    ]
    archives = {f"p/server-{index:02d}.tar.gz": payload(size, seed=index) for index, size in enumerate(sizes)}
    async with S3Destination(
        bucket, "", endpoint_url=moto_server.url, part_size=PART, buffer_size=budget
    ) as destination:

        async def transfer(name: str, data: bytes, batch: int) -> None:
            partial = await destination.open_partial(name)
            await write_in_batches(partial, data, chunk=100 * 1024 + 7, batch=batch)
            await partial.commit()

        async with anyio.create_task_group() as tasks:
            for index, (name, data) in enumerate(archives.items()):
                tasks.start_soon(transfer, name, data, BATCH + index * 123_457)
        assert destination.buffered == 0
        assert budget - PART < destination.peak_buffered <= budget  # it was used, and it held
    for name, data in archives.items():
        stored, metadata = await get(moto_server.url, bucket, name)
        assert stored == data
        assert metadata == {"sha256": hashlib.sha256(data).hexdigest()}
    assert await open_uploads(moto_server.url, bucket) == []


async def test_a_budget_of_one_part_serves_transfers_one_part_at_a_time(moto_server, bucket):
    data = [payload(11 * MiB, seed=seed) for seed in range(4)]
    async with S3Destination(bucket, "", endpoint_url=moto_server.url, part_size=PART, buffer_size=1) as destination:
        assert destination.buffers.size == PART  # never below one part

        async def transfer(index: int) -> None:
            partial = await destination.open_partial(f"p/{index}.tar.gz")
            await write_in_batches(partial, data[index])
            await partial.commit()

        async with anyio.create_task_group() as tasks:
            for index in range(len(data)):
                tasks.start_soon(transfer, index)
        assert destination.peak_buffered == PART
    for index, expected in enumerate(data):
        assert (await get(moto_server.url, bucket, f"p/{index}.tar.gz"))[0] == expected


async def test_room_is_refused_when_no_transfer_could_then_finish_its_part_and_a_cancelled_wait_takes_none():
    """The banker's rule of `Buffers`, without S3: owners are only keys to it."""
    buffers = Buffers(2 * PART, PART)
    a, b, c = object(), object(), object()
    await buffers.fill(a, PART - 1)
    await buffers.fill(b, PART - 1)  # a can still finish: 1 byte, 2 there
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(buffers.fill, c, 2)  # there is room, but then nobody could finish a part
        await anyio.wait_all_tasks_blocked()
        assert buffers.held == 2 * PART - 2
        await buffers.fill(a, 1)  # a's part is full: it needs nothing more
        buffers.send(a)
        await anyio.wait_all_tasks_blocked()
        assert buffers.held == 2 * PART - 1  # still no room for c
        buffers.sent(PART)  # a's part is stored: its bytes come back, and c gets its two
    assert buffers.held == PART + 1 and buffers.peak == 2 * PART - 1
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(buffers.fill, c, PART)  # more than there is: waits
        await anyio.wait_all_tasks_blocked()
        tasks.cancel_scope.cancel()
    assert buffers.held == PART + 1  # the cancelled wait took nothing
    buffers.drop(b)
    buffers.drop(c)
    assert buffers.held == 0


def test_a_part_reads_back_as_the_file_botocore_takes_its_length_and_sha256_from():
    data = payload(3 * MiB + 17)
    part = PartBody(PART)
    view = memoryview(data)
    for start in range(0, len(data), 256 * 1024):
        part.append(view[start : start + 256 * 1024])
    assert len(part) == part.size == len(data)
    assert part.seek(0, 2) == part.tell() == len(data)
    part.seek(0)
    assert b"".join(iter(lambda: part.read(MiB), b"")) == data
    assert part.read() == b""
    part.seek(5)
    assert part.read(3) == data[5:8]
    part.release()
    part.release()  # harmless twice: a part is released wherever its transfer ends


def test_the_client_loads_only_the_endpoints_an_s3_client_and_its_credentials_read():
    full = Loader().load_data("endpoints")
    kept = Loader(file_loader=S3EndpointsOnly()).load_data("endpoints")
    assert [p["partition"] for p in kept["partitions"]] == [p["partition"] for p in full["partitions"]]
    for partition, whole in zip(kept["partitions"], full["partitions"], strict=True):
        assert partition["services"] == {k: v for k, v in whole["services"].items() if k in KEPT_ENDPOINTS}
        assert partition["regions"] == whole["regions"] and partition["defaults"] == whole["defaults"]
    assert any("s3" in partition["services"] for partition in kept["partitions"])


async def test_small_archive_is_one_put_with_its_sha256(moto_server, bucket):
    data = payload(300 * 1024)
    async with (
        FaultyProxy(moto_server.url).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, data, chunk=64 * 1024, batch=128 * 1024)
        archive = await partial.commit()
    assert [op for op, _ in proxy.seen] == ["PutObject"]
    assert archive.sha256 == hashlib.sha256(data).hexdigest()
    assert await get(moto_server.url, bucket, f"p/{NAME}") == (data, {"sha256": archive.sha256})


async def test_archive_above_the_copy_limit_gets_its_sha256_by_multipart_copy(moto_server, bucket):
    data = payload(12 * MiB, seed=3)
    async with (
        FaultyProxy(moto_server.url).running() as proxy,
        S3Destination(
            bucket, "p", endpoint_url=proxy.url, part_size=PART, max_copy=6 * MiB, copy_part_size=PART
        ) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, data)
        archive = await partial.commit()
    assert proxy.count("UploadPartCopy") == 3 and proxy.count("CopyObject") == 0
    assert proxy.count("CompleteMultipartUpload") == 2
    assert await get(moto_server.url, bucket, f"p/{NAME}") == (data, {"sha256": archive.sha256})
    assert await open_uploads(moto_server.url, bucket) == []


async def test_discard_aborts_the_upload_and_leaves_no_object(moto_server, bucket):
    async with S3Destination(bucket, "p", endpoint_url=moto_server.url, part_size=PART) as destination:
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, payload(12 * MiB))  # two parts started, the second maybe in flight
        assert partial.upload_id is not None
        assert await open_uploads(moto_server.url, bucket) == [f"p/{NAME}"]
        await partial.discard()
        assert destination.buffered == 0
    assert await open_uploads(moto_server.url, bucket) == []
    assert await keys(moto_server.url, bucket) == []


async def test_cancelled_transfer_is_discarded_with_its_upload_aborted(moto_server, bucket):
    """As fetch_archive does on the way out of a cancellation: discard runs shielded."""
    async with S3Destination(bucket, "p", endpoint_url=moto_server.url, part_size=PART) as destination:
        partial = await destination.open_partial(NAME)
        with anyio.CancelScope() as scope:
            try:
                await write_in_batches(partial, payload(11 * MiB))  # a part in flight
                scope.cancel()
                await partial.commit()
            except BaseException:
                await partial.discard()
                raise
        assert scope.cancelled_caught
        assert destination.buffered == 0
    assert await open_uploads(moto_server.url, bucket) == []
    assert await keys(moto_server.url, bucket) == []


async def test_truncate_aborts_the_upload_and_the_restart_is_exact(moto_server, bucket):
    first, second = payload(11 * MiB, seed=1), payload(7 * MiB, seed=2)
    async with (
        FaultyProxy(moto_server.url).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, first)
        aborted = partial.upload_id
        await partial.truncate()
        assert partial.size == 0 and partial.buffered == 0
        assert await open_uploads(moto_server.url, bucket) == []
        await write_in_batches(partial, second)
        assert partial.upload_id not in (None, aborted)
        archive = await partial.commit()
    assert proxy.count("AbortMultipartUpload") == 1
    assert archive.size == len(second) and archive.sha256 == hashlib.sha256(second).hexdigest()
    assert await get(moto_server.url, bucket, f"p/{NAME}") == (second, {"sha256": archive.sha256})


async def test_truncate_of_a_small_archive_sends_nothing(moto_server, bucket):
    async with (
        FaultyProxy(moto_server.url).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await partial.write([b"\x1f\x8bfirst try"])
        await partial.truncate()
        await partial.write([b"\x1f\x8bsecond"])
        await partial.commit()
    assert [op for op, _ in proxy.seen] == ["PutObject"]
    assert (await get(moto_server.url, bucket, f"p/{NAME}"))[0] == b"\x1f\x8bsecond"


async def test_check_compares_size_and_the_stamped_sha256(moto_server, bucket):
    data = b"\x1f\x8b" + payload(1000)
    digest = hashlib.sha256(data).hexdigest()
    async with S3Destination(bucket, "p", endpoint_url=moto_server.url) as destination:
        assert not await destination.check(NAME, len(data), None)
        partial = await destination.open_partial(NAME)
        await partial.write([data])
        await partial.commit()
        assert await destination.check(NAME, len(data), digest)
        assert await destination.check(NAME, len(data), None)
        assert not await destination.check(NAME, len(data) + 1, None)
        assert not await destination.check(NAME, len(data), "0" * 64)
        # Put there by someone else (or a crash before the stamp): no sha256 to vouch for it.
        async with raw_client(moto_server.url) as client:
            await client.put_object(Bucket=bucket, Key="p/other.tar.gz", Body=data)
        assert await destination.check("other.tar.gz", len(data), None)
        assert not await destination.check("other.tar.gz", len(data), digest)
        assert (await destination.stat("other.tar.gz")).sha256 is None


async def test_report_is_put_whole_under_the_prefix(moto_server, bucket):
    async with S3Destination(bucket, "runs/2026-11-30", endpoint_url=moto_server.url) as destination:
        await destination.write_document("report.json", b'{"totals": {}}')
        await destination.write_document("report.json", b'{"totals": {"servers": 1}}')
    body, metadata = await get(moto_server.url, bucket, "runs/2026-11-30/report.json")
    assert body == b'{"totals": {"servers": 1}}'
    assert metadata == {"sha256": hashlib.sha256(body).hexdigest()}


def test_names_that_would_escape_the_prefix_are_refused():
    destination = S3Destination("some-bucket", "p")
    for name in ("", "/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError):
            destination.key(name)
    assert destination.key("a/b-dump.tar.gz") == "p/a/b-dump.tar.gz"
    assert S3Destination("some-bucket", "").key("a/b") == "a/b"


# -- throttling and failures ----------------------------------------------------------------------


async def test_slow_down_is_retried_by_botocore_and_the_archive_is_exact(moto_server, bucket):
    data = payload(7 * MiB, seed=5)
    faults = {"CreateMultipartUpload": 1, "UploadPart": 1, "CompleteMultipartUpload": 1}
    async with (
        FaultyProxy(moto_server.url, faults=dict(faults)).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART, max_attempts=3) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, data)
        archive = await partial.commit()
    assert [(op, proxy.count(op, 503), proxy.count(op, 200)) for op in faults] == [
        ("CreateMultipartUpload", 1, 1),
        ("UploadPart", 1, 2),
        ("CompleteMultipartUpload", 1, 1),
    ]
    assert await get(moto_server.url, bucket, f"p/{NAME}") == (data, {"sha256": archive.sha256})


async def test_throttling_past_the_attempts_fails_the_archive_and_aborts_its_upload(moto_server, bucket):
    async with (
        FaultyProxy(moto_server.url, faults={"UploadPart": 100}).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART, max_attempts=2) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, payload(6 * MiB))
        with pytest.raises(StorageError) as caught:
            await partial.commit()
        await partial.discard()
    assert caught.value.reason == "object storage kept throttling us (SlowDown)"
    assert f"s3://{bucket}/p/{NAME}" in str(caught.value)
    assert proxy.count("UploadPart", 503) == 2  # botocore's attempts, then our error
    assert await open_uploads(moto_server.url, bucket) == []
    assert await keys(moto_server.url, bucket) == []


async def test_failed_stamp_leaves_no_object_that_check_takes_for_committed(moto_server, bucket):
    data = payload(6 * MiB, seed=4)
    async with (
        FaultyProxy(moto_server.url, faults={"CopyObject": 100}).running() as proxy,
        S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART, max_attempts=1) as destination,
    ):
        partial = await destination.open_partial(NAME)
        await write_in_batches(partial, data)
        with pytest.raises(StorageError, match="cannot set the metadata of"):
            await partial.commit()
        await partial.discard()
        assert not await destination.check(NAME, len(data), hashlib.sha256(data).hexdigest())
    assert await open_uploads(moto_server.url, bucket) == []


async def test_missing_bucket_is_a_storage_error_that_says_so(moto_server):
    async with S3Destination("no-such-bucket-here", "p", endpoint_url=moto_server.url) as destination:
        with pytest.raises(StorageError) as caught:
            await destination.write_document("report.json", b"{}")
    assert caught.value.reason == "object storage has no such bucket (NoSuchBucket)"


async def test_unreachable_endpoint_is_a_storage_error(moto_server):
    port = closed_port()
    async with S3Destination(
        "some-bucket", "p", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1
    ) as destination:
        with pytest.raises(StorageError) as caught:
            await destination.check(NAME, 1, None)
    assert caught.value.reason == "object storage unreachable (EndpointConnectionError)"


@pytest.fixture(scope="module")
def checking_moto(moto_server) -> MotoServer:
    """A second moto that checks access keys against its own IAM (it knows none of ours)."""
    server = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    server.start()
    yield server
    server.stop()


async def test_refused_credentials_are_named_without_leaking_them(checking_moto, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLEAKCHECK0000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-leak-check-0000001")
    async with S3Destination("some-bucket", "p", endpoint_url=checking_moto.url) as destination:
        with pytest.raises(StorageError) as put:
            await destination.write_document("report.json", b"{}")
        with pytest.raises(StorageError) as listed:
            await destination.check_bucket()
        with pytest.raises(StorageError) as head:
            await destination.check(NAME, 1, None)
    assert put.value.reason == "object storage refused our credentials (InvalidAccessKeyId)"
    assert listed.value.reason == "object storage refused our credentials (InvalidAccessKeyId)"
    assert head.value.reason == "object storage denied access (403)"  # a HEAD answer has no code
    for error in (put.value, listed.value, head.value):
        for text in (str(error), repr(error), error.reason):
            assert "AKIDLEAKCHECK" not in text and "secret-leak-check" not in text


async def test_missing_credentials_say_where_botocore_looks(moto_server, bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with S3Destination(bucket, "p", endpoint_url=moto_server.url) as destination:
        with pytest.raises(StorageError) as caught:
            await destination.write_document("report.json", b"{}")
    assert caught.value.reason == "no usable credentials for object storage"
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)


# -- a real download into S3 ------------------------------------------------------------------


class FrozenClock:
    """The simulator's clock: exports finish when the test says so, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("accept_ranges", [False, True], ids=["restart", "resume"])
async def test_download_cut_half_way_lands_exact_in_the_bucket(moto_server, bucket, accept_ranges):
    """fetch_archive from the simulator: cut at half, restarted (truncate) or resumed, into S3."""
    clock = FrozenClock()
    config = SimConfig(servers=1, seed=7, archive_bytes=(12 * MiB, 12 * MiB), accept_ranges=accept_ranges)
    policy = RetryPolicy(base=0.01, cap=0.05, max_attempts=3)
    async with Simulator(config, clock=clock) as sim, aiohttp.ClientSession(auto_decompress=False) as session:
        server = sim.server_ids[0]
        sim.script(server, download=["truncate"])
        api = CloudDC.alone(
            session, sim.url, sim.project_id, StaticToken(sim.token, "test"), limiter=RateLimiter(1000), policy=policy
        )
        export = await api.export(server)
        clock.now += 3600
        name = archive_name(sim.project_id, server)
        async with (
            FaultyProxy(moto_server.url).running() as proxy,
            S3Destination(bucket, "p", endpoint_url=proxy.url, part_size=PART) as destination,
        ):
            archive, attempts = await fetch_archive(
                api, server, export.export_id, destination, name, DownloadOptions(policy=policy)
            )
        expected = sim.expected_archive(server)
    assert attempts == 2
    assert proxy.count("AbortMultipartUpload") == (0 if accept_ranges else 1)
    assert archive.sha256 == hashlib.sha256(expected).hexdigest()
    assert await get(moto_server.url, bucket, f"p/{name}") == (expected, {"sha256": archive.sha256})
    assert await open_uploads(moto_server.url, bucket) == []


# -- parsing -o --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 4, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://logs", "logs", ""),
        ("s3://logs/", "logs", ""),
        ("s3://logs/fleet/nightly/", "logs", "fleet/nightly"),
        ("S3://logs/a", "logs", "a"),
        ("s3://logs.example-1/{date}", "logs.example-1", "2026-11-30"),
        ("s3://logs/runs/{datetime}/x", "logs", "runs/2026-11-30T0405Z/x"),
    ],
)
def test_s3_urls_parse_into_bucket_and_prefix(text, bucket, prefix):
    location = parse_destination(text, env={}, now=NOW)
    assert location == S3Location(bucket, prefix, None, None, "s3")


def test_placeholders_are_utc_and_sort_in_time_order():
    east = datetime(2026, 12, 1, 1, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=-8)))
    assert parse_destination("s3://logs/{date}", env={}, now=east).prefix == "2026-12-01"
    times = [
        datetime(2026, m, d, h, mi, tzinfo=UTC)
        for m, d, h, mi in [(1, 2, 3, 4), (1, 2, 13, 0), (11, 30, 4, 5), (12, 1, 0, 0)]
    ]
    expanded = [parse_destination("s3://logs/{datetime}", env={}, now=t).prefix for t in times]
    assert expanded == sorted(expanded) and all(":" not in p for p in expanded)


def test_endpoint_comes_from_the_option_then_the_standard_variables():
    env = {"AWS_ENDPOINT_URL": "http://generic:9000", "AWS_ENDPOINT_URL_S3": "https://s3.example:9443/"}
    assert parse_destination("s3://logs", env=env).endpoint_url == "https://s3.example:9443"
    assert (
        parse_destination("s3://logs", env={"AWS_ENDPOINT_URL": "http://generic:9000"}).endpoint_url
        == "http://generic:9000"
    )
    given = parse_destination("s3://logs", endpoint_url="https://given.example", env=env)
    assert given.endpoint_url == "https://given.example"
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert parse_destination("s3://logs", env=ignored).endpoint_url is None


def test_obs_is_s3_with_a_required_endpoint():
    obs = parse_destination("obs://logs/p", endpoint_url="https://obs.cn-north-4.myhuaweicloud.com", env={})
    assert obs == S3Location("logs", "p", "https://obs.cn-north-4.myhuaweicloud.com", "cn-north-4", "obs")
    assert obs.url == "obs://logs/p"
    with pytest.raises(UsageError, match="obs:// needs the OBS endpoint") as caught:
        parse_destination("obs://logs/p", env={})
    assert "myhuaweicloud.com" in caught.value.hint


def test_an_obs_endpoint_names_the_region_unless_one_is_set():
    endpoint = "https://obs.cn-north-4.myhuaweicloud.com"
    assert parse_destination("obs://logs", endpoint_url=endpoint, env={}).region == "cn-north-4"
    assert (
        parse_destination("obs://logs", endpoint_url=endpoint, region="ap-southeast-1", env={}).region
        == "ap-southeast-1"
    )
    assert (
        parse_destination("obs://logs", endpoint_url=endpoint, env={"AWS_DEFAULT_REGION": "cn-east-3"}).region is None
    )
    assert parse_destination("s3://logs", endpoint_url="https://minio.example", env={}).region is None


def test_plain_paths_are_local_folders():
    assert parse_destination("/srv/logs/2026", env={}) == LocalLocation(Path("/srv/logs/2026"))
    assert parse_destination("out", env={}) == LocalLocation(Path("out"))


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("gs://logs/p", {}, "unsupported URL scheme 'gs:'"),
        ("s3:logs/p", {}, "'s3:' must be followed by //BUCKET"),
        ("s3://", {}, "has no bucket"),
        ("s3:///p", {}, "has no bucket"),
        ("s3://Logs_2026/p", {}, "'Logs_2026' is not a valid bucket name"),
        ("s3://lo/p", {}, "'lo' is not a valid bucket name"),
        ("s3://10.0.0.1/p", {}, "is not a valid bucket name"),
        ("s3://logs/a//b", {}, "empty, '.' or '..' segment"),
        ("s3://logs/a/../b", {}, "empty, '.' or '..' segment"),
        ("s3://logs/p?x=1", {}, "query"),
        ("s3://logs/{when}", {}, "unknown placeholder '{when}'"),
        ("s3://logs/{date", {}, "unmatched brace"),
        ("s3://logs/a\tb", {}, "control characters"),
        ("s3://logs/" + "x" * 800, {}, "longer than"),
        ("/srv/logs", {"endpoint_url": "https://s3.example"}, "is for object storage"),
        ("s3://logs/p", {"endpoint_url": "ftp://s3.example"}, "not a usable object-storage endpoint"),
        ("s3://logs/p", {"endpoint_url": "s3.example:9000"}, "not a usable object-storage endpoint"),
        ("s3://logs/p", {"endpoint_url": "https://s3.example:99999"}, "not a usable object-storage endpoint"),
    ],
)
def test_bad_destinations_are_usage_errors_with_a_hint(text, options, message):
    with pytest.raises(UsageError) as caught:
        parse_destination(text, env={}, now=NOW, **options)
    assert message in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("s3://AKIDEXAMPLE:wJalrXUtnFEMIsecret@logs/p", {}),
        ("s3://AKIDEXAMPLE:wJalr/XUtnFEMIsecret@logs/p", {}),
        ("s3://logs/p", {"endpoint_url": "https://AKIDEXAMPLE:wJalrXUtnFEMIsecret@s3.example"}),
        ("s3://logs/p", {"env": {"AWS_ENDPOINT_URL_S3": "https://AKIDEXAMPLE:wJalrXUtnFEMIsecret@s3.example"}}),
    ],
)
def test_credentials_in_a_url_are_refused_and_never_echoed(text, options):
    options.setdefault("env", {})
    with pytest.raises(UsageError) as caught:
        parse_destination(text, **options)
    assert "credentials" in str(caught.value)
    assert "wJalr" not in str(caught.value) and "AKIDEXAMPLE" not in str(caught.value)


def test_location_opens_a_destination_for_its_bucket_and_prefix():
    location = parse_destination("obs://logs/{date}", endpoint_url="https://obs.example", env={}, now=NOW)
    destination = location.open(part_size=PART)
    assert isinstance(destination, S3Destination)
    assert (destination.bucket, destination.prefix, destination.endpoint_url) == (
        "logs",
        "2026-11-30",
        "https://obs.example",
    )
    assert destination.key(NAME) == f"2026-11-30/{NAME}"
