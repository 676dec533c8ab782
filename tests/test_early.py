"""Polls moved into request budget nobody uses (collector.sweep.early): who is woken, when not."""

from __future__ import annotations

import dataclasses

import aiohttp
import anyio
import pytest

from collector.config.inventory import load_inventory
from collector.control.throttle import RateLimiter
from collector.destinations.local import LocalDestination
from collector.simulator import SimConfig, Simulator
from collector.sweep.early import EarlyPolls
from collector.sweep.pipeline import Sweep

pytestmark = pytest.mark.anyio

LONG = 30.0  # a wait no test sits out: only a wake ends it in time


async def wait_for(condition, seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


async def test_the_export_waiting_longest_is_woken_first_into_spare_slots():
    early = EarlyPolls(RateLimiter(100), pressing=lambda: True)
    order: list[str] = []

    async def export(name: str) -> None:
        assert await early.sleep(LONG)  # woken, not timed out
        order.append(name)

    async with anyio.create_task_group() as tasks:
        for count, name in enumerate(("oldest", "middle", "young"), start=1):
            tasks.start_soon(export, name)
            await wait_for(lambda count=count: early.waiting == count)  # each begins waiting in turn
        tasks.start_soon(early.run)
        await wait_for(lambda: len(order) == 3)
        tasks.cancel_scope.cancel()
    assert order == ["oldest", "middle", "young"]
    assert early.woken == 3 and early.waiting == 0


async def test_an_export_waiting_again_is_woken_before_those_asked_for_after_it():
    """A wait re-armed (its first ran out before the fleet's durations were known) belongs to
    an export asked for before any still in a first wait: woken first (at 600 servers, most
    early polls found exports a few seconds old, none done, while those asked first waited)."""
    early = EarlyPolls(RateLimiter(100), pressing=lambda: True)
    order: list[str] = []

    async def export(name: str, first: float) -> None:
        woken = await early.sleep(first)
        if not woken:  # its first wait ran out: postponed, as the pipeline does
            woken = await early.sleep(LONG, again=True)
        assert woken
        order.append(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(export, "asked first", 0.05)
        await wait_for(lambda: early.waiting == 1)
        tasks.start_soon(export, "asked next", LONG)
        await wait_for(lambda: early.waiting == 2)
        await anyio.sleep(0.15)  # the first one's first wait runs out; it waits again
        tasks.start_soon(early.run)
        await wait_for(lambda: len(order) == 2)
        tasks.cancel_scope.cancel()
    assert order == ["asked first", "asked next"]


async def test_nobody_is_woken_while_the_budget_does_not_bind():
    """Exports of 60-120 s leave the budget idle most of the run: polls moved into it would
    only add requests (issue 14's long exports: at most 3.5 a server)."""
    early = EarlyPolls(RateLimiter(100), pressing=lambda: False)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(early.run)
        assert await early.sleep(0.3) is False  # its own time came
        tasks.cancel_scope.cancel()
    assert early.woken == 0


async def test_nobody_is_woken_while_others_wait_for_the_rate():
    limiter = RateLimiter(5, burst_seconds=0.0)
    early = EarlyPolls(limiter, pressing=lambda: True)
    woken: list[bool] = []

    async def queue_forever() -> None:
        while True:
            await limiter.acquire()  # a download's or an export's turn: always someone waiting

    async def export() -> None:
        woken.append(await early.sleep(0.5))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(queue_forever)
        tasks.start_soon(queue_forever)
        await anyio.sleep(0.05)
        tasks.start_soon(early.run)
        await export()
        tasks.cancel_scope.cancel()
    assert woken == [False] and early.woken == 0


async def test_a_cancelled_wait_is_never_woken_and_the_next_one_is():
    early = EarlyPolls(RateLimiter(100), pressing=lambda: True)
    woken: list[str] = []

    async def export(name: str) -> None:
        if await early.sleep(LONG):
            woken.append(name)

    gone = anyio.CancelScope()

    async def cancelled() -> None:
        with gone:
            await export("cancelled")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(cancelled)
        await wait_for(lambda: early.waiting == 1)
        tasks.start_soon(export, "kept")
        await wait_for(lambda: early.waiting == 2)
        gone.cancel()
        await wait_for(lambda: early.waiting == 1)
        assert early.wake() is True
        await wait_for(lambda: woken == ["kept"])
        assert early.wake() is False  # nobody left
    assert early.woken == 1


async def test_waits_that_ended_by_their_time_leave_nothing_behind():
    """Most waits end by their own timer (no spare budget): 5,000 servers hold only those
    waiting now."""
    early = EarlyPolls(RateLimiter(100), pressing=lambda: False)
    for _ in range(300):
        assert await early.sleep(0.0) is False
    assert early.waiting == 0


async def test_a_fleet_whose_budget_binds_polls_into_the_idle_budget_and_collects_all(tmp_path, fast_settings):
    """60 servers against an API of 30 requests/s: once the exports are asked for (and the
    API has refused some), the exports waiting for their aimed first poll are polled into the
    budget their wait left idle, oldest first; each is collected exactly once."""
    config = SimConfig(servers=60, export_seconds=(1.5, 3.0), archive_bytes=(4096, 8192), rate_limit=30, seed=21)
    settings = dataclasses.replace(fast_settings, rate=20, poll_interval=1.0, poll_max=10.0)
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        sim.write_inventory(tmp_path / "inventory.yaml")
        sweep = Sweep(load_inventory(tmp_path / "inventory.yaml"), settings, LocalDestination(tmp_path), session)
        results = await sweep.run()
        assert all(r.state == "collected" for r in results)
        assert sim.count(status=429) > 0  # the budget was met
        (early,) = sweep.early.values()
        assert early.woken > 0
        assert early.waiting == 0
        assert sim.count("download", status=200) == 60  # each collected exactly once


async def test_only_an_export_that_may_end_the_run_is_polled_tight(tmp_path, fast_settings):
    """Tight polls (`PollSchedule.tight_delay`) only once every export of the endpoint has
    been asked for, for an export whose end is within `LAST_SECONDS` of the latest estimated
    there, and while the exports set the run's end: the requests left (a poll and a download
    a server) fit before the latest end, or in a second."""
    async with Simulator(SimConfig(servers=3)) as sim, aiohttp.ClientSession() as session:
        sim.write_inventory(tmp_path / "inventory.yaml")
        sweep = Sweep(load_inventory(tmp_path / "inventory.yaml"), fast_settings, LocalDestination(tmp_path), session)
        gateway = sweep.gateways[sim.url]
        gateway.limiter.rate = 100.0  # never refused: its rate is the budget it goes by
        sweep._left[sim.url] = 300
        sweep._to_ask[sim.url] = 1
        assert not sweep._may_end_run(gateway, 18.0, now=5.0)  # an export still to ask for
        sweep._to_ask[sim.url] = 0
        assert sweep._may_end_run(gateway, 18.0, now=5.0)  # 600 requests: 6 s, done by 11 s
        assert sweep._may_end_run(gateway, 17.5, now=5.0)  # within a second of the latest
        assert not sweep._may_end_run(gateway, 16.5, now=5.0)  # others end later
        assert not sweep._may_end_run(gateway, None, now=5.0)  # no estimate
        sweep._left[sim.url] = 700  # 14 s of requests: they, not the exports, set the end
        assert not sweep._may_end_run(gateway, 18.0, now=5.0)
        sweep._left[sim.url] = 40  # near the end: 0.8 s of requests left
        assert sweep._may_end_run(gateway, 18.0, now=17.9)
