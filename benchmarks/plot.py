"""A run seen from the simulator: exports in flight, requests per second, and 429s, over time.

Reads what ``GET /_sim/stats`` answered (``timeline`` and ``export_spans``), with time 0 at
the client process's start. matplotlib with the Agg backend: no display needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def plot_sweep(stats: dict[str, Any], path: Path, *, title: str, lower_bound: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shift = stats.get("_client_start_on_sim_clock", 0.0)
    end = stats.get("_client_end_on_sim_clock", stats["uptime_s"]) - shift

    # Exports in flight: +1 at each start, -1 at each end.
    events = sorted(
        [(s - shift, 1) for s, _ in stats["export_spans"]] + [(e - shift, -1) for _, e in stats["export_spans"]]
    )
    xs, ys, running = [0.0], [0], 0
    for t, step in events:
        xs.append(t)
        ys.append(running)
        running += step
        xs.append(t)
        ys.append(running)
    xs.append(end)
    ys.append(running)

    # One-second bins, wider for long runs (about 150 bins), as a mean rate per second.
    width = max(1, math.ceil(end / 150))
    bins = max(1, int(end / width) + 1)
    operations = ("export", "status", "download")
    per_second = {op: [0.0] * bins for op in operations}
    throttled = [0.0] * bins
    for t, op, status in stats["timeline"]:
        slot = int((t - shift) / width)
        if not 0 <= slot < bins:
            continue
        if status == 429:
            throttled[slot] += 1 / width
        elif op in per_second:
            per_second[op][slot] += 1 / width

    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    top.plot(xs, ys, color="tab:blue")
    top.set_ylabel("exports running")
    top.set_title(title, fontsize=10)
    # One more step at the end, so the last second is drawn as wide as the others.
    grid = [i * width for i in range(bins + 1)]
    for counts in (*per_second.values(), throttled):
        counts.append(counts[-1])
    for op, color in zip(operations, ("tab:orange", "tab:green", "tab:purple"), strict=True):
        middle.step(grid, per_second[op], where="post", label=f"{op} (not 429)", color=color, linewidth=1)
    total = [sum(counts) for counts in zip(*per_second.values(), strict=True)]
    middle.step(grid, total, where="post", label="all (not 429)", color="black", linewidth=0.8, alpha=0.6)
    if stats.get("rate_limit"):
        middle.axhline(stats["rate_limit"], color="grey", linestyle=":", label=f"limit {stats['rate_limit']:g}/s")
    middle.set_ylabel("requests / s" if width == 1 else f"requests / s ({width} s bins)")
    middle.legend(loc="upper right", fontsize=8)
    bottom.step(grid, throttled, where="post", color="tab:red")
    bottom.set_ylabel("429 answers / s")
    bottom.set_ylim(bottom=0, top=max(1, max(throttled) * 1.1))
    bottom.set_xlabel("seconds since the client started")
    for axis in (top, middle, bottom):
        axis.axvline(end, color="black", linewidth=0.8)
        if lower_bound is not None:
            axis.axvline(lower_bound, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    top.text(end, top.get_ylim()[1], " exit", va="top", fontsize=8)
    if lower_bound is not None:
        top.text(lower_bound, top.get_ylim()[1], " lower bound", va="top", fontsize=8, color="grey")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
