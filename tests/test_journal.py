"""The journal when its disk or database misbehaves: the run goes on, and says so once."""

from __future__ import annotations

import logging
import sqlite3

import anyio
import pytest

from collector.sweep.events import Phase, PhaseChanged
from collector.sweep.journal import Journal

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def event(server_id: str, phase: Phase = Phase.POLLING) -> PhaseChanged:
    return PhaseChanged("p", server_id, phase, Phase.EXPORTING, export_id="7")


async def test_a_failing_journal_write_is_reported_once_and_never_blocks_the_sweep(tmp_path, caplog):
    """Another process holds the database locked: the writer's transaction fails after SQLite's
    busy timeout; the event still returns, the failure is logged once, later rows are dropped."""
    journal = Journal.open(tmp_path)
    blocker = sqlite3.connect(journal.path, isolation_level=None)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(journal.writer)
            await journal.record(event("a"))  # durable before the lock
            blocker.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.ERROR, logger="collector.sweep.journal"):
                with anyio.fail_after(20):
                    await journal.record(event("b"))  # waits out the busy timeout, then gives up
                    await journal.record(event("c"))  # the journal has failed: returns at once
            journal.close()
        assert journal.failure is not None and "database is locked" in str(journal.failure)
        errors = [r for r in caplog.records if r.name == "collector.sweep.journal" and r.levelno == logging.ERROR]
        assert len(errors) == 1 and "a re-run may repeat work" in errors[0].getMessage()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        journal.shutdown()
    again = Journal.open(tmp_path)
    try:
        assert set(again.entries()) == {("p", "a")}
    finally:
        again.shutdown()
