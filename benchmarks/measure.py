"""What the benchmarks measure with: CPU seconds of process trees, percentiles."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree_parts(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` and its direct children: their own, and that of the children they reaped."""
    own = reaped = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for one in [pid, *map(int, children)]:
        try:
            fields = [int(v) for v in Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()[11:15]]
        except OSError:
            continue
        own += (fields[0] + fields[1]) / TICKS  # utime, stime
        reaped += (fields[2] + fields[3]) / TICKS  # cutime, cstime
    return own, reaped


def tree_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children, with all the children each has reaped."""
    return sum(tree_parts(pid))


def own_seconds() -> float:
    """CPU seconds of this process (all its threads)."""
    times = os.times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
