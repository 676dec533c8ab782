"""`collector grep` over archives from hostile machines: nothing written, no crash, bounded
memory, nothing raw on the terminal.

The hostile archives are the simulator's (``SimConfig(hostile_archives=True)``): whole gzip,
so a sweep collects them, with one case of `HOSTILE_CASES` inside each (consecutive server
ids take every case in turn). Then a fuzzer: no archive's bytes can make the search raise.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from _fleet import sweep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.grep.search import Matcher, Query, Sink, Walk, _Lines
from collector.grep.unpack import Budget, best_decompressobj
from collector.simulator import SimConfig, Simulator
from collector.simulator.archive import HOSTILE_CASES, build_archive, hostile_archive, hostile_case

MIB = 1024 * 1024
PEAK_LIMIT_KB = 200 * 1024  # the bound on the search's peak memory

MEASURED = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True)
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(done.returncode)
"""


def files_under(root: Path) -> dict[str, int]:
    return {str(path): path.lstat().st_size for path in root.rglob("*")}


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_every_hostile_case_is_collected_then_searched_without_harm(tmp_path, fast_settings):
    config = SimConfig(servers=8, seed=9, export_seconds=(0.01, 0.02), archive_bytes=(2 * MIB, 2 * MIB))
    config = dataclasses.replace(config, hostile_archives=True)
    patient = dataclasses.replace(fast_settings, read_timeout=60)
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, patient)
        ids, project = sim.server_ids, sim.project_id
    assert all(r.state == "collected" for r in outcome.results)  # whole gzip: the sweep takes them
    cases = {hostile_case(server_id): server_id for server_id in ids}
    assert set(cases) == {*HOSTILE_CASES, None}

    cwd = tmp_path / "cwd" / "deeper"
    cwd.mkdir(parents=True)
    before = files_under(tmp_path)

    def grep(*args: str) -> tuple[int, bytes, list[str], int]:
        command = [sys.executable, "-c", MEASURED, sys.executable, "-m", "collector", "grep", *args]
        done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=150, check=False)
        *err, peak = done.stderr.decode().splitlines()
        return done.returncode, done.stdout, err, int(peak)

    code, out, err, peak = grep("ERROR|board serial|A{64}", str(tmp_path / "out"), "-j", "1")
    assert code == 0
    assert peak < PEAK_LIMIT_KB, f"peak RSS {peak} KiB"
    assert files_under(tmp_path) == before  # nothing written, nothing changed
    assert not Path("/etc/collector-absolute.log").exists()

    text = out.decode()
    lines = text.splitlines()
    # Nothing raw reaches the terminal: no control character but the newlines between lines.
    assert not [c for c in text if c != "\n" and not c.isprintable()]
    assert "\\x1b[31mred" in text and "\\u202edesrever" in text and "\\x00" in text
    # Every archive was searched up to its hostile part: each says whose it is.
    assert {line.split(":", 1)[0] for line in lines if "board serial" in line} == {f"{project}/{s}" for s in ids}

    def found(case: str) -> list[str]:
        return [line for line in lines if line.startswith(f"{project}/{cases[case]}:")]

    members = {line.split(":")[1] for line in found("paths")}
    assert {"/etc/collector-absolute.log", "../../collector-escape.log"} <= members  # shown, never used
    assert any(f"{cases['paths']}/after-links.log" in m for m in members)  # links and devices skipped
    (long,) = [line for line in found("long-line") if ":long-line.log:" in line]
    assert long.endswith("[a line of 1,073,741,824 bytes, cut]") and len(long) < 600
    assert any(
        "dump.zip!dump/logs.tar.gz!logs/inner.tar!inner/sel.log.gz:1:deep ERROR marker" in line
        for line in found("deep")
    )
    warned = {case: [line for line in err if cases[case] in line] for case in ("size-over", "size-under", "bomb")}
    assert "says 1,073,741,824 bytes" in warned["size-over"][0]
    assert "checksum" in warned["size-under"][0]
    assert "compression bomb" in warned["bomb"][0]
    assert all(len(w) == 1 and "warning" in w[0] for w in warned.values())
    assert len(err) == 3, err


