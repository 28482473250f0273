#!/usr/bin/env python3
"""Mirror benchmark on real files: blockmirror vs cp, qemu-img convert and QEMU's own
blockdev-mirror, then time to ready under guest writes (blockmirror vs QEMU).

Usage (from the repository root, with blockmirror installed in .venv):
    .venv/bin/python benches/bench_mirror.py --size 1G --reps 5 --dir /var/tmp/bm-bench

Part 1 (throughput, no guest): one source of random data (page cache warm), a fresh target
per run, the tools run alternating in each repetition; before every run the previous
target is deleted and `sync` flushes the page cache's dirty data (untimed). Each tool is
timed alone and "+ flush" (the target fdatasync'ed: `sync -d`), because blockmirror and
QEMU's mirror always flush the target before they report success. The QEMU row excludes
QEMU's start-up (a running VM does not pay it), so blockmirror appears twice: the CLI
(with Python start-up) and the library call in this process. Then the same with
O_DIRECT (`--direct`, `qemu-img -t none -T none`, QEMU `cache.direct=on`).

Part 2 (guest writes): a guest writes `--write-rate` random 64 KiB blocks per second while a
mirror with `--live-speed` bytes/s runs; time to BLOCK_JOB_READY (capped) and bytes copied
by then, per copy mode, blockmirror (guest writes via Mirror.write) vs QEMU (guest writes
via HMP `qemu-io` on the `-drive`, so they pass through the mirror's filter).

Installs qemu-system-x86 (with a matching qemu-utils) from apt when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import Qemu, file_node  # noqa: E402

MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def ensure_qemu() -> None:
    if shutil.which("qemu-system-x86_64") and shutil.which("qemu-img"):
        return
    print("installing qemu-system-x86 and qemu-utils (apt)", file=sys.stderr)
    # Both together: the system emulator pins the utils to its own version.
    subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-system-x86", "qemu-utils"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def make_source(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    rng = random.Random(7)
    with open(path, "wb") as f:
        for _ in range(size // (4 * MiB)):
            f.write(rng.randbytes(4 * MiB))


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass


def fresh(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)
    os.sync()


def timed(run: Callable[[], None], target: str) -> Dict[str, float]:
    """Seconds for the tool alone and including an fdatasync of the target."""
    t0 = time.perf_counter()
    run()
    t1 = time.perf_counter()
    subprocess.run(["sync", "-d", target], check=True)
    t2 = time.perf_counter()
    return {"tool": t1 - t0, "flushed": t2 - t0}


def run_cmd(*args: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL)

    return run


def qemu_mirror(workdir: str, src: str, dst: str, size: int, direct: bool) -> Dict[str, float]:
    """QEMU blockdev-mirror src -> dst (sync=full), job-complete at READY. The QEMU process
    starts before the clock; timed from the blockdev-mirror command to BLOCK_JOB_COMPLETED."""
    with open(dst, "wb") as f:
        f.truncate(size)
    q = Qemu(workdir)
    try:
        q.cmd("blockdev-add", **file_node("src", src, direct))
        q.cmd("blockdev-add", **file_node("tgt", dst, direct))
        t0 = time.perf_counter()
        q.cmd("blockdev-mirror", **{"job-id": "m", "device": "src", "target": "tgt", "sync": "full"})
        if q.wait_event("BLOCK_JOB_READY", 600) is None:
            raise RuntimeError("QEMU mirror did not become ready")
        t_ready = time.perf_counter()
        q.cmd("job-complete", id="m")
        if q.wait_event("BLOCK_JOB_COMPLETED", 600) is None:
            raise RuntimeError("QEMU mirror did not complete")
        t1 = time.perf_counter()
    finally:
        q.close()
    return {"tool": t1 - t0, "flushed": t1 - t0, "ready": t_ready - t0}


def throughput(args: argparse.Namespace, src: str, direct: bool) -> Dict[str, List[Dict[str, float]]]:
    dst = os.path.join(args.dir, "dst.img")
    bm_cmd = [sys.executable, "-m", "blockmirror", "mirror", src, dst, "--quiet"] + (["--direct"] if direct else [])
    def in_process() -> None:
        import blockmirror as bm

        bm.mirror(src, dst, direct=direct)

    tools: Dict[str, Callable[[], Dict[str, float]]] = {
        "blockmirror mirror": lambda: timed(run_cmd(*bm_cmd), dst),
        # Like the QEMU row, without process start-up: the library call in this process.
        "blockmirror.mirror() in process": lambda: timed(in_process, dst),
        "qemu-img convert": lambda: timed(run_cmd(
            "qemu-img", "convert", "-f", "raw", "-O", "raw",
            *(["-t", "none", "-T", "none"] if direct else []), src, dst), dst),
        "QEMU blockdev-mirror": lambda: qemu_mirror(args.dir, src, dst, args.size, direct),
    }
    if not direct:
        tools["cp --sparse=never"] = lambda: timed(run_cmd("cp", "--sparse=never", src, dst), dst)
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in tools}
    names = list(tools)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]  # alternate the order
        for name in order:
            if not direct:
                warm(src)
            fresh(dst)
            results[name].append(tools[name]())
            print(f"  rep {rep + 1} {name}: {results[name][-1]}", file=sys.stderr)
    fresh(dst)
    return results


class BmGuest(threading.Thread):
    def __init__(self, write: Callable[[int, bytes], object], size: int, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.write, self.size, self.rate = write, size, rate
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        data = bytes([0x5A]) * (64 << 10)
        due = time.monotonic()
        while not self.stop.is_set():
            offset = self.rng.randrange(0, self.size // (64 << 10)) * (64 << 10)
            self.write(offset, data)
            self.writes += 1
            due += 1.0 / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                self.stop.wait(pause)


def live_blockmirror(args: argparse.Namespace, src: str, mode: str,
                     auto_converge: bool = False) -> Dict[str, Optional[float]]:
    import blockmirror as bm

    dst = os.path.join(args.dir, "live-dst.img")
    fresh(dst)
    with bm.Mirror(src, dst, speed=args.live_speed, copy_mode=mode, auto_converge=auto_converge,
                   not_converging_window=args.converge_window) as m:
        guest = BmGuest(m.write, args.live_size, args.write_rate, seed=3)
        t0 = time.perf_counter()
        guest.start()
        outcome = m._native.wait_ready(args.live_timeout)
        t_ready = time.perf_counter() - t0 if outcome == "ready" else None
        copied = m.progress[0]
        guest.stop.set()
        guest.join()
        achieved = guest.writes / (time.perf_counter() - t0)
        if outcome == "ready":
            m.complete(timeout=120)
        else:
            m.cancel(force=True, timeout=120)
    fresh(dst)
    return {"ready_s": t_ready, "copied_bytes": copied, "writes_per_s": achieved}


def live_qemu(args: argparse.Namespace, src: str, mode: str) -> Dict[str, Optional[float]]:
    dst = os.path.join(args.dir, "live-dst.img")
    fresh(dst)
    with open(dst, "wb") as f:
        f.truncate(args.live_size)
    q = Qemu(args.dir, ["-drive", f"file={src},format=raw,if=none,id=drive0"])
    try:
        q.cmd("blockdev-add", **file_node("tgt", dst, False))
        # One write before the job starts (avoids a permission race seen with QEMU 10.0.2).
        q.hmp('qemu-io drive0 "write -P 0x5a 0 64k"')
        q.cmd("blockdev-mirror", **{"job-id": "m", "device": "drive0", "target": "tgt", "sync": "full",
                                    "speed": args.live_speed, "copy-mode": mode})
        guest = BmGuest(lambda off, _data: q.hmp(f'qemu-io drive0 "write -P 0x5a {off} 64k"'),
                        args.live_size, args.write_rate, seed=3)
        t0 = time.perf_counter()
        guest.start()
        ready = q.wait_event("BLOCK_JOB_READY", args.live_timeout)
        t_ready = time.perf_counter() - t0 if ready is not None else None
        jobs = q.cmd("query-block-jobs")
        copied = jobs[0]["offset"] if jobs else None
        guest.stop.set()
        guest.join()
        achieved = guest.writes / (time.perf_counter() - t0)
        if ready is not None:
            q.cmd("job-complete", id="m")
            q.wait_event("BLOCK_JOB_COMPLETED", 120)
        else:
            q.cmd("block-job-cancel", device="m", force=True)
            q.wait_event("BLOCK_JOB_CANCELLED", 120)
    finally:
        q.close()
    fresh(dst)
    return {"ready_s": t_ready, "copied_bytes": copied, "writes_per_s": achieved}


def med(values: List[float]) -> float:
    return statistics.median(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=1 << 30)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dir", default="/var/tmp/blockmirror-bench")
    p.add_argument("--no-direct", action="store_true", help="skip the O_DIRECT round")
    p.add_argument("--no-cached", action="store_true", help="skip the page-cache round")
    p.add_argument("--live-size", type=parse_size, default=256 * MiB)
    p.add_argument("--live-speed", type=parse_size, default=32 * MiB)
    p.add_argument("--write-rate", type=float, default=800.0, help="guest 64 KiB writes per second")
    p.add_argument("--live-timeout", type=float, default=30.0)
    p.add_argument("--live-reps", type=int, default=1)
    p.add_argument("--converge-window", type=float, default=5.0,
                   help="blockmirror's not-converging window in seconds (auto-converge row)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw results here")
    args = p.parse_args()
    ensure_qemu()
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "src.img")
    make_source(src, args.size)
    report: Dict[str, Any] = {"size": args.size, "reps": args.reps, "live": []}
    mib = args.size / MiB
    if not args.skip_throughput:
        rounds = [d for d in (False, True) if not (d and args.no_direct) and not (not d and args.no_cached)]
        for direct in rounds:
            label = "O_DIRECT" if direct else "page cache"
            print(f"== throughput, {label}", file=sys.stderr)
            res = throughput(args, src, direct)
            report[f"throughput_{'direct' if direct else 'cached'}"] = res
            base = med([r["flushed"] for r in res["blockmirror mirror"]])
            print(f"\n### {label}: {mib:.0f} MiB of random data, medians of {args.reps}\n")
            print("| tool | MiB/s (tool alone) | MiB/s (+ fdatasync of the target) | blockmirror vs tool (flushed) |")
            print("|---|---|---|---|")
            for name, runs in res.items():
                tool, flushed = med([r["tool"] for r in runs]), med([r["flushed"] for r in runs])
                print(f"| {name} | {mib / tool:.0f} | {mib / flushed:.0f} | {flushed / base:.2f}x |")
            print("\n(last column: the tool's flushed time / blockmirror's; above 1 = blockmirror faster)")
    live_src = os.path.join(args.dir, "live-src.img")
    live_runs: List[Tuple[str, str, Callable[..., Dict[str, Optional[float]]]]] = []
    if not args.skip_live:
        print(f"\n### guest writing {args.write_rate:.0f} x 64 KiB/s, speed limit {args.live_speed // MiB} MiB/s, "
              f"{args.live_size // MiB} MiB image (cap {args.live_timeout:.0f} s)\n")
        print("| copy mode | tool | time to ready (s) | MiB copied by then | guest writes/s achieved |")
        print("|---|---|---|---|---|")
        live_runs = [
            ("background", "blockmirror", live_blockmirror),
            ("background", "QEMU", live_qemu),
            ("background", f"blockmirror, auto_converge (window {args.converge_window:.0f} s)",
             lambda a, s, m: live_blockmirror(a, s, m, auto_converge=True)),
            ("write-blocking", "blockmirror", live_blockmirror),
            ("write-blocking", "QEMU", live_qemu),
        ]
    for mode, name, fn in live_runs:
        for _ in range(args.live_reps):
            make_source(live_src, args.live_size)
            r = fn(args, live_src, mode)
            report["live"].append({"mode": mode, "tool": name, **r})
            ready = f"{r['ready_s']:.1f}" if r["ready_s"] is not None else f"not ready after {args.live_timeout:.0f}"
            copied = f"{r['copied_bytes'] / MiB:.0f}" if r["copied_bytes"] is not None else "?"
            print(f"| {mode} | {name} | {ready} | {copied} | {r['writes_per_s']:.0f} |", flush=True)
            os.remove(live_src)  # the guest wrote it: start the next run from fresh data
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
