"""What every benchmark shares: a simulator in its own process, measured child processes,
checking archives against the simulator's own generator, and JSON-line output.

The simulator runs as ``python -m collector simulate`` so that it never competes with the
measured process for the same interpreter; its settings come from one `SimConfig`, which the
harness also uses in-process to know the fleet (export durations, archive sizes) and to
regenerate every archive's expected bytes (deterministic by seed) without asking the server.

A measured process is started with `subprocess.Popen` and reaped with `os.wait4`, whose
rusage gives its CPU seconds exactly; its peak RSS is the kernel's high-water mark (``VmHWM``)
read from /proc while it runs (see `run_measured` for why not ``ru_maxrss``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.simulator.archive import iter_archive, plan_archive
from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet

PYTHON = sys.executable
MIB = 1024 * 1024
_LISTENING = re.compile(r"simulator listening on (http://\S+) ")


def code_version() -> dict[str, Any]:
    """Which collector was measured: the commit, and whether the work tree differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "collector"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": commit, "collector_modified": bool(dirty)}


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed: the benchmarks' only output format."""
    print(json.dumps(record, separators=(", ", ": ")), flush=True)


def note(text: str) -> None:
    """Progress for the person watching, on stderr so stdout stays JSON lines."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_range(text: str, kind=float) -> tuple:
    lo, sep, hi = text.partition("-")
    return (kind(lo), kind(hi if sep else lo))


def parse_bytes_range(text: str) -> tuple[int, int]:
    from collector.simulator.cli import bytes_range

    return bytes_range(text)


def sim_flags(config: SimConfig) -> list[str]:
    """`collector simulate` flags for exactly this config (the fields benchmarks vary)."""
    lo, hi = config.export_seconds
    blo, bhi = config.archive_bytes
    flags = [
        "--port",
        "0",
        "--servers",
        str(config.servers),
        "--seed",
        str(config.seed),
        "--export-seconds",
        f"{lo!r}-{hi!r}",
        "--archive-bytes",
        f"{blo}-{bhi}",
        "--project-id",
        config.project_id,
        "--token",
        config.token,
        "--access-key",
        config.access_key,
        "--secret-key",
        config.secret_key,
    ]
    if config.rate_limit is not None:
        flags += ["--rate-limit", repr(config.rate_limit)]
    if config.rate_burst is not None:
        flags += ["--rate-burst", repr(config.rate_burst)]
    if config.max_concurrent_exports is not None:
        flags += ["--max-concurrent-exports", str(config.max_concurrent_exports)]
    return flags


class SimProcess:
    """``collector simulate`` in a child process, with its inventory written to `workdir`; the
    simulator is the one `cwd` holds (a `collector` package there), else this environment's."""

    def __init__(self, config: SimConfig, workdir: Path, cwd: Path | None = None) -> None:
        self.config = config
        self.cwd = cwd
        self.inventory = workdir / "inventory.yaml"
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimProcess:
        command = [
            PYTHON,
            "-m",
            "collector",
            "simulate",
            *sim_flags(self.config),
            "--write-inventory",
            str(self.inventory),
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=self.cwd)
        deadline = time.monotonic() + 120
        assert self._process.stdout is not None
        for line in self._process.stdout:
            match = _LISTENING.match(line)
            if match:
                self.url = match.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.__exit__(None, None, None)
            raise RuntimeError("the simulator did not start (see its stderr above)")
        return self

    def __exit__(self, *_exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stats(self, *, timeline: bool = True) -> dict[str, Any]:
        suffix = "" if timeline else "?timeline=0"
        with urllib.request.urlopen(f"{self.url}/_sim/stats{suffix}", timeout=60) as response:
            return json.load(response)

    def exports_url(self, server_id: str) -> str:
        return f"{self.url}/v1/{self.config.project_id}/physicalservers/{server_id}/logs/exports"

    def api(self, method: str, url: str) -> dict[str, Any]:
        """One small authenticated JSON call (for setting up, never for measuring)."""
        request = urllib.request.Request(url, method=method, headers={"X-Auth-Token": self.config.token})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def round_trip_s(self, samples: int = 21) -> float:
        """Median time of one small request to the simulator (the stats counts, no timeline)."""
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            self.stats(timeline=False)
            times.append(time.perf_counter() - started)
        return statistics.median(times)


@dataclass
class Measured:
    """A child process's exit status and what it cost, from `os.wait4`."""

    exit_code: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    started: float  # time.monotonic() just before the child was started
    ended: float  # time.monotonic() just after it was reaped
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # user/system split and context switches, from rusage


def run_measured(
    command: Sequence[str], *, timeout: float = 3600, cwd: Path | None = None, state: Path | None = None
) -> Measured:
    """Run `command`, reap it with wait4, return its wall time, peak RSS and CPU time.

    The collector keeps what it learns of an API between runs (`collector.run.learned`): each
    run gets a state folder of its own, so every run is a first run, unless `state` is given
    (to measure the runs after the first).

    Peak RSS is the largest ``VmHWM`` read from /proc while the child runs (every 10 ms; the
    high-water mark only grows, so only growth in the last 10 ms could be missed), not
    rusage's ``ru_maxrss``: a child started by vfork/exec inherits its launcher's high-water
    mark there, so ``ru_maxrss`` would report at least this harness's own RSS.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryDirectory(prefix="collector-state-") as fresh,
    ):
        env = {**os.environ, "XDG_STATE_HOME": str(state if state is not None else fresh)}
        started = time.monotonic()
        process = subprocess.Popen(list(command), stdout=out, stderr=err, cwd=cwd, env=env)
        deadline = started + timeout
        status_file = f"/proc/{process.pid}/status"
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, _vm_hwm_kib(status_file))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        ended = time.monotonic()
        process.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not reap it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Measured(
        exit_code=process.returncode,
        wall_s=ended - started,
        peak_rss_mb=peak_kib / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        started=started,
        ended=ended,
        stdout=stdout,
        stderr=stderr,
        extra={
            "user_s": usage.ru_utime,
            "system_s": usage.ru_stime,
            "voluntary_switches": usage.ru_nvcsw,
            "involuntary_switches": usage.ru_nivcsw,
        },
    )


def _vm_hwm_kib(status_file: str) -> int:
    try:
        with open(status_file) as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0  # not started yet, or already a zombie


def collector_command(inventory: Path, out_dir: Path, extra: Iterable[str] = ()) -> list[str]:
    return [PYTHON, "-m", "collector", "run", "-i", str(inventory), "-o", str(out_dir), "--no-progress", *extra]


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(4 * MIB):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def expected_digest(config: SimConfig, server_id: str, size: int) -> str:
    """The sha256 of the archive the simulator serves for this server, regenerated here."""
    digest = hashlib.sha256()
    for chunk in iter_archive(plan_archive(server_id, size, config.seed), 4 * MIB):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Check:
    ok: bool
    checked: int
    problems: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "correct": self.ok,
            "archives_checked": self.checked,
            "problems": self.problems[:5],
            "problem_count": len(self.problems),
        }


def check_archives(config: SimConfig, out_dir: Path, *, report: dict[str, Any] | None = None) -> Check:
    """Every server's archive is on disk as `OUT/<project>/<id>-dump.tar.gz`, with exactly the
    size and sha256 the simulator serves (and, when a report is given, the sha256 it states)."""
    fleet = Fleet(config)
    reported: dict[str, dict[str, Any]] = {}
    if report is not None:
        reported = {entry["server_id"]: entry for entry in report.get("servers", [])}
    problems: list[str] = []
    for profile in fleet.profiles:
        path = out_dir / config.project_id / f"{profile.id}-dump.tar.gz"
        if not path.is_file():
            problems.append(f"{profile.id}: missing {path.name}")
            continue
        size, sha = file_digest(path)
        if size != profile.archive_bytes:
            problems.append(f"{profile.id}: {size} bytes on disk, served {profile.archive_bytes}")
            continue
        if sha != expected_digest(config, profile.id, profile.archive_bytes):
            problems.append(f"{profile.id}: sha256 on disk differs from the served archive")
        if report is not None:
            entry = reported.get(profile.id)
            if entry is None or entry.get("state") != "collected" or entry.get("sha256") != sha:
                problems.append(f"{profile.id}: report.json does not state this archive as collected with its sha256")
    return Check(ok=not problems, checked=len(fleet.profiles), problems=problems)


def load_report(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None


def api_requests(stats: dict[str, Any]) -> dict[str, int]:
    """Requests the API origin answered (export, status, download, list, other), by status."""
    by_status: dict[str, int] = {}
    for operation, statuses in stats["requests"].items():
        if operation == "storage":
            continue
        for status, n in statuses.items():
            by_status[status] = by_status.get(status, 0) + n
    return by_status


def median_record(records: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = round(statistics.median(values), 4)
    return out


def round_floats(record: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in record.items()}


def content_url(sim: SimProcess, server_id: str, export_id: str) -> str:
    return f"{sim.exports_url(server_id)}/{export_id}/content"


def curl_get(url: str, token: str, out: str = "/dev/null") -> dict[str, Any]:
    """One `curl -s -o OUT URL` with the token header; its own timing, and ours of the process."""
    command = [
        "curl",
        "-s",
        "-o",
        out,
        "-H",
        f"X-Auth-Token: {token}",
        "-w",
        "%{http_code} %{size_download} %{time_total}",
        url,
    ]
    measured = run_measured(command)
    code, size, total = measured.stdout.split()
    return {
        "http_code": int(code),
        "bytes": int(size),
        "curl_time_s": float(total),
        "wall_s": measured.wall_s,
        "ended": measured.ended,
        "peak_rss_mb": measured.peak_rss_mb,
        "cpu_s": measured.cpu_s,
        "exit_code": measured.exit_code,
    }


def loopback_bandwidth(workdir: Path, size: int = 256 * MIB, tries: int = 2) -> dict[str, Any]:
    """Bytes per second one simulator process serves to one client over loopback.

    A fresh one-server simulator with an instant export of `size` bytes; curl GETs the archive
    to /dev/null `tries` times; the best try counts. This is the ceiling for any client here:
    it includes the simulator generating the archive, which is what every benchmark's
    downloads also pay.
    """
    config = SimConfig(servers=1, export_seconds=(0.0, 0.0), archive_bytes=(size, size))
    workdir.mkdir(parents=True, exist_ok=True)
    with SimProcess(config, workdir) as sim:
        sid = Fleet(config).ids[0]
        export = sim.api("POST", sim.exports_url(sid))
        url = content_url(sim, sid, export["export_id"])
        get = curl_get if shutil.which("curl") else _python_get
        results = [get(url, config.token) for _ in range(tries)]
    good = [r for r in results if r["http_code"] == 200 and r["bytes"] == size]
    if not good:
        raise RuntimeError(f"bandwidth probe failed: {results}")
    best = min(r["curl_time_s"] for r in good)
    client = "curl" if get is curl_get else "urllib (curl is not installed)"
    return {
        "bytes_per_s": size / best,
        "probe_bytes": size,
        "best_s": best,
        "how": f"{client} GET of one {size // MIB} MiB archive from a separate simulator process, discarded, "
        f"best of {tries}",
    }


def _python_get(url: str, token: str) -> dict[str, Any]:
    """What `curl_get` tells, for a machine without curl (slower: a floor, not the ceiling)."""
    request = urllib.request.Request(url, headers={"X-Auth-Token": token})
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(request, timeout=60) as response:
        code = response.status
        while chunk := response.read(4 * MIB):
            size += len(chunk)
    return {"http_code": code, "bytes": size, "curl_time_s": time.perf_counter() - started}
