"""Peak RSS of a fleet sweep into object storage, against the same sweep into a local folder.

A simulator (``collector simulate``, its own process) serves ``--servers`` (2,000) archives of
``--archive-bytes`` (256 KiB); moto's S3 server (``python -m moto.server``, its own process,
see tests/_moto.py) stands in for the bucket. The measured child runs the real pipeline
(`collector.sweep.Sweep`: export, poll, download with `fetch_archive`) with default settings
but ``--rate``, into an `S3Destination`, then puts report.json; its peak RSS is the kernel's
high-water mark (``VmHWM``, see `_common.run_measured`). The baseline is ``collector run``
into a temporary folder against a fresh simulator of the same fleet.

``--direct`` measures the destination alone instead of the sweep: the child writes the same
number of generated archives through it, ``--downloads`` at a time.

Every object is checked afterwards: its size and the sha256 in its metadata against the
simulator's bytes (regenerated here). Exits 1 if any is wrong.

    python benchmarks/s3_rss.py                       # 2,000 x 256 KiB, S3 and local
    python benchmarks/s3_rss.py --servers 200 --no-local
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    emit,
    expected_digest,
    load_report,
    parse_bytes_range,
    round_floats,
    run_measured,
)

from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from _moto import DUMMY_ENV, MotoServer  # noqa: E402 - after the path that holds it

BUCKET = "collector-bench"
PREFIX = "runs/{datetime}"


# -- the measured child ---------------------------------------------------------------------------


async def child_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from collector.cli import _session
    from collector.destinations.s3 import S3Destination
    from collector.inventory import load_inventory
    from collector.report import build_report
    from collector.sweep import Settings, Sweep

    inventory = load_inventory(Path(args.inventory))
    settings = Settings(rate=args.rate, downloads=args.downloads)
    started = datetime.now(timezone.utc)
    async with (
        S3Destination(BUCKET, args.prefix, endpoint_url=args.endpoint, max_connections=settings.downloads + 8) as destination,
        _session(settings) as session,
    ):
        results = await Sweep(inventory, settings, destination, session).run()
        report = build_report(results, started_at=started, finished_at=datetime.now(timezone.utc),
                              inventory=str(inventory.path))
        await destination.write_text("report.json", json.dumps(report, indent=1))
    return {"collected": sum(r.state == "collected" for r in results), "peak_buffered_mb": destination.peak_buffered / MIB}


async def child_direct(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from collector.destinations.s3 import S3Destination
    from collector.download import archive_name
    from collector.simulator.archive import iter_archive, plan_archive

    config = SimConfig(servers=args.servers, archive_bytes=args.archive_bytes, seed=args.seed)
    limiter = anyio.CapacityLimiter(args.downloads)
    collected = 0

    async with S3Destination(BUCKET, args.prefix, endpoint_url=args.endpoint,
                             max_connections=args.downloads + 8) as destination:

        async def one(server_id: str, size: int) -> None:
            nonlocal collected
            try:
                partial = await destination.open_partial(archive_name(config.project_id, server_id))
                for chunk in iter_archive(plan_archive(server_id, size, config.seed), 256 * 1024):
                    await partial.write([bytes(chunk)])
                await partial.commit()
                collected += 1
            finally:
                limiter.release_on_behalf_of(server_id)

        async with anyio.create_task_group() as tasks:
            for profile in Fleet(config).profiles:  # a task only once it may run, as the sweep does
                await limiter.acquire_on_behalf_of(profile.id)
                tasks.start_soon(one, profile.id, profile.archive_bytes)
    return {"collected": collected, "peak_buffered_mb": destination.peak_buffered / MIB}


def child(args: argparse.Namespace) -> None:
    run = child_direct if args.direct else child_sweep
    print(json.dumps(asyncio.run(run(args))))


# -- the harness --------------------------------------------------------------------------------


async def check_bucket(config: SimConfig, endpoint: str, prefix: str) -> dict[str, Any]:
    """Each server's object is there with the simulator's size, and the sha256 of its bytes."""
    from aiobotocore.session import get_session

    problems: list[str] = []
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1") as client:
        for profile in Fleet(config).profiles:
            key = f"{prefix}/{config.project_id}/{profile.id}-dump.tar.gz"
            try:
                head = await client.head_object(Bucket=BUCKET, Key=key)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                problems.append(f"{profile.id}: {type(exc).__name__}")
                continue
            if head["ContentLength"] != profile.archive_bytes:
                problems.append(f"{profile.id}: {head['ContentLength']} bytes, served {profile.archive_bytes}")
            elif head["Metadata"].get("sha256") != expected_digest(config, profile.id, profile.archive_bytes):
                problems.append(f"{profile.id}: sha256 in the metadata is not the served archive's")
    return {"correct": not problems, "objects_checked": len(Fleet(config).profiles),
            "problems": problems[:5], "problem_count": len(problems)}


def run_s3(config: SimConfig, args: argparse.Namespace, workdir: Path, moto: MotoServer) -> dict[str, Any]:
    prefix = datetime.now(timezone.utc).strftime(f"runs/%Y%m%dT%H%M%S-{'direct' if args.direct else 'sweep'}")
    command = [sys.executable, __file__, "--child", "--endpoint", moto.url, "--prefix", prefix,
               "--rate", str(args.rate), "--downloads", str(args.downloads), "--servers", str(args.servers),
               "--archive-bytes", f"{config.archive_bytes[0]}-{config.archive_bytes[1]}", "--seed", str(args.seed)]
    if args.direct:
        measured = run_measured([*command, "--direct"])
    else:
        with SimProcess(config, workdir) as sim:
            measured = run_measured([*command, "--inventory", str(sim.inventory)])
    record: dict[str, Any] = {"case": "s3-direct" if args.direct else "s3-sweep", "exit_code": measured.exit_code,
                              "wall_s": measured.wall_s, "peak_rss_mb": measured.peak_rss_mb, "cpu_s": measured.cpu_s}
    try:
        record.update(json.loads(measured.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        record["stderr"] = measured.stderr[-2000:]
    record.update(asyncio.run(check_bucket(config, moto.url, prefix)))
    return record


def run_local(config: SimConfig, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out = workdir / "out"
    with SimProcess(config, workdir) as sim:
        measured = run_measured(collector_command(sim.inventory, out, ["--rate", str(args.rate),
                                                                       "--downloads", str(args.downloads)]))
    check = check_archives(config, out, report=load_report(out))
    return {"case": "local-sweep", "exit_code": measured.exit_code, "wall_s": measured.wall_s,
            "peak_rss_mb": measured.peak_rss_mb, "cpu_s": measured.cpu_s, **check.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2000)
    parser.add_argument("--archive-bytes", type=parse_bytes_range, default=(256 * 1024, 256 * 1024))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=200.0, help="the collector's starting request rate")
    parser.add_argument("--downloads", type=int, default=16)
    parser.add_argument("--direct", action="store_true", help="the destination alone, without the sweep")
    parser.add_argument("--no-local", action="store_true", help="skip the local-folder baseline")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--inventory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    config = SimConfig(servers=args.servers, archive_bytes=args.archive_bytes, export_seconds=(0.0, 0.0),
                       seed=args.seed)
    os.environ.update(DUMMY_ENV)  # for moto's clients, the measured child and the check
    moto = MotoServer()
    moto.start()
    ok = True
    try:
        from aiobotocore.session import get_session

        async def create() -> None:
            async with get_session().create_client("s3", endpoint_url=moto.url, region_name="us-east-1") as client:
                await client.create_bucket(Bucket=BUCKET)

        asyncio.run(create())
        with tempfile.TemporaryDirectory() as tmp:
            record = run_s3(config, args, Path(tmp), moto)
            emit(round_floats({**record, "servers": args.servers, **code_version()}))
            ok &= record["exit_code"] == 0 and record["correct"]
        if not args.no_local and not args.direct:
            with tempfile.TemporaryDirectory() as tmp:
                record = run_local(config, args, Path(tmp))
                emit(round_floats({**record, "servers": args.servers, **code_version()}))
                ok &= record["exit_code"] == 0 and record["correct"]
    finally:
        moto.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
