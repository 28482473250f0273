#!/usr/bin/env python3
"""Bulk-copy A/B across builds: `blockmirror mirror SRC DST` (a one-shot copy and pivot, the
target flushed) with each build's CLI, alternating within every repetition, buffered and
O_DIRECT. Report ratios of medians, not bare times: this machine's disk is noisy.

Usage (from the repository root):
    .venv/bin/python benches/bench_ab_copy.py --python /tmp/old/.venv/bin/python \\
        --python .venv/bin/python --size-mib 512 --reps 3 --dir /var/tmp/bm-ab
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Dict, List

MiB = 1 << 20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", action="append", required=True, help="an interpreter with blockmirror installed")
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", default="/var/tmp/blockmirror-ab")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    src, dst = os.path.join(args.dir, "src.img"), os.path.join(args.dir, "dst.img")
    rng = random.Random(5)
    with open(src, "wb") as f:
        for _ in range(args.size_mib):
            f.write(rng.randbytes(MiB))
    times: Dict[str, List[float]] = {}
    for rep in range(args.reps):
        for flags in ([], ["--direct"]):
            for python in args.python:
                if os.path.exists(dst):
                    os.remove(dst)
                subprocess.run(["sync"], check=True)
                t = time.perf_counter()
                subprocess.run([python, "-m", "blockmirror", "mirror", src, dst, *flags], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times.setdefault(f"{' '.join(flags) or 'buffered'} {python}", []).append(time.perf_counter() - t)
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    for key, runs in times.items():
        med = statistics.median(runs)
        print(f"{key:70} median {med:6.2f} s  {args.size_mib / med:7.1f} MiB/s  runs {[round(r, 2) for r in runs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
