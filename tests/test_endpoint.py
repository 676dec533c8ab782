"""The endpoint gate: dead endpoints are given up fast and cheaply, outages are ridden out.

The unit tests drive `EndpointHealth` with an injected clock, so the 30 s and 600 s rules
run in milliseconds; the end-to-end tests point real sweeps at ports where nothing listens.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import yaml
from _fleet import assert_exact, by_id, sweep
from _sockets import closed_port

from collector.control.endpoint import OUTAGE_AFTER, EndpointHealth, Unreachable
from collector.errors import ConnectionReset, ConnectRefused, ExitCode, RequestTimeout, ServerError
from collector.run.outcome import exit_code
from collector.simulator import SimConfig, Simulator

pytestmark = pytest.mark.anyio


class FakeTime:
    """Virtual time: when every task is waiting, the clock jumps to the earliest wake-up."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.Event()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), id(wake), wake))
        await wake.wait()

    async def drive(self) -> None:
        """Run beside the tasks under test; cancel it when they are done."""
        while True:
            for _ in range(50):  # let every task that can run get to its next wait
                await asyncio.sleep(0)
            if self._sleepers:
                self.now = max(self.now, self._sleepers[0][0])
                while self._sleepers and self._sleepers[0][0] <= self.now:
                    heapq.heappop(self._sleepers)[2].set()


def refused() -> ConnectRefused:
    return ConnectRefused("ExportServerLogs: cannot connect to 127.0.0.1:9: Connection refused", host="127.0.0.1")


def gateway(status: int = 502) -> ServerError:
    return ServerError(status, operation="ShowLogsExportStatus")


async def hammer(health: EndpointHealth, time_: FakeTime, outcome, tasks: int = 50) -> tuple[list[object], int]:
    """`tasks` servers, each sending until the gate lets its request succeed or gives up.

    `outcome(n)` decides how the n-th request sent goes. Between its own tries a server
    waits 1 s, as a retry would. Returns what each server ended with, and the requests sent.
    """
    sent: list[object] = []
    ends: list[object] = []

    async def server(index: int) -> None:
        while True:
            try:
                async with health.admit() as probe:
                    sent.append(index)
                    result = outcome(len(sent))
                    if isinstance(result, BaseException):
                        health.failed(result, probe)
                    else:
                        health.answered(probe)
                        ends.append("ok")
                        return
            except Unreachable as exc:
                ends.append(exc)
                return
            await time_.sleep(1.0)

    async with anyio.create_task_group() as clock:
        clock.start_soon(time_.drive)
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(server, index)
        clock.cancel_scope.cancel()
    return ends, len(sent)


async def test_an_endpoint_that_never_answers_is_given_up_after_dead_after_with_few_requests():
    time_ = FakeTime()
    start = time_.now
    health = EndpointHealth("http://127.0.0.1:9", dead_after=30, clock=time_, sleep=time_.sleep)
    ends, sent = await hammer(health, time_, lambda n: refused())
    assert all(isinstance(end, Unreachable) for end in ends) and len(ends) == 50
    assert "API unreachable: http://127.0.0.1:9" in str(ends[0]) and "Connection refused" in str(ends[0])
    # The first request of each server got through before the first refusal was known; after
    # that, one probe at a time: a handful, not 50 servers x 8 attempts.
    assert sent <= 50 + 10
    assert 30 <= time_.now - start <= 31


async def test_an_endpoint_that_answers_within_the_deadline_lets_every_waiter_through():
    time_ = FakeTime()
    health = EndpointHealth("http://api", dead_after=30, clock=time_, sleep=time_.sleep)
    # Refused until the 5th request (the 4th probe, about 5 s in); then everything answers.
    ends, _sent = await hammer(health, time_, lambda n: refused() if n < 5 else "ok")
    assert ends == ["ok"] * 50
    assert not health.paused and health.given_up is None
    assert time_.now - 1000.0 < 30


async def test_one_server_failing_does_not_pause_an_endpoint_that_answered_before():
    time_ = FakeTime()
    health = EndpointHealth("http://api", clock=time_, sleep=time_.sleep)
    health.answered()
    for _ in range(OUTAGE_AFTER - 1):
        health.failed(gateway())
    health.answered()  # another server's poll came back: the streak is broken
    for _ in range(OUTAGE_AFTER - 1):
        health.failed(ConnectionReset("reset"))
    assert not health.paused
    health.failed(RequestTimeout("slow"))
    assert health.paused


