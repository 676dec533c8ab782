"""Committing archives to a local folder in groups: batching, one failure alone, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from _audit import watching

from collector.destinations.local import LocalDestination, _GroupCommit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


@contextmanager
def folder_opens(folder: Path) -> Iterator[list[Path]]:
    """Each time `folder` itself is opened during the block (to fsync it: nothing else here opens
    a folder as a file), seen by an audit hook rather than a patch."""
    opened: list[Path] = []

    def on_open(path: object, mode: object, flags: object) -> None:
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder:
            opened.append(Path(path))

    with watching("open", on_open):
        yield opened


def renaming(folder: Path, name: str, gate: threading.Event | None = None, entered: threading.Event | None = None):
    """A commit step: says it has `entered` its worker thread, waits for `gate` if given, then
    puts `name` in place; returns its folder."""

    def step() -> Path:
        if entered is not None:
            entered.set()
        if gate is not None:
            assert gate.wait(10)
        part = folder / f"{name}.part"
        part.write_bytes(name.encode())
        os.replace(part, folder / name)
        return folder

    return step


async def test_commits_arriving_during_a_batch_share_the_next_one(tmp_path):
    with folder_opens(tmp_path) as fsynced:
        async with anyio.create_task_group() as leaders:
            commits = _GroupCommit(leaders)
            gate, entered = threading.Event(), threading.Event()
            first = asyncio.ensure_future(commits.run(renaming(tmp_path, "a", gate, entered)))
            await anyio.to_thread.run_sync(entered.wait, 10)  # the first batch is in its worker thread, at the gate
            rest = [asyncio.ensure_future(commits.run(renaming(tmp_path, name))) for name in "bcdef"]
            await until(lambda: len(commits._waiting) == 5)  # all five wait for the next batch
            gate.set()
            await asyncio.gather(first, *rest)
            assert sorted(p.name for p in tmp_path.iterdir()) == list("abcdef")
    assert fsynced == [tmp_path, tmp_path]  # two batches: "a", then the five that waited for it


async def test_a_failed_step_fails_its_own_commit_only(tmp_path):
    async with anyio.create_task_group() as leaders:
        await one_failure_alone(tmp_path, _GroupCommit(leaders))


async def one_failure_alone(tmp_path, commits: _GroupCommit) -> None:

    def full_disk() -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    outcomes = await asyncio.gather(
        commits.run(renaming(tmp_path, "a")),
        commits.run(full_disk),
        commits.run(renaming(tmp_path, "b")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


async def test_a_cancelled_commit_finishes_before_the_cancellation_lands(tmp_path):
    """Its caller then removes nothing that a worker thread is about to rename."""
    async with anyio.create_task_group() as leaders:
        await cancelled_commit_finishes(tmp_path, _GroupCommit(leaders))


async def cancelled_commit_finishes(tmp_path, commits: _GroupCommit) -> None:
    gate, entered = threading.Event(), threading.Event()
    task = asyncio.ensure_future(commits.run(renaming(tmp_path, "a", gate, entered)))
    await anyio.to_thread.run_sync(entered.wait, 10)  # its step is running in a worker thread
    task.cancel()
    for _ in range(20):  # let the cancellation be delivered, and give it every chance to end the task
        await asyncio.sleep(0)
    assert not task.done()  # still waiting for its step
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (tmp_path / "a").read_bytes() == b"a"


@pytest.mark.parametrize("entered", [True, False], ids=["grouped", "alone"])
async def test_small_archives_land_whole_in_a_folder_made_on_demand(tmp_path, entered):
    """In its `async with` (as a run uses it) commits are grouped; outside it, each is alone."""
    destination = LocalDestination(tmp_path)
    async with destination if entered else contextlib.nullcontext(destination):
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
    async with anyio.create_task_group() as leaders:
        await commit_cancelled_by_scope_finishes(tmp_path, _GroupCommit(leaders))


async def commit_cancelled_by_scope_finishes(tmp_path, commits: _GroupCommit) -> None:
    gate, entered = threading.Event(), threading.Event()
    order: list[str] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:

            async def cancel_when_running() -> None:
                await anyio.to_thread.run_sync(entered.wait, 10)
                scope.cancel()  # while the step is held in its worker thread
                order.append("cancelled")
                gate.set()  # now let the step finish

            tasks.start_soon(cancel_when_running)
            await commits.run(renaming(tmp_path, "a", gate, entered))
            order.append("returned")
            await anyio.lowlevel.checkpoint()  # where the cancellation lands
    assert scope.cancelled_caught
    assert order == ["cancelled", "returned"]  # held until the step was done, though cancelled first
    assert (tmp_path / "a").read_bytes() == b"a"


async def until(condition) -> None:
    """Let other tasks run until `condition()` holds: no wall-clock waiting."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
