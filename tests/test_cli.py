"""The command line as a user meets it: real processes, real files, exit codes, one-line errors."""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli.tuning import GC_YOUNG_THRESHOLD, calm_garbage_collector, keep_heap_headroom
from collector.errors import ExitCode


def collector(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """\
endpoint: http://127.0.0.1:9
project_id: p1
auth: {token_env: CLOUDDC_TEST_TOKEN}
servers:
  - id: 2102313YJK10N1000123
    name: db-01
  - 2102313YJK10N1000124
"""


def test_validate_lists_servers_per_project(tmp_path):
    inventory = write(tmp_path / "inv.yaml", GOOD)
    done = collector("validate", "-i", str(inventory), env={"CLOUDDC_TEST_TOKEN": "t"})
    assert done.returncode == ExitCode.OK, done.stderr
    assert "p1" in done.stdout and "2 servers" in done.stdout


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (GOOD.replace("servers:", "servrs:"), {"CLOUDDC_TEST_TOKEN": "t"}, "servrs"),
        (GOOD, {}, "CLOUDDC_TEST_TOKEN"),
        (GOOD.replace("2102313YJK10N1000124", "../../etc"), {"CLOUDDC_TEST_TOKEN": "t"}, "servers[1]"),
        (GOOD + "  - 2102313YJK10N1000123\n", {"CLOUDDC_TEST_TOKEN": "t"}, "listed twice"),
        (GOOD.replace("http://127.0.0.1:9", "ftp://x"), {"CLOUDDC_TEST_TOKEN": "t"}, "endpoint"),
        ("servers: [\n", {}, "inv.yaml:"),
    ],
    ids=["unknown-key", "unset-token", "unsafe-id", "duplicate", "bad-endpoint", "yaml-syntax"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_inventory_exits_2_with_one_line_and_sends_nothing(tmp_path, text, env, expected, command):
    inventory = write(tmp_path / "inv.yaml", text)
    out = tmp_path / "out"
    args = [command, "-i", str(inventory)] + (["-o", str(out)] if command == "run" else [])
    done = collector(*args, env=env)
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "inv.yaml" in lines[0] and expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing written: the inventory is checked first


def test_missing_inventory_file_exits_2(tmp_path):
    done = collector("run", "-i", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "out"))
    assert done.returncode == ExitCode.USAGE
    assert len(done.stderr.strip().splitlines()) == 1 and "nope.yaml" in done.stderr


def test_unwritable_output_folder_exits_2_before_any_request(tmp_path):
    inventory = write(tmp_path / "inv.yaml", GOOD)
    blocker = write(tmp_path / "file", "not a folder")
    done = collector("run", "-i", str(inventory), "-o", str(blocker / "out"), env={"CLOUDDC_TEST_TOKEN": "t"})
    assert done.returncode == ExitCode.USAGE
    assert "not writable" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", [["--concurrency", "0"], ["--rate", "-1"], ["--max-archive-bytes", "lots"]])
def test_bad_flag_values_exit_2(tmp_path, flag):
    inventory = write(tmp_path / "inv.yaml", GOOD)
    done = collector("run", "-i", str(inventory), "-o", str(tmp_path / "out"), *flag)
    assert done.returncode == ExitCode.USAGE
    assert "Traceback" not in done.stderr


# -- whole runs: `collector simulate` and `collector run` as real processes -------------------