async def test_a_timeout_while_others_were_answered_is_its_servers_own_and_pauses_nobody():
    """Issue 14: three slow servers in a fleet the API answered ended the run with exit 4."""
    health = EndpointHealth("http://api")
    health.answered(subject="fast")
    slow = [health.sent() for _ in range(3)]
    health.answered(subject="fast")  # the API answered someone while the three waited
    assert all(health.failed(RequestTimeout("slow"), ticket=ticket, subject=f"s{n}") for n, ticket in enumerate(slow))
    # Later, nothing else is in flight: their timeouts are still their own (they lag), however many.
    for _ in range(2 * OUTAGE_AFTER):
        for n in range(3):
            assert health.failed(RequestTimeout("slow"), ticket=health.sent(), subject=f"s{n}")
    assert not health.paused


async def test_a_lagging_server_answered_again_is_judged_like_any_other():
    health = EndpointHealth("http://api")
    health.answered(subject="fast")
    ticket = health.sent()
    health.answered(subject="fast")
    assert health.failed(RequestTimeout("slow"), ticket=ticket, subject="s")
    health.answered(subject="s")  # its next request came back: no longer lagging
    assert not health.failed(RequestTimeout("slow"), ticket=health.sent(), subject="s")


async def test_timeouts_that_no_answer_outlived_still_pause_and_a_probes_timeout_is_the_endpoints():
    """Every request times out and nothing answers anyone: an outage, whatever the subjects."""
    health = EndpointHealth("http://api")
    health.answered(subject="a")
    ticket = health.sent()
    health.answered(subject="a")
    assert health.failed(RequestTimeout("slow"), ticket=ticket, subject="lagging")  # before the outage
    tickets = [health.sent() for _ in range(OUTAGE_AFTER)]
    for n, ticket in enumerate(tickets):
        assert not health.failed(RequestTimeout("slow"), ticket=ticket, subject=f"s{n}")
    assert health.paused
    # While paused, the lagging server's timeout (as a probe or not) is the endpoint's.
    assert not health.failed(RequestTimeout("slow"), probe=True, ticket=health.sent(), subject="lagging")
    assert not health.failed(RequestTimeout("slow"), ticket=health.sent(), subject="lagging")


async def test_a_refused_connection_pauses_an_endpoint_that_answered_before_at_once():
    time_ = FakeTime()
    health = EndpointHealth("http://api", clock=time_, sleep=time_.sleep)
    health.answered()
    health.failed(refused())
    assert health.paused


async def test_an_outage_is_ridden_out_and_then_given_up_after_the_outage_timeout():
    time_ = FakeTime()
    health = EndpointHealth("http://api", outage_timeout=600, clock=time_, sleep=time_.sleep)
    health.answered()
    ends, sent = await hammer(health, time_, lambda n: gateway(503) if n > 1 else "ok", tasks=20)
    assert ends[0] == "ok"
    assert all(isinstance(end, Unreachable) for end in ends[1:])
    assert "no answer for 600 s (--outage-timeout)" in str(ends[1])
    paused_for = time_.now - health.paused_since
    assert 600 <= paused_for <= 601
    assert sent < 40  # probes with backoff up to 30 s: about 25 in 600 s, not 20 x 8


async def test_an_outage_ends_at_the_first_answer():
    time_ = FakeTime()
    health = EndpointHealth("http://api", outage_timeout=600, clock=time_, sleep=time_.sleep)
    health.answered()
    ends, _sent = await hammer(health, time_, lambda n: refused() if n < 15 else "ok", tasks=10)
    assert ends == ["ok"] * 10
    assert not health.paused


async def test_a_probe_that_is_cancelled_hands_its_turn_to_the_next_request():
    time_ = FakeTime()
    health = EndpointHealth("http://api", clock=time_, sleep=time_.sleep)
    health.failed(refused())  # never answered: paused at once
    with anyio.CancelScope() as scope:
        async with health.admit() as probe:
            assert probe
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    async with health.admit() as probe:
        assert probe  # not stuck behind a probe that will never report


async def test_a_404_or_a_500_proves_the_endpoint_is_there():
    health = EndpointHealth("http://api")
    health.failed(ServerError(500, operation="x"))
    assert health.answered_once and not health.paused


