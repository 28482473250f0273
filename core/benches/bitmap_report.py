#!/usr/bin/env python3
"""Turns the criterion results of `cargo bench -p blockmirror-core --bench bitmap` into the
markdown tables of docs/PERFORMANCE.md: the cost of one operation for each implementation
measured in that run, and the ratios between them. Two tables from the same samples: the
median (criterion's estimate), and the fastest sample, which a busy shared machine
disturbs least.

Usage: python3 core/benches/bitmap_report.py [target/criterion]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IMPLEMENTATIONS = ["hbitmap_g16", "hbitmap_g9", "flat", "fixedbitset"]

# (criterion group, label, QEMU util/hbitmap.c median in ns quoted by issue 2, or None)
WORKLOADS = [
    ("set_one", "set 1 random granule", 27.0),
    ("set_range_32", "set random range, 1-32 granules", 29.0),
    ("set_range_4096", "set random range, 1-4096 granules", 134.0),
    ("reset_range_32", "reset random range, 1-32 granules", None),
    ("reset_range_4096", "reset random range, 1-4096 granules", None),
    ("iterate_0.1pct", "iterate, per dirty granule, 0.1 % dirty", 6.3),
    ("iterate_1pct", "iterate, per dirty granule, 1 % dirty", 6.3),
    ("iterate_50pct", "iterate, per dirty granule, 50 % dirty", 2.3),
    ("next_dirty_0.1pct", "next_dirty from a random start, 0.1 % dirty", 17.6),
    ("next_dirty_0.001pct", "next_dirty from a random start, 0.001 % dirty", 19.5),
    ("next_zero_99pct", "next_zero from a random start, 99 % dirty", None),
    ("count", "count", 3.0),
    ("serialize_whole", "serialize the whole bitmap (2 MiB)", None),
]


def per_op_ns(root: Path, group: str, implementation: str, statistic: str) -> float | None:
    """Time of one operation in ns ("median" or "fastest" sample), None if not measured."""
    directory = root / group / implementation / "new"
    try:
        estimates = json.loads((directory / "estimates.json").read_text())
        benchmark = json.loads((directory / "benchmark.json").read_text())
        sample = json.loads((directory / "sample.json").read_text())
    except FileNotFoundError:
        return None
    elements = (benchmark.get("throughput") or {}).get("Elements", 1)
    if statistic == "median":
        per_iteration = float(estimates["median"]["point_estimate"])
    else:
        per_iteration = min(t / n for t, n in zip(sample["times"], sample["iters"]))
    return per_iteration / elements


def show(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    if ns >= 10_000:
        return f"{ns / 1000:,.0f} µs"
    return f"{ns:.2f}" if ns < 100 else f"{ns:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def table(root: Path, statistic: str) -> None:
    print(
        "| workload (2^24 granules) | HBitmap g=16 | HBitmap g=9 | flat `Vec<u64>` | fixedbitset "
        "| QEMU (quoted) | g=16 / flat | g=16 / fixedbitset | QEMU / g=16 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group, label, qemu in WORKLOADS:
        times = {name: per_op_ns(root, group, name, statistic) for name in IMPLEMENTATIONS}
        ours = times["hbitmap_g16"]
        cells = [show(times[name]) for name in IMPLEMENTATIONS]
        print(
            f"| {label} | {' | '.join(cells)} | {show(qemu)} | {ratio(ours, times['flat'])} "
            f"| {ratio(ours, times['fixedbitset'])} | {ratio(qemu, ours)} |"
        )


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    for statistic in ("median", "fastest"):
        print(f"\n{statistic} sample, ns per operation:\n" if statistic == "fastest" else "median, ns per operation:\n")
        table(root, statistic)


if __name__ == "__main__":
    main()
