"""Committing archives to a local folder in groups: batching, one failure alone, cancellation."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import anyio
import pytest

from collector import storage
from collector.storage import LocalDestination, _GroupCommit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


def counting_folder_fsyncs(monkeypatch) -> list[Path]:
    fsynced: list[Path] = []
    real = storage._fsync_folder

    def fsync_folder(folder: Path) -> None:
        fsynced.append(folder)
        real(folder)

    monkeypatch.setattr(storage, "_fsync_folder", fsync_folder)
    return fsynced


def renaming(folder: Path, name: str, gate: threading.Event | None = None):
    """A commit step: waits for `gate` if given, then puts `name` in place; returns its folder."""

    def step() -> Path:
        if gate is not None:
            assert gate.wait(10)
        part = folder / f"{name}.part"
        part.write_bytes(name.encode())
        os.replace(part, folder / name)
        return folder

    return step


async def test_commits_arriving_during_a_batch_share_the_next_one(tmp_path, monkeypatch):
    fsynced = counting_folder_fsyncs(monkeypatch)
    commits = _GroupCommit()
    gate = threading.Event()
    first = asyncio.ensure_future(commits.run(renaming(tmp_path, "a", gate)))
    await asyncio.sleep(0.05)  # the first batch is in its worker thread, held at the gate
    rest = [asyncio.ensure_future(commits.run(renaming(tmp_path, name))) for name in "bcdef"]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, *rest)
    assert sorted(p.name for p in tmp_path.iterdir()) == list("abcdef")
    assert fsynced == [tmp_path, tmp_path]  # two batches: "a", then the five that waited for it


async def test_a_failed_step_fails_its_own_commit_only(tmp_path):
    commits = _GroupCommit()

    def full_disk() -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    outcomes = await asyncio.gather(
        commits.run(renaming(tmp_path, "a")), commits.run(full_disk), commits.run(renaming(tmp_path, "b")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


async def test_a_cancelled_commit_finishes_before_the_cancellation_lands(tmp_path):
    """Its caller then removes nothing that a worker thread is about to rename."""
    commits = _GroupCommit()
    gate = threading.Event()
    task = asyncio.ensure_future(commits.run(renaming(tmp_path, "a", gate)))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for its step
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (tmp_path / "a").read_bytes() == b"a"


async def test_small_archives_land_whole_in_a_folder_made_on_demand(tmp_path):
    destination = LocalDestination(tmp_path)
    partials = [await destination.open_partial(f"project/{n}.tar.gz") for n in range(20)]
    for n, partial in enumerate(partials):
        await partial.write([b"\x1f\x8b", bytes([n]) * 100])
    archives = await asyncio.gather(*(partial.commit() for partial in partials))
    assert [a.size for a in archives] == [102] * 20
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == sorted(f"{n}.tar.gz" for n in range(20))
    assert (tmp_path / "project" / "7.tar.gz").read_bytes() == b"\x1f\x8b" + bytes([7]) * 100


async def test_a_stale_part_from_a_killed_run_is_replaced(tmp_path):
    destination = LocalDestination(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.tar.gz.part").write_bytes(b"old bytes from a run that was killed")
    partial = await destination.open_partial("p/a.tar.gz")
    await partial.write([b"\x1f\x8bnew"])
    await partial.commit()
    assert (tmp_path / "p" / "a.tar.gz").read_bytes() == b"\x1f\x8bnew"
    assert not (tmp_path / "p" / "a.tar.gz.part").exists()


async def test_a_commit_cancelled_by_its_scope_finishes_first(tmp_path):
    commits = _GroupCommit()
    gate = threading.Event()
    opener = threading.Timer(0.3, gate.set)
    opener.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with anyio.move_on_after(0.05) as scope:
        await commits.run(renaming(tmp_path, "a", gate))
        finished = loop.time()
        await anyio.sleep(0)  # where the cancellation lands
    assert scope.cancelled_caught
    assert finished - started >= 0.25  # held until the step was done, not just 0.05 s
    assert (tmp_path / "a").read_bytes() == b"a"
