"""Work a destination runs beside its caller, owned by a task group: a write in flight while
the next batch arrives (local), a part uploading while the next one fills (S3), a batch of
commits (local). The caller holds a `Job` and collects its outcome later; the task group
that runs it (the destination's, for the destination's lifetime) outlives every job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup


class Job:
    """The outcome of one piece of work, to wait for once it is wanted."""

    __slots__ = ("done", "error", "scope")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.scope = anyio.CancelScope()  # cancels the work (and only it)

    def settle(self, error: BaseException | None = None) -> None:
        """The work is over, with `error` if it failed."""
        self.error = error
        self.done.set()

    async def result(self) -> None:
        """Wait for the work and raise its error. A cancelled caller leaves the work running."""
        await self.done.wait()
        if self.error is not None:
            raise self.error

    async def result_through_cancellation(self) -> None:
        """Like `result`, but a cancelled caller still waits for the work, and the cancellation
        lands once it is over: for a caller that must not race it (a rename in a worker thread).
        """
        with anyio.CancelScope(shield=True):
            try:
                await self.done.wait()
            except anyio.get_cancelled_exc_class():
                # A plain asyncio `Task.cancel()` gets through anyio's shield: wait all the same.
                await self.done.wait()
                raise
        if self.error is not None:
            raise self.error

    async def finished(self) -> None:
        """Wait, shielded, for the work to be over, whatever its outcome (now unwanted)."""
        with anyio.CancelScope(shield=True):
            await self.done.wait()


def start(tasks: TaskGroup, work: Callable[[], Awaitable[None]]) -> Job:
    """Run `work()` as a task of `tasks`; its outcome goes to the returned `Job`."""
    job = Job()

    async def run() -> None:
        error: BaseException | None = None
        try:
            with job.scope:
                await work()
        except Exception as exc:  # noqa: BLE001 - it belongs to the job's caller
            error = exc
        finally:
            job.settle(error)

    tasks.start_soon(run)
    return job


async def open_group() -> TaskGroup:
    """A task group for a destination's jobs, entered now and left by `close_group` when the
    destination's `async with` block ends (in the same task)."""
    tasks = anyio.create_task_group()
    await tasks.__aenter__()
    return tasks


async def close_group(tasks: TaskGroup, failed: bool) -> None:
    """Leave `tasks` once the block it served is over; if the block `failed`, the work it left
    is cancelled first. The block's own exception then goes on as itself, not in a group."""
    if failed:
        tasks.cancel_scope.cancel()
    await tasks.__aexit__(None, None, None)