# -- a fuzzer over archive bytes ----------------------------------------------------------------


class _Collect(Sink):
    def __init__(self, query: Query) -> None:
        super().__init__(query)
        self.lines: list[tuple[str, int, bytes, int]] = []
        self.warnings: list[str] = []

    def line(self, member: str, number: int, text: bytes, length: int) -> None:
        self.lines.append((member, number, text, length))

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def search(data: bytes, query: Query, budget: int = 64 * MIB) -> _Collect:
    sink = _Collect(query)
    walk = Walk(query, Matcher(query), sink, Budget(budget), best_decompressobj(), None, "a.tar.gz")
    walk.search(io.BytesIO(data))
    return sink


SEEDS = [
    build_archive("2102313YJK10N0000001", 12288, 1),
    hostile_archive("2102313YJK10N0000006", 1, "deep", 0),
    hostile_archive("2102313YJK10N0000001", 1, "paths", 0),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_no_archive_can_crash_the_search(seed, edits, cut):
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    tracemalloc.start()
    try:
        sink = search(bytes(data), Query(b"ERROR|serial|[0-9]+"))  # anything but Damaged/Bomb would raise here
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MIB
    assert all(len(text) <= length or length == len(text) for _, _, text, length in sink.lines)


def test_a_bomb_nested_three_deep_is_given_up_in_bounded_memory():
    data = hostile_archive("2102313YJK10N0000003", 1, "bomb", 0)
    tracemalloc.start()
    try:
        sink = search(data, Query(b"zeros"), budget=256 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MIB
    assert sink.warnings == ["inflates to more than 268,435,456 bytes (a compression bomb?)"]
    assert [line[:2] for line in sink.lines] == []


# -- the line search, against a plain reading of the lines ----------------------------------------


class _Trickle:
    """A stream that gives at most `step` bytes per read: lines split across every boundary."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step

    def read(self, n: int) -> bytes:
        out, self.data = self.data[: min(n, self.step)], self.data[min(n, self.step) :]
        return out


@settings(max_examples=200, deadline=None)
@given(
    text=st.lists(st.sampled_from([b"ab", b"AB", b"b", b" ", b"\n", b"\xff", b"a\nb"]), max_size=60).map(b"".join),
    step=st.integers(1, 7),
    pattern=st.sampled_from([b"ab", b"a b", b"^b", b"b$", b"a.?b", b"", b"ab|b ", b"\xff|B"]),
    invert=st.booleans(),
    ignore_case=st.booleans(),
    engine=st.sampled_from(["auto", "re"]),
)
def test_lines_selected_are_those_a_plain_reading_selects(text, step, pattern, invert, ignore_case, engine):
    import re

    query = Query(pattern, invert=invert, ignore_case=ignore_case, engine=engine)
    sink = _Collect(query)
    _Lines(Matcher(query), sink, "m", invert).run(_Trickle(text, step))
    regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    expected = [(n, line) for n, line in enumerate(lines, 1) if (regex.search(line) is None) == invert]
    assert [(number, line) for _, number, line, _ in sink.lines] == expected


def test_the_long_line_is_searched_in_windows_and_reported_once():
    data = b"first\n" + b"x" * (3 * MIB) + b"needle" + b"y" * MIB + b"\nlast needle\n"
    query = Query(b"needle")
    sink = _Collect(query)
    _Lines(Matcher(query), sink, "m", False).run(io.BytesIO(data))
    assert [(number, length) for _, number, _, length in sink.lines] == [(2, 4 * MIB + 6), (3, 11)]


def test_the_archive_folder_is_never_written_even_by_a_worker_pool(tmp_path):
    root = tmp_path / "out" / "p1"
    root.mkdir(parents=True)
    for n in range(8):
        server_id = f"2102313YJK10N000000{n}"
        (root / f"{server_id}-dump.tar.gz").write_bytes(hostile_archive(server_id, 1, "paths", 0))
    before = files_under(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "collector", "grep", "ERROR", str(tmp_path / "out"), "-j", "2", "-c"],
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [f"p1/2102313YJK10N000000{n}:3" for n in range(8)]
    assert files_under(tmp_path) == before
