"""A fleet under hostile replies, many times over: issue 8's acceptance figure (20 seeds x 50 servers).

For each seed: ``collector simulate --hostile P`` in its own process (each request answered with
junk from `collector.simulator.hostile` with probability P), then ``collector run`` against it
as a real process with short timeouts, in an empty working folder and with TMPDIR and HOME
pointed at empty folders. A run breaks a rule when it

- hangs (still running after ``--hang-after`` seconds: killed and counted),
- prints a traceback, or exits other than 0, 1 or 4,
- leaves an output folder that `collector.simulator.audit` rejects (report.json against the
  files on disk, no ``.part``, no corrupt or foreign archive under a final name),
- writes anything outside its output folder.

One JSON line per run (seed, exit code, seconds, collected/failed/pending, traceback, whether
the report is consistent, stray files, the crash's last exception and collector frame, the
faults served), then a summary line. Exit 1 if any run broke a rule.

    python benchmarks/hostile.py [--seeds 20] [--first-seed 1] [--servers 50] [--hostile 0.3]

With ``--each`` it tells which entries break the collector rather than how often: one run per
(call, entry), the entry scripted for the first request of that call of one server in a fleet
of 3 (the simulator then runs in this process, so it can be scripted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import code_version, emit, note

from collector.simulator import Simulator
from collector.simulator.audit import audit_output, has_traceback, listing
from collector.simulator.config import SimConfig
from collector.simulator.faults import DOWNLOAD, EXPORT, HOSTILE_MENU, STATUS

PYTHON = sys.executable
OK_EXIT_CODES = {0, 1, 4}
RUN_FLAGS = ["--read-timeout", "2", "--export-timeout", "20", "--poll-interval", "0.2", "--grace", "2", "--no-progress"]
_LISTENING = re.compile(r"simulator listening on (http://\S+) ")
_FRAME = re.compile(r'File "([^"]*?(collector/[^"]+))", line (\d+), in (\S+)')
_EXCEPTION = re.compile(r"^[\s|+\-]*((?:[A-Za-z_][\w.]*)(?:Error|Exception|Exit|Interrupt)\b.*)$")


def crash_signature(stderr: str) -> str | None:
    """The innermost exception a traceback ended in, and the last collector frame before it."""
    if not has_traceback(stderr):
        return None
    frame = exception = None
    for line in stderr.splitlines():
        if found := _FRAME.search(line):
            if "/simulator/" not in found.group(2):
                frame = f"{found.group(2)}:{found.group(3)} in {found.group(4)}"
        elif (found := _EXCEPTION.match(line)) and "ExceptionGroup" not in found.group(1):
            exception = found.group(1)[:160]
    return f"{exception} @ {frame}"


class HostileSimulator:
    """``collector simulate --hostile`` in a child process, its inventory written to `inventory`."""

    def __init__(self, config: SimConfig, inventory: Path, stderr: Path) -> None:
        self.command = [
            PYTHON,
            "-m",
            "collector",
            "simulate",
            "--port",
            "0",
            "--servers",
            str(config.servers),
            "--seed",
            str(config.seed),
            "--hostile",
            repr(config.hostile),
            "--write-inventory",
            str(inventory),
        ]
        self.stderr_path = stderr
        self.url = ""

    def __enter__(self) -> HostileSimulator:
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        for line in self.process.stdout:
            if match := _LISTENING.match(line):
                self.url = match.group(1)
                self.process.stdout.readline()  # "inventory written to ..."
                return self
        self.__exit__()
        raise RuntimeError(f"the simulator did not start: {self.stderr_path.read_text()[-2000:]}")

    def faults(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats?timeline=0", timeout=30) as response:
            return json.load(response)["faults"]

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()

    @property
    def traceback(self) -> bool:
        return has_traceback(self.stderr_path.read_text(errors="replace"))


def run_collector(root: Path, inventory: Path, config: SimConfig, hang_after: float) -> dict[str, Any]:
    """``collector run`` against the simulator `inventory` names, judged by the rules above."""
    for name in ("cwd", "tmp", "home"):
        (root / name).mkdir(parents=True)
    out = root / "out"
    env = {**os.environ, "TMPDIR": str(root / "tmp"), "HOME": str(root / "home")}
    command = [PYTHON, "-m", "collector", "run", "-i", str(inventory), "-o", str(out), *RUN_FLAGS]
    with (root / "collector.err").open("w+") as stderr:
        before = listing(root, skip=out)  # cwd, tmp and home are in it, empty
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=root / "cwd", env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            exit_code, hung = process.wait(timeout=hang_after), False
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code, hung = process.wait(), True
        seconds = time.monotonic() - started
        stderr.seek(0)
        text = stderr.read()
    stray = sorted(listing(root, skip=out) ^ before)
    audit = audit_output(out, config)
    return {
        "exit_code": exit_code,
        "seconds": round(seconds, 2),
        "hung": hung,
        "collected": audit.states["collected"],
        "failed": audit.states["failed"],
        "pending": audit.states["pending"],
        "traceback": has_traceback(text),
        "crash": crash_signature(text),
        "report_consistent": audit.ok,
        "problems": audit.problems[:5],
        "problem_count": len(audit.problems),
        "stray_files": stray,
        "escape_bytes_on_stderr": text.count("\x1b"),
    }


def judged(record: dict[str, Any]) -> dict[str, Any]:
    record["broke_a_rule"] = bool(
        record["hung"]
        or record["traceback"]
        or record["exit_code"] not in OK_EXIT_CODES
        or not record["report_consistent"]
        or record["stray_files"]
        or record["simulator_traceback"]
    )
    return record


def seeded_run(config: SimConfig, root: Path, hang_after: float) -> dict[str, Any]:
    """One fleet, every request hostile with probability ``config.hostile``."""
    root.mkdir(parents=True)
    with HostileSimulator(config, root / "inventory.yaml", root / "simulator.err") as sim:
        record = run_collector(root, root / "inventory.yaml", config, hang_after)
        faults = sim.faults()
    return judged({"seed": config.seed, **record, "simulator_traceback": sim.traceback, "faults_served": faults})


class _Errors(logging.Handler):
    """Counts log records that carry a traceback (aiohttp's "Error handling request")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.exc_info is not None


def each_entry(call: str, entry: str, root: Path, hang_after: float) -> dict[str, Any]:
    """A fleet of 3 where server 0's first `call` meets `entry`, the simulator in this process
    (a thread runs its event loop) so the entry can be scripted."""
    config = SimConfig(servers=3, seed=0)
    root.mkdir(parents=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    sim = Simulator(config)
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result()
        sim.script(sim.server_ids[0], **{call: [entry]})
        sim.write_inventory(root / "inventory.yaml")
        record = run_collector(root, root / "inventory.yaml", config, hang_after)
        faults = dict(sim.recorder.faults)
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        logging.getLogger().removeHandler(errors)
    return judged(
        {"call": call, "entry": entry, **record, "simulator_traceback": bool(errors.count), "faults_served": faults}
    )


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    served: Counter[str] = Counter()
    for record in records:
        served.update(record["faults_served"])
    return {
        "summary": True,
        "runs": len(records),
        "broke_a_rule": sum(r["broke_a_rule"] for r in records),
        "hung": sum(r["hung"] for r in records),
        "tracebacks": sum(r["traceback"] for r in records),
        "inconsistent_reports": sum(not r["report_consistent"] for r in records),
        "with_stray_files": sum(bool(r["stray_files"]) for r in records),
        "exit_codes": dict(Counter(str(r["exit_code"]) for r in records)),
        "collected": sum(r["collected"] for r in records),
        "failed": sum(r["failed"] for r in records),
        "pending": sum(r["pending"] for r in records),
        "median_seconds": round(statistics.median(r["seconds"] for r in records), 2) if records else None,
        "crashes": dict(Counter(r["crash"] for r in records if r["crash"]).most_common()),
        "faults_served": dict(served.most_common()),
        **code_version(),
    }


def runs(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    if args.each:
        for call in (EXPORT, STATUS, DOWNLOAD):
            for entry in HOSTILE_MENU[call]:
                note(f"{call}: {entry}")
                yield each_entry(call, entry, work / f"{call}-{entry}", args.hang_after)
        return
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        note(f"seed {seed}: {args.servers} servers, hostile {args.hostile}")
        config = SimConfig(servers=args.servers, seed=seed, hostile=args.hostile)
        yield seeded_run(config, work / f"seed-{seed}", args.hang_after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--first-seed", type=int, default=1, help="seed of the first run (default 1)")
    parser.add_argument("--servers", type=int, default=50, help="fleet size (default 50)")
    parser.add_argument("--hostile", type=float, default=0.3, help="chance of a hostile reply (default 0.3)")
    parser.add_argument("--hang-after", type=float, default=120, help="seconds before a run counts as hung")
    parser.add_argument(
        "--each",
        action="store_true",
        help="instead: one run per hostile entry and call, scripted once for one server of 3",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep every run's folders here (default: a temporary one)")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        for record in runs(args, Path(args.keep) if args.keep else Path(scratch)):
            emit(record)
            records.append(record)
    emit(summary(records))
    return 1 if any(r["broke_a_rule"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
