"""A whole fleet under hostile replies, end to end (issue 8): the fuzzer the collector must survive.

``collector simulate --hostile 0.3`` answers about a third of all requests with junk from
`collector.simulator.hostile`; ``collector run`` runs against it as a real process, with short
timeouts, from an empty working folder, with TMPDIR and HOME pointed at empty folders. Whatever
the replies, the run must end by itself, print no traceback, exit 0, 1 or 4, and leave an
output folder that `collector.simulator.audit` accepts (report.json true to the files, no
``.part``, only complete and exact archives under final names), with nothing written anywhere
else.

The seeds are chosen so that the first request of each call of each server meets, over the
three runs, 74 of the catalogue's 76 (call, entry) pairs. ``benchmarks/hostile.py`` runs the
same rules over 20 seeds, and with ``--each`` tells which entry breaks which rule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collector.simulator import SimConfig
from collector.simulator.audit import audit_output, has_traceback, listing

SEEDS = (22, 81, 210)
SERVERS = 50
HOSTILE = 0.3
RUN_SECONDS = 60  # a run still going after this is hung: retries back off 31 s at most with these seeds
RUN_FLAGS = ["--read-timeout", "2", "--export-timeout", "20", "--poll-interval", "0.2", "--grace", "2", "--no-progress"]
OK_EXIT_CODES = {0, 1, 4}


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_replies_leave_the_run_whole_and_only_true_archives(seed: int, tmp_path: Path):
    for name in ("cwd", "tmp", "home"):
        (tmp_path / name).mkdir()
    out = tmp_path / "out"
    inventory = tmp_path / "inventory.yaml"
    simulate = [
        sys.executable,
        "-m",
        "collector",
        "simulate",
        "--hostile",
        str(HOSTILE),
        "--servers",
        str(SERVERS),
        "--seed",
        str(seed),
        "--write-inventory",
        str(inventory),
    ]
    run = [sys.executable, "-m", "collector", "run", "-i", str(inventory), "-o", str(out), *RUN_FLAGS]
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "HOME": str(tmp_path / "home")}

    with (tmp_path / "simulator.err").open("w+") as simulator_err:
        simulator = subprocess.Popen(simulate, stdout=subprocess.PIPE, stderr=simulator_err, text=True)
        try:
            ready = simulator.stdout.readline()
            simulator.stdout.readline()  # "inventory written to ..."
            assert ready.startswith("simulator listening on "), "the simulator did not start"
            before = listing(tmp_path, skip=out)
            try:
                done = subprocess.run(
                    run, cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=RUN_SECONDS
                )
                hung, exit_code, stderr = False, done.returncode, done.stderr
            except subprocess.TimeoutExpired as exc:  # run() has killed it
                hung, exit_code, stderr = True, None, _text(exc.stderr)
        finally:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(timeout=30)
            simulator.stdout.close()
        simulator_err.seek(0)
        simulator_stderr = simulator_err.read()

    broken = []
    if hung:
        broken.append(f"collector run was still running after {RUN_SECONDS} s (killed)")
    elif exit_code not in OK_EXIT_CODES:
        broken.append(f"collector run exited {exit_code}, not one of {sorted(OK_EXIT_CODES)}")
    if has_traceback(stderr):
        broken.append(f"a traceback on collector run's stderr:\n{_tail(stderr)}")
    if has_traceback(simulator_stderr):
        broken.append(f"a traceback on the simulator's stderr:\n{_tail(simulator_stderr)}")
    audit = audit_output(out, SimConfig(servers=SERVERS, seed=seed, hostile=HOSTILE))
    broken.extend(audit.problems[:20])
    stray = listing(tmp_path, skip=out) ^ before
    if stray:
        broken.append(f"written outside the output folder: {sorted(stray)}")
    assert not broken, "\n".join(broken)
