#!/usr/bin/env python3
"""Crash-safe mirroring, measured: (a) `blockmirror verify` against `qemu-img compare` on the
same pairs, (b) resuming after a kill -9 at 50 % against a full re-copy (time and bytes),
(c) guest writes (`Mirror.write`, 4 KiB at random offsets, 1 and 16 threads) into a ready
mirror with and without the persistent bitmap. Each comparison alternates its two sides
within every repetition, so machine noise hits both alike; compare the ratios.

Usage (from the repository root, with a release build installed):
    .venv/bin/python benches/bench_resume.py --dir /var/tmp/bm-resume --reps 3
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

import blockmirror as bm

MiB = 1 << 20


def random_file(path: str, size: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))


def sparse_pair(src: str, dst: str, size: int) -> None:
    for p in (src, dst):
        with open(p, "wb") as f:
            f.truncate(size)
    rng = random.Random(2)
    for i in range(16):
        data = rng.randbytes(MiB)
        for p in (src, dst):
            with open(p, "r+b") as f:
                f.seek(i * (size // 16))
                f.write(data)


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_verify(d: str, reps: int) -> dict:
    out = {}
    pairs = {}
    dense_src, dense_dst = os.path.join(d, "dense-src.img"), os.path.join(d, "dense-dst.img")
    random_file(dense_src, 1024 * MiB)
    shutil.copyfile(dense_src, dense_dst)
    equal_dst = os.path.join(d, "dense-equal.img")
    shutil.copyfile(dense_src, equal_dst)
    flip(dense_dst, 700 * MiB + 5)
    # qemu-img compare stops at the first difference; on an equal pair both read everything.
    pairs["dense 1 GiB, equal"] = (dense_src, equal_dst)
    pairs["dense 1 GiB, one byte differs at 700 MiB"] = (dense_src, dense_dst)
    sparse_src, sparse_dst = os.path.join(d, "sparse-src.img"), os.path.join(d, "sparse-dst.img")
    sparse_pair(sparse_src, sparse_dst, 8192 * MiB)
    flip(sparse_dst, 3 * 512 * MiB + 100)
    pairs["sparse 8 GiB (16 MiB data), one byte differs"] = (sparse_src, sparse_dst)
    for name, (a, b) in pairs.items():
        ours, qemu = [], []
        for _ in range(reps):
            ours.append(timed(lambda: bm.verify(a, b)))
            qemu.append(timed(lambda: subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", a, b],
                                                     stdout=subprocess.DEVNULL)))
        r = bm.verify(a, b)
        out[name] = {"blockmirror_s": statistics.median(ours), "qemu_img_compare_s": statistics.median(qemu),
                     "ratio_qemu_over_ours": statistics.median(qemu) / statistics.median(ours),
                     "differing": r.differing}
    return out


RUN = [sys.executable, "-m", "blockmirror", "mirror"]


def kill_at_half(src: str, dst: str, bitmap: str) -> None:
    """Runs `mirror --bitmap` until its progress passes 50 %, then SIGKILLs it."""
    child = subprocess.Popen(RUN + [src, dst, "--bitmap", bitmap, "--json", "--progress-interval", "0.05",
                                    "--speed", "256M", "--quiet"], stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        ev = json.loads(line)
        if ev.get("event") == "progress" or "current" in ev:
            cur, tot = ev.get("current", 0), ev.get("total", 0)
            if tot and cur >= tot / 2:
                break
    child.kill()
    child.wait()
    child.stdout.close()


def finish(src: str, dst: str, args: list) -> tuple:
    code = """
import sys, json, blockmirror as bm
src, dst, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
m = bm.Mirror(src, dst, resume=resume, reuse=True)
m.wait_ready(timeout=600)
st = m.stats()
m.complete(timeout=600)
m.close()
print(json.dumps({"copied": st["bytes_written"] + st["bytes_zeroed"]}))
"""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, src, dst, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - t, json.loads(p.stdout)["copied"]


def bench_resume(d: str, reps: int) -> dict:
    src, dst = os.path.join(d, "r-src.img"), os.path.join(d, "r-dst.img")
    bitmap = dst + ".bmbitmap"
    random_file(src, 1024 * MiB, seed=3)
    rows = {"resume": [], "full re-copy": []}
    for _ in range(reps):
        for kind in rows:
            for p in (dst, bitmap):
                if os.path.exists(p):
                    os.remove(p)
            kill_at_half(src, dst, bitmap)
            if kind == "resume":
                rows[kind].append(finish(src, dst, ["1"]))
            else:
                os.remove(bitmap)
                rows[kind].append(finish(src, dst, ["0"]))
            assert bm.verify(src, dst).equal
    med = {k: (statistics.median(t for t, _ in v), statistics.median(b for _, b in v)) for k, v in rows.items()}
    return {k: {"seconds": s, "bytes_copied": b} for k, (s, b) in med.items()} | {
        "time_ratio_full_over_resume": med["full re-copy"][0] / med["resume"][0],
        "bytes_ratio_full_over_resume": med["full re-copy"][1] / max(1, med["resume"][1])}


def guest_writes(src: str, dst: str, threads: int, writes: int, bitmap: bool) -> float:
    for p in (dst, dst + ".bmbitmap"):
        if os.path.exists(p):
            os.remove(p)
    size = os.path.getsize(src)
    with bm.Mirror(src, dst, granularity=65536, bitmap=bitmap) as m:
        m.wait_ready(timeout=600)
        # Let the first clearing round empty the bitmap: the writes then start from a
        # bitmap that marks nothing, the worst case for the marks.
        if bitmap:
            deadline = time.monotonic() + 30
            while bm.read_bitmap(dst + ".bmbitmap")["dirty_chunks"] and time.monotonic() < deadline:
                time.sleep(0.05)
        barrier = threading.Barrier(threads + 1)

        def writer(i: int) -> None:
            rng = random.Random(100 + i)
            data = bytes([i + 1]) * 4096
            barrier.wait()
            for _ in range(writes):
                m.write(rng.randrange(0, size // 4096) * 4096, data)

        ws = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
        for w in ws:
            w.start()
        barrier.wait()
        t = time.perf_counter()
        for w in ws:
            w.join()
        elapsed = time.perf_counter() - t
        m.complete(timeout=600)
    return threads * writes / elapsed


def bench_guest(d: str, reps: int) -> dict:
    src, dst = os.path.join(d, "g-src.img"), os.path.join(d, "g-dst.img")
    random_file(src, 256 * MiB, seed=4)
    out = {}
    for threads in (1, 16):
        rows = {False: [], True: []}
        for _ in range(reps):
            for bitmap in (False, True):
                rows[bitmap].append(guest_writes(src, dst, threads, 4000 // threads * (4 if threads > 1 else 1),
                                                 bitmap))
        no, yes = statistics.median(rows[False]), statistics.median(rows[True])
        out[f"{threads} threads"] = {"writes_per_s_without": no, "writes_per_s_with_bitmap": yes,
                                     "ratio_with_over_without": yes / no}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp/bm-resume")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["verify", "resume", "guest"], default=None)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    results = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    try:
        for name, fn in (("verify", bench_verify), ("resume", bench_resume), ("guest", bench_guest)):
            if args.only in (None, name):
                results[name] = fn(args.dir, args.reps)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