def test_gateway_failures_from_across_the_fleet_are_an_overload_signal_and_one_500_is_not():
    time_ = FakeTime()
    health = EndpointHealth("http://api", clock=time_, sleep=time_.sleep)
    assert not health.overloaded(ServerError(500, operation="x"))
    assert health.overloaded(ServerError(503, operation="x", retry_after=2.0))
    assert not health.overloaded(gateway(502))
    assert not health.overloaded(RequestTimeout("slow"))
    assert health.overloaded(gateway(504))
    time_.now += 10
    assert not health.overloaded(gateway(502))  # the burst is over


# -- end to end -------------------------------------------------------------------------------


def dead_inventory(path: Path, servers: int, port: int) -> Path:
    ids = "\n".join(f"  - 2102313YJK10N{n:07d}" for n in range(servers))
    path.write_text(
        f"endpoint: http://127.0.0.1:{port}\nproject_id: 0a5f3c2e9b8d47e1a6c4f2b7d9e31c80\n"
        f"auth: {{token_env: CLOUDDC_TOKEN}}\nservers:\n{ids}\n"
    )
    return path


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_port_where_nothing_listens_ends_in_exit_4_within_60_s_with_few_log_lines(tmp_path):
    """The issue's acceptance check, as a user runs it: 1,000 servers, default settings."""
    inventory = dead_inventory(tmp_path / "fleet.yaml", 1000, closed_port())
    out = tmp_path / "out"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "collector", "run", "-i", str(inventory), "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
        env={**os.environ, "CLOUDDC_TOKEN": "secret-token-value"},
    )
    took = time.monotonic() - started
    assert run.returncode == ExitCode.UNREACHABLE, run.stderr
    assert took < 60
    lines = run.stderr.splitlines()
    assert len(lines) < 20, run.stderr
    assert "Traceback" not in run.stderr
    assert any("API unreachable" in line for line in lines)
    # While it probes, the progress line says so, and when it gives up (issue 17), not an ETA.
    progress = [line.split(";")[0] for line in lines if "progress:" in line][1:]  # the first is at once
    assert any("endpoint unreachable, probing (giving up in 0:" in line for line in progress), lines
    assert all("probing" in line or line.endswith("ETA --") for line in progress), lines  # never a made-up ETA
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["pending"] == 1000 and report["totals"]["failed"] == 0
    assert {s["state"] for s in report["servers"]} == {"pending"}
    assert all("API unreachable" in s["error"] for s in report["servers"])
    assert "API unreachable" in report["run"]["stopped"]
    assert "secret-token-value" not in run.stderr + (out / "report.json").read_text()


async def test_a_sweep_across_two_endpoints_collects_the_live_one_and_leaves_the_dead_ones_servers_pending(
    tmp_path, fast_settings
):
    settings = fast_settings.__class__(**{**fast_settings.__dict__, "dead_after": 0.5})
    port = closed_port()
    async with Simulator(SimConfig(servers=6, export_seconds=(0.05, 0.1))) as sim:
        inventory = tmp_path / "inventory.yaml"

        def add_dead_project() -> None:
            inventory.write_text(_as_two_projects(inventory.read_text(), port))

        outcome = await sweep(sim, tmp_path, settings, then=add_dead_project)
    results = by_id(outcome)
    live = list(sim.server_ids)
    assert all(results[sid].state == "collected" for sid in live)
    assert_exact(tmp_path, sim, live)
    dead = [r for r in outcome.results if r.server_id not in live]
    assert len(dead) == 40 and {r.state for r in dead} == {"pending"}
    assert all("API unreachable" in r.error for r in dead)
    assert outcome.unreachable and f"127.0.0.1:{port}" in outcome.unreachable
    assert exit_code(outcome) is ExitCode.UNREACHABLE


def _as_two_projects(text: str, port: int) -> str:
    """The simulator's single-project inventory, plus a second project on a dead endpoint."""
    data = yaml.safe_load(text)
    live = {"project_id": data.pop("project_id"), "servers": data.pop("servers")}
    dead = {
        "project_id": "deadbeefdeadbeefdeadbeefdeadbeef",
        "endpoint": f"http://127.0.0.1:{port}",
        "servers": [f"2102313YJK10N{n:07d}" for n in range(40)],
    }
    data["projects"] = [live, dead]
    return yaml.safe_dump(data)
