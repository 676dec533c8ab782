"""`collector grep` against `ugrep -z --zmax=4 -r` over the same folder of collected archives
(nested archives opened to the same depth by both).

Two shapes, as issue 15 asks: 2,000 archives of 1 MiB ("small") and 20 of 256 MiB ("large"),
laid out as a run writes them (``OUT/PROJECT/SERVER-dump.tar.gz``). Two kinds of archive:

- ``sim``: the simulator's own (`collector.simulator.archive`): its outer gzip holds stored
  blocks, so inflating costs nothing and the figure is the search (and tar walking);
- ``gzip``: the same logs really compressed (zlib level 1, about 4:1): inflating dominates,
  as with real bundles. To keep building cheap, a few distinct archives are hard-linked
  under every server's name (the bytes each tool reads are the same either way).

Each round runs ugrep, then collector grep, then each again (alternating, so both see the
same load), and reports per tool the median wall time and CPU seconds (children included),
and collector's peak RSS. Output: one JSON line per (shape, kind, tool).

    apt-get install -y ugrep            # Debian's ugrep
    python benchmarks/grep.py --shape small --kind gzip
    python benchmarks/grep.py --shape large --kind sim --rounds 2 --dir /var/tmp/grep-bench

The folders are kept in --dir between runs (building the large ones takes a while).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, PYTHON, code_version, emit, note, run_measured

from collector.destinations.base import archive_name
from collector.simulator.archive import iter_archive, plan_archive
from collector.simulator.fleet import server_id

SHAPES = {"small": (2000, 1 * MIB), "large": (20, 256 * MIB)}
PROJECT = "0a5f3c2e9b8d47e1a6c4f2b7d9e31c80"
SEED = 1
DISTINCT = 8  # different archives of the gzip kind; the rest are hard links to them
GZIP_RATIO = 4  # about what zlib level 1 makes of the simulator's text


def build(root: Path, shape: str, kind: str) -> Path:
    count, size = SHAPES[shape]
    folder = root / f"{shape}-{kind}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    note(f"building {count} {kind} archives of {size // MIB} MiB in {folder}")
    for index in range(count):
        sid = server_id(index)
        path = folder / archive_name(PROJECT, sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "sim":
            with path.open("wb") as file:
                for chunk in iter_archive(plan_archive(sid, size, SEED), 4 * MIB):
                    file.write(chunk)
        elif index < DISTINCT:
            _write_compressed(path, sid, size)
        else:
            os.link(folder / archive_name(PROJECT, server_id(index % DISTINCT)), path)
    done.touch()
    return folder


def _write_compressed(path: Path, sid: str, size: int) -> None:
    """The simulator's archive of about `GZIP_RATIO` x `size` bytes of tar, really deflated."""
    inflate = zlib.decompressobj(31)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as file:
        for chunk in iter_archive(plan_archive(sid, GZIP_RATIO * size, SEED), 4 * MIB):
            file.write(deflate.compress(inflate.decompress(chunk)))
        file.write(deflate.flush())


def measure(folder: Path, pattern: str, rounds: int, jobs: int | None) -> dict[str, dict[str, float]]:
    commands = {
        # --zmax=4: into nested archives as deep as collector grep goes (ugrep stops at 1 by default)
        "ugrep": ["ugrep", "-z", "--zmax=4", "-r", "-n", pattern, str(folder)],
        "collector": [PYTHON, "-m", "collector", "grep", pattern, str(folder)] + (["-j", str(jobs)] if jobs else []),
    }
    figures: dict[str, list[tuple[float, float, float, int, int]]] = {tool: [] for tool in commands}
    for round_ in range(rounds):
        for tool, command in commands.items():
            measured = run_measured(command, timeout=7200)
            if measured.exit_code not in (0, 1):
                raise SystemExit(f"{tool} failed ({measured.exit_code}): {measured.stderr[-2000:]}")
            lines = measured.stdout.count("\n")
            figures[tool].append((measured.wall_s, measured.cpu_s, measured.peak_rss_mb, lines, measured.exit_code))
            note(f"round {round_ + 1} {tool}: {measured.wall_s:.2f} s wall, {measured.cpu_s:.2f} s CPU, {lines} lines")
    return {
        tool: {
            "wall_s": round(statistics.median(f[0] for f in rows), 3),
            "cpu_s": round(statistics.median(f[1] for f in rows), 3),
            "peak_rss_mb": round(max(f[2] for f in rows), 1),
            "lines": rows[0][3],
        }
        for tool, rows in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="small")
    parser.add_argument("--kind", choices=["sim", "gzip", "both"], default="gzip")
    parser.add_argument("--pattern", default="Uncorrectable ECC|I/O error", help="a regex both tools take")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-j", "--jobs", type=int, help="collector grep -j (default: its own)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/collector-grep-bench"))
    args = parser.parse_args()
    if shutil.which("ugrep") is None:
        raise SystemExit("ugrep is not installed: apt-get install -y ugrep")
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    kinds = ["sim", "gzip"] if args.kind == "both" else [args.kind]
    load = os.getloadavg()[0]
    for shape in shapes:
        for kind in kinds:
            folder = build(args.dir, shape, kind)
            results = measure(folder, args.pattern, args.rounds, args.jobs)
            ugrep = results["ugrep"]
            for tool, figures in results.items():
                emit(
                    {
                        "benchmark": "grep",
                        "shape": shape,
                        "kind": kind,
                        "tool": tool,
                        **figures,
                        "speedup_vs_ugrep": round(ugrep["wall_s"] / figures["wall_s"], 2),
                        "cpu_vs_ugrep": round(ugrep["cpu_s"] / figures["cpu_s"], 2) if figures["cpu_s"] else None,
                        "load_before": round(load, 1),
                        **code_version(),
                    }
                )


if __name__ == "__main__":
    main()
