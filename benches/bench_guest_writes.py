#!/usr/bin/env python3
"""Guest-write cost through a live mirror: latency and rate of `Mirror.write` in a ready
job, per copy mode and thread count, for one or more builds of blockmirror in one run.

Each build is a Python interpreter with blockmirror installed (`--python PATH`, repeatable:
e.g. a venv of the commit before a change and one of the change). The runs alternate
between builds within every repetition, so machine noise hits them alike; compare the
ratios, not the bare times.

`BLOCKMIRROR_BENCH_OPTIONS` (JSON) adds `Mirror` options in the child: a wrapper script
that sets it and runs an interpreter compares one build's settings.

Usage (from the repository root):
    .venv/bin/python benches/bench_guest_writes.py --python /tmp/old/.venv/bin/python \\
        --python .venv/bin/python --reps 5 --dir /var/tmp/bm-guest
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List

# One measurement, run inside the build's own interpreter: a ready mirror of a random
# image, `threads` writers each doing `writes` 4 KiB writes at random aligned offsets of
# their own, timed one by one.
CHILD = r"""
import json, os, random, sys, threading, time
import blockmirror as bm
src, dst, mode, threads, writes, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
with open(src, "wb") as f:
    rng = random.Random(1)
    for _ in range(size >> 20):
        f.write(rng.randbytes(1 << 20))
latencies = []
lock = threading.Lock()
options = json.loads(os.environ.get("BLOCKMIRROR_BENCH_OPTIONS", "{}"))
with bm.Mirror(src, dst, copy_mode=mode, granularity=65536, **options) as m:
    m.wait_ready(timeout=120)
    barrier = threading.Barrier(threads)
    def writer(i):
        rng = random.Random(100 + i)
        data = bytes([i + 1]) * 4096
        mine = []
        barrier.wait()
        for _ in range(writes):
            offset = rng.randrange(0, size // 4096) * 4096
            t = time.perf_counter_ns()
            m.write(offset, data)
            mine.append(time.perf_counter_ns() - t)
        with lock:
            latencies.extend(mine)
    t0 = time.perf_counter_ns()
    ws = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in ws: w.start()
    for w in ws: w.join()
    elapsed = time.perf_counter_ns() - t0
    m.complete(timeout=120)
latencies.sort()
print(json.dumps({"p50_us": latencies[len(latencies) // 2] / 1e3,
                  "p99_us": latencies[int(len(latencies) * 0.99)] / 1e3,
                  "writes_per_sec": len(latencies) / (elapsed / 1e9)}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", action="append", required=True, help="an interpreter with blockmirror installed")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--writes", type=int, default=2000, help="writes per thread")
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--dir", default="/var/tmp/blockmirror-guest-bench")
    p.add_argument("--modes", default="write-blocking,background")
    p.add_argument("--threads", default="1,4")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    src, dst = os.path.join(args.dir, "src.img"), os.path.join(args.dir, "dst.img")
    results: Dict[str, List[Dict[str, Any]]] = {}
    for rep in range(args.reps):
        for mode in args.modes.split(","):
            for threads in args.threads.split(","):
                for python in args.python:
                    for path in (src, dst):
                        if os.path.exists(path):
                            os.remove(path)
                    out = subprocess.run([python, "-c", CHILD, src, dst, mode, threads, str(args.writes),
                                          str(args.size_mib << 20)], capture_output=True, text=True)
                    if out.returncode != 0:
                        sys.exit(out.stderr)
                    results.setdefault(f"{mode} x{threads} {python}", []).append(json.loads(out.stdout))
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    print(f"{'run':70} {'p50 us':>8} {'p99 us':>8} {'writes/s':>9}")
    for key, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{key:70} {med['p50_us']:8.1f} {med['p99_us']:8.1f} {med['writes_per_sec']:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
