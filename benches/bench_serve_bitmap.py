"""The crash-safe bitmap file's cost to guest writes through `blockmirror serve`: the
``--bitmap`` sub-benchmark of bench_serve.py (run it from there).

fio's nbd engine writes 4 KiB at random offsets of the whole disk through blockmirror's
export, with and without the server's ``--bitmap PATH`` (the file in the same directory
as the target), the two alternating within every repetition (ABBA...). States:

- ``background``, ``write-blocking``: a mirror in that copy mode, ready, and (with the
  bitmap) its file cleared by the cleaning rounds before fio starts: the file then holds
  what the guest's writes mark, as in a long-running mirror.
- ``idle-left-behind``: the job was cancelled before the switch-over, after its file was
  cleared: the file stays, and every client write is marked in it with no job running
  (without the bitmap: the same cancelled job, nothing left behind).

Two disks: a dense one (default 1 GiB: each 1 MiB bitmap chunk is hit every interval, so
the activity window keeps all of them marked) and a sparse one (default 8 GiB, made
afresh for every run: most writes land in a chunk that the last round cleared, the worst
case for marks). Every run starts with no bitmap file (a file left behind would have to
be resumed from). fio's first ``--bitmap-ramp`` seconds do not count (ramp_time): after
a cleared file the first touch of every chunk waits for the file, a warm-up whose length
depends on the disk, not the steady cost (``--bitmap-ramp 0`` includes it). The file's
generation (+1 per synced write of the file) after the ramp and after fio counts the file
writes made while fio's figures were taken, clearing rounds included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from bench_serve import (MiB, Server, cancel_mirror, fio_command, fio_result, load, make_random_image, next_event,
                         serving, settle, start_mirror, write_figures)

VARIANTS = ("bitmap", "none")
# No bitmap file, but the target synced every interval as the cleaning rounds do: what the
# flush costs by itself (--bitmap-flushed-baseline).
FLUSHED = "flushed"
CLEANING_INTERVAL = 1.0  # serve's bitmap interval (its default; QMP does not set it)
GOAL_RATIO = 0.90  # the bitmap may cost at most 10 % of IOPS at iodepth 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bitmap")
    g.add_argument("--bitmap-dense-mib", type=int, default=1024, help="the dense disk (random data)")
    g.add_argument("--bitmap-sparse-mib", type=int, default=8192, help="the sparse disk, made afresh each run")
    g.add_argument("--bitmap-iodepth", default="1,16")
    g.add_argument("--bitmap-states", default="background,write-blocking,idle-left-behind")
    g.add_argument("--bitmap-clean-bound", type=float, default=10.0,
                   help="seconds to wait for the cleaning rounds to clear the file before fio (0: no wait)")
    g.add_argument("--bitmap-ramp", type=float, default=3.0,
                   help="seconds of fio before its figures count (fio's ramp_time): the first touch of every "
                        "chunk after the file was cleared is left out, so the figures are the steady state")
    g.add_argument("--bitmap-flushed-baseline", action="store_true",
                   help="a third variant: no bitmap file, the target fdatasync'd every second during fio (what "
                        "the cleaning rounds do to it), to tell the flush's cost from the file's")
    g.add_argument("--bitmap-ready-bound", type=float, default=120.0, help="seconds to wait for the job's READY")


def quick(args: argparse.Namespace) -> None:
    """Tiny disks, the deep queue only, two states, no wait for a clean file."""
    args.bitmap_dense_mib, args.bitmap_sparse_mib = 16, 64
    args.bitmap_iodepth, args.bitmap_states = "16", "write-blocking,idle-left-behind"
    args.bitmap_clean_bound = args.bitmap_ramp = 0.0


def _file_state(path: str) -> Tuple[int, int]:
    """(generation, dirty chunks) of the bitmap file at ``path``."""
    import blockmirror  # the extension under test; the servers run it in their own process

    found = blockmirror.read_bitmap(path)
    return found["generation"], found["dirty_chunks"]


def _marks_waited(server: Server) -> Optional[int]:
    """Guest writes that waited for a write of the file so far (the server's
    ``x-blockmirror-query-bitmap`` counters), or None from a build without the command."""
    try:
        stats = server.qmp.cmd("x-blockmirror-query-bitmap").get("stats")
    except Exception:  # an older build under comparison: the figure is left out
        return None
    return None if stats is None else int(stats["marks-waited"])


def _wait_clean(path: str, bound: float) -> float:
    """Seconds until the file held no marked chunk (its job's cleaning rounds cleared what
    the copy made equal), at most ``bound``."""
    start = time.monotonic()
    while time.monotonic() - start < bound and _file_state(path)[1] > 0:
        time.sleep(0.05)
    return time.monotonic() - start


def _one_run(args: argparse.Namespace, disk: Tuple[str, str, int, bool], state: str, qd: int, variant: str,
             target: str, bitmap: str) -> Dict[str, Any]:
    name, image, size, sparse = disk
    for path in (bitmap, target):
        if os.path.exists(path):
            os.remove(path)
    if sparse:
        if os.path.exists(image):
            os.remove(image)
        with open(image, "wb") as f:
            f.truncate(size)
    settle(args)
    kept = bitmap if variant == "bitmap" else None
    with serving("blockmirror", image, args.dir, args.python, bitmap=kept) as server:
        mode = "background" if state == "idle-left-behind" else state
        t = time.monotonic()
        start_mirror(server, target, mode)
        if next_event(server.qmp, "BLOCK_JOB_READY", args.bitmap_ready_bound) is None:
            raise RuntimeError(f"{name} {state}: not ready within {args.bitmap_ready_bound} s")
        ready_s = time.monotonic() - t
        clean_s = _wait_clean(kept, args.bitmap_clean_bound) if kept else 0.0
        if state == "idle-left-behind":
            cancel_mirror(server)
        # Untimed: the copy's dirty pages written back alike with and without the file (the
        # cleaning rounds flush the target, so only the runs with the file would have).
        settle(args)
        dirty_at_start = _file_state(kept)[1] if kept else 0
        with _syncing(target if variant == FLUSHED else None):
            doc, before, after, waited = _fio_counting(args, server, kept, size, qd)
        _check_job(server, state)
        if state != "idle-left-behind":
            cancel_mirror(server)
    for path in (bitmap, target):
        if os.path.exists(path):
            os.remove(path)
    figures = write_figures(doc)
    return {"disk": name, "state": state, "iodepth": qd, "variant": variant, **figures, "ready_s": ready_s,
            "clean_s": clean_s, "dirty_chunks_at_start": dirty_at_start, "file_writes": after - before, "marks_waited": waited}


def _fio_counting(args: argparse.Namespace, server: Server, bitmap: Optional[str], size: int,
                  qd: int) -> Tuple[Dict[str, Any], int, int, Optional[int]]:
    """fio's document, and the file's generation once fio's ramp is over (about: fio starts
    its clock after connecting, a few milliseconds) and after fio: the file writes made
    while fio's figures were taken (0, 0 without a file); and the guest writes that waited
    for the file meanwhile (None without a file or from a build that does not count)."""
    ramp = [f"--ramp_time={int(args.bitmap_ramp * 1000)}ms"] if args.bitmap_ramp else []
    fio = subprocess.Popen(fio_command(server.uri, bs="4k", iodepth=qd, size=f"{size // MiB}M", runtime=args.runtime,
                                       extra=ramp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(args.bitmap_ramp)
        before = _file_state(bitmap)[0] if bitmap else 0
        waited_before = _marks_waited(server) if bitmap else None
        out, err = fio.communicate(timeout=args.bitmap_ramp + args.runtime + 120)
    except BaseException:
        fio.kill()
        fio.wait()
        raise
    if fio.returncode != 0:
        raise RuntimeError(f"fio failed ({fio.returncode}): {err[-2000:]} {out[-2000:]}")
    after = _file_state(bitmap)[0] if bitmap else 0
    waited_after = _marks_waited(server) if waited_before is not None else None
    waited = None if waited_after is None or waited_before is None else waited_after - waited_before
    return fio_result(out), before, after, waited


@contextlib.contextmanager
def _syncing(path: Optional[str]) -> Iterator[None]:
    """fdatasync of ``path`` every cleaning interval on a thread while inside (nothing
    without a path)."""
    if path is None:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while not stop.wait(CLEANING_INTERVAL):
                os.fdatasync(fd)
        finally:
            os.close(fd)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _check_job(server: Server, state: str) -> None:
    """The job the state calls for is still there (a mirror that failed mid-run would make
    the figures those of an idle disk)."""
    jobs = server.qmp.cmd("query-block-jobs")
    if state == "idle-left-behind" and jobs:
        raise RuntimeError("idle run with a job still running")
    if state != "idle-left-behind" and (not jobs or not jobs[0].get("ready")):
        raise RuntimeError(f"{state}: the mirror is gone or not ready after fio: {jobs}")


def bench_bitmap(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    dense = os.path.join(args.dir, "bitmap-dense-src.img")
    make_random_image(dense, args.bitmap_dense_mib * MiB)
    disks = [(f"{args.bitmap_dense_mib} MiB dense", dense, args.bitmap_dense_mib * MiB, False),
             (f"{args.bitmap_sparse_mib} MiB sparse", os.path.join(args.dir, "bitmap-sparse-src.img"),
              args.bitmap_sparse_mib * MiB, True)]
    target, bitmap = os.path.join(args.dir, "bitmap-dst.img"), os.path.join(args.dir, "bitmap-run.bmbitmap")
    configs = [(disk, state, qd) for disk in disks for state in args.bitmap_states.split(",")
               for qd in map(int, args.bitmap_iodepth.split(","))]
    variants = VARIANTS + ((FLUSHED,) if args.bitmap_flushed_baseline else ())
    runs: List[Dict[str, Any]] = []
    loads = [f"before: {load()}"]
    for rep in range(args.reps):
        for index, (disk, state, qd) in enumerate(configs):
            # Every order in turn: with two variants ABBA..., with three a rotation each
            # time, reversed every other time.
            turn = (rep + index) % len(variants)
            rotated = variants[turn:] + variants[:turn]
            for variant in (rotated if (rep + index) % 2 == 0 else rotated[::-1]):
                row = {"rep": rep, **_one_run(args, disk, state, qd, variant, target, bitmap)}
                runs.append(row)
                log(f"rep {rep + 1} {row['disk']:16} {state:16} qd{qd:<3} {variant:6} {row['iops']:8.0f} IOPS "
                    f"p50 {row['p50_us']:7.1f} us p99 {row['p99_us']:8.1f} us file writes {row['file_writes']:6d} "
                    f"marks waited {'-' if row['marks_waited'] is None else row['marks_waited']} "
                    f"dirty at start {row['dirty_chunks_at_start']}  load {load()}")
    if os.path.exists(disks[1][1]):
        os.remove(disks[1][1])
    loads.append(f"after: {load()}")
    header = (f"bitmap file's cost, fio 4 KiB random writes over the whole disk, {args.runtime} s per run after "
              f"{args.bitmap_ramp} s of ramp, "
              f"{args.reps} pairs per row (with/without alternating); load {loads[0]}, {loads[1]}")
    return {"runs": runs, "table": report_bitmap(runs, header), "load": loads}


def report_bitmap(runs: List[Dict[str, Any]], header: str) -> List[Dict[str, Any]]:
    """Prints the table (min/med/max, medians, medians of the paired ratios with/without)
    and whether each iodepth-16 row meets the goal; returns the ratio rows."""
    configs = list(dict.fromkeys((r["disk"], r["state"], r["iodepth"]) for r in runs))
    print("\n" + header)
    print(f"{'disk':16} {'state':16} {'qd':>3} | {'with IOPS min/med/max':>24} | {'without IOPS min/med/max':>24} | "
          f"{'IOPS ratio':>10} | {'p50 w/wo us':>13} | {'p99 w/wo us':>15} | {'p99 ratio':>9} | "
          f"{'file writes/run':>15} | {'per 1k writes':>13}")
    table = []
    for disk, state, qd in configs:
        def sel(variant: str) -> List[Dict[str, Any]]:
            return sorted((r for r in runs if (r["disk"], r["state"], r["iodepth"], r["variant"]) ==
                           (disk, state, qd, variant)), key=lambda r: r["rep"])
        with_, without = sel("bitmap"), sel("none")
        pairs = list(zip(with_, without))
        iops_ratio = statistics.median(a["iops"] / b["iops"] for a, b in pairs)
        p99_ratio = statistics.median(a["p99_us"] / b["p99_us"] for a, b in pairs if b["p99_us"])
        med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
        mm = lambda rows, k: f"{min(r[k] for r in rows):.0f}/{med(rows, k):.0f}/{max(r[k] for r in rows):.0f}"  # noqa: E731
        per_k = statistics.median(r["file_writes"] / max(1, r["ios"]) * 1000 for r in with_)
        print(f"{disk:16} {state:16} {qd:>3} | {mm(with_, 'iops'):>24} | {mm(without, 'iops'):>24} | "
              f"{iops_ratio:9.2f}x | {med(with_, 'p50_us'):6.0f}/{med(without, 'p50_us'):<6.0f} | "
              f"{med(with_, 'p99_us'):7.0f}/{med(without, 'p99_us'):<7.0f} | {p99_ratio:8.2f}x | "
              f"{med(with_, 'file_writes'):15.0f} | {per_k:13.1f}")
        row = {"disk": disk, "state": state, "iodepth": qd, "iops_ratio": iops_ratio, "p99_ratio": p99_ratio,
               "file_writes_per_1k": per_k}
        flushed = sel(FLUSHED)
        if flushed:
            row["flushed_ratio"] = statistics.median(a["iops"] / b["iops"] for a, b in zip(flushed, without))
            row["with_over_flushed"] = statistics.median(a["iops"] / b["iops"] for a, b in zip(with_, flushed))
            print(f"{'':16} {'':16} {'':>3}   target synced every {CLEANING_INTERVAL:.0f} s, no file: IOPS "
                  f"{mm(flushed, 'iops')}, p50 {med(flushed, 'p50_us'):.0f}, p99 {med(flushed, 'p99_us'):.0f} us; "
                  f"flushed/without {row['flushed_ratio']:.2f}x, with/flushed {row['with_over_flushed']:.2f}x")
        table.append(row)
    print(f"\ngoal: with the bitmap, at least {GOAL_RATIO:.2f}x the IOPS without it at iodepth 16")
    for row in table:
        if row["iodepth"] == 16:
            verdict = "met" if row["iops_ratio"] >= GOAL_RATIO else "NOT met"
            print(f"  {row['disk']:16} {row['state']:16} {row['iops_ratio']:.2f}x: {verdict}")
    return table


def report_saved(saved: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """The table of a --json file's bitmap runs again, if it has any."""
    if "bitmap" not in saved:
        return None
    return report_bitmap(saved["bitmap"]["runs"], " ".join(saved["argv"]) + "; load " +
                         ", ".join(saved["bitmap"]["load"]))