class SimulatorProcess:
    """`collector simulate` in its own process, on a free loopback port."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.inventory = tmp_path / "inventory.yaml"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector",
                "simulate",
                "--port",
                "0",
                "--write-inventory",
                str(self.inventory),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("simulator listening on"), line + self.process.stderr.read()
        self.url = line.split()[3]

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=10)


@pytest.fixture
def simulator(tmp_path):
    started: list[SimulatorProcess] = []

    def start(*args: str) -> SimulatorProcess:
        started.append(SimulatorProcess(tmp_path, *args))
        return started[-1]

    yield start
    for sim in started:
        sim.stop()


FAST_FLAGS = ["--poll-interval", "0.1", "--no-progress"]


def test_run_exits_0_when_every_server_is_collected(tmp_path, simulator):
    sim = simulator("--servers", "20", "--export-seconds", "0.1-0.3")
    out = tmp_path / "out"
    done = collector("run", "-i", str(sim.inventory), "-o", str(out), *FAST_FLAGS)
    assert done.returncode == ExitCode.OK, done.stderr
    assert "20/20 servers collected" in done.stderr
    assert len(list(out.glob("*/*-dump.tar.gz"))) == 20
    assert (out / "report.json").exists()


def test_run_exits_1_when_some_servers_fail(tmp_path, simulator):
    sim = simulator("--servers", "6", "--export-seconds", "0.1-0.2", "--failing", "2")
    done = collector("run", "-i", str(sim.inventory), "-o", str(tmp_path / "out"), *FAST_FLAGS)
    assert done.returncode == ExitCode.PARTIAL, done.stderr
    assert "4/6 servers collected" in done.stderr and "2 failed" in done.stderr


def test_run_exits_3_when_the_token_is_rejected(tmp_path, simulator):
    sim = simulator("--servers", "50", "--export-seconds", "0.1-0.2", "--token", "the-real-one")
    sim.inventory.with_suffix(".token").write_text("an-expired-one\n")
    done = collector("run", "-i", str(sim.inventory), "-o", str(tmp_path / "out"), *FAST_FLAGS)
    assert done.returncode == ExitCode.AUTH, done.stderr
    assert "credentials were rejected" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "out" / "report.json").exists()


def test_json_logs_keep_stderr_all_json(tmp_path, simulator):
    """An unattended run ships stderr to a log pipeline: every line must parse, summary included."""
    sim = simulator("--servers", "6", "--export-seconds", "0.1-0.2", "--failing", "1")
    done = collector("run", "-i", str(sim.inventory), "-o", str(tmp_path / "out"), *FAST_FLAGS, "--log-format", "json")
    assert done.returncode == ExitCode.PARTIAL, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    messages = [r["message"] for r in records]
    assert any("5/6 servers collected" in m for m in messages)
    assert any(r["level"] == "warning" and "failed" in r["message"] for r in records)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")
def test_heap_headroom_is_set_on_glibc():
    # Process-wide, but harmless to this test process: it only keeps freed memory for reuse.
    assert keep_heap_headroom() is True


def test_heap_headroom_is_left_alone_off_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert keep_heap_headroom() is False


def test_calming_the_collector_freezes_what_exists_and_collects_young_objects_less_often():
    before = gc.get_threshold()
    try:
        calm_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- one runner, many doors ---------------------------------------------------------------------


def test_collector_run_never_imports_the_simulator():
    script = (
        "import sys, collector.cli.main, collector.run.runner\n"
        "collector.cli.main.build_parser().parse_known_args(['run', '-i', 'x.yaml', '-o', 'out'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('collector.simulator') or m == 'collector.cli.demo')\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_run_starts_with_one_line_naming_servers_endpoint_output_and_rate(tmp_path, simulator):
    sim = simulator("--servers", "5", "--export-seconds", "0.1-0.2")
    out = tmp_path / "out"
    done = collector("run", "-i", str(sim.inventory), "-o", str(out), *FAST_FLAGS, "--rate", "40")
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].endswith(
        f"collector 0.1.0: 5 servers in 1 project at {sim.url}, into {out.resolve()}, starting at 40 req/s"
    ), lines[0]
    assert lines[1].endswith(f"{sim.url} is plain http: credentials travel in clear text"), lines[1]
    [project] = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert f"\narchives in {out.resolve()}/{project}/\n" in done.stderr and "<project_id>" not in done.stderr


def test_every_inventory_problem_is_printed_at_once_and_nothing_is_sent(tmp_path):
    bad = GOOD + "".join(f"  - ../x{n}\n" for n in range(24)) + "collector: {rate: 0}\n"
    inventory = write(tmp_path / "inv.yaml", bad)
    out = tmp_path / "out"
    done = collector("run", "-i", str(inventory), "-o", str(out), env={"CLOUDDC_TEST_TOKEN": "t"})
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.splitlines()
    assert len(lines) == 21 and all(line.startswith("collector: error: ") for line in lines)
    assert lines[0] == (
        f"collector: error: {inventory}:8: servers[2]: server id '../x0' cannot be a file name: "
        "it contains a slash; server ids are used as file names: give the id exactly as CloudDC lists it"
    )
    assert lines[-1] == "collector: error: ... and 5 more"  # 24 ids and the rate
    assert not out.exists()


def test_a_crash_in_a_real_run_prints_one_line_keeps_the_traceback_and_exits_70(tmp_path, simulator):
    """report.json cannot be written (a folder stands in its place): nothing in collector
    expects that, so it is a crash, not a traceback on the operator's screen."""
    sim = simulator("--servers", "4", "--export-seconds", "0.1-0.2")
    out = tmp_path / "out"
    (out / "report.json").mkdir(parents=True)
    done = collector("run", "-i", str(sim.inventory), "-o", str(out), *FAST_FLAGS)
    assert done.returncode == ExitCode.INTERNAL, done.stderr
    assert "Traceback" not in done.stderr
    [saved] = (out / ".collector").glob("crash-*.txt")
    last = done.stderr.splitlines()[-1]
    assert last.startswith("collector: internal error: IsADirectoryError: ")
    assert last.endswith(f"; details in {saved}; please report it")
    assert "write_report" in saved.read_text()
    assert len(list(out.glob("*/*-dump.tar.gz"))) == 4  # the run itself was not lost


@pytest.mark.parametrize("output_exists", [True, False])
def test_main_turns_an_exception_from_the_runner_into_one_line_a_crash_file_and_70(tmp_path, output_exists):
    inventory = write(tmp_path / "inv.yaml", GOOD)
    out, temp = tmp_path / "out", tmp_path / "tmp"
    temp.mkdir()
    if output_exists:
        out.mkdir()
    script = (
        "import sys, collector.cli.main\n"
        "async def broken(*args, **kwargs):\n"
        "    raise KeyError('no such thing')\n"
        "collector.cli.main.run_sweep = broken\n"
        "sys.exit(collector.cli.main.main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "run", "-i", str(inventory), "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLOUDDC_TEST_TOKEN": "t", "TMPDIR": str(temp)},
    )
    assert done.returncode == ExitCode.INTERNAL
    [line] = done.stderr.splitlines()
    [saved] = (out / ".collector" if output_exists else temp).glob("crash-*.txt")
    assert line == f"collector: internal error: KeyError: 'no such thing'; details in {saved}; please report it"
    assert "Traceback" in saved.read_text() and "KeyError: 'no such thing'" in saved.read_text()


def test_demo_names_the_real_output_folder(tmp_path):
    out = tmp_path / "demo"
    done = collector("demo", "-o", str(out), "--servers", "3", "--no-progress", "--poll-interval", "0.5", timeout=120)
    assert done.returncode == ExitCode.OK, done.stderr
    [project] = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert f"\narchives in {out.resolve()}/{project}/\n" in done.stderr
    assert f"report: {out.resolve()}/report.json" in done.stderr
    assert "collector 0.1.0: 3 servers in 1 project at http://127.0.0.1:" in done.stderr
    assert "demo finished with exit code 0 (OK)" in done.stderr
