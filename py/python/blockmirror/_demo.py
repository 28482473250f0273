"""``blockmirror demo``: a live mirror of a generated raw image while a guest writes to it.

1. Creates a temporary raw image: 1 MiB segments of random data, allocated zeroes and
   holes. 2. Starts a guest thread writing through ``Mirror.write`` at a fixed rate with a
   hot-spot pattern. 3. Mirrors with a progress bar until ready, keeps the guest writing a
   moment in sync, then completes (quiesce, drain, flush, pivot) while the guest goes on
   writing (after the pivot its writes land on the target). 4. Verifies the target equals
   the source as the guest last wrote it, prints a summary, removes the temp files.

``--serve``: the same story with the disk behind an NBD export, as a VM would see it. The
image is served (``blockmirror.serve``) on a private unix socket in the temp dir; the guest
writes over NBD (``blockmirror.NbdClient``, or fio's ``nbd`` engine with ``--guest fio``);
the demo drives the job in-process with QMP commands (``Server.mirror``,
``query-block-jobs``, ``block-job-complete``) and follows its QMP events. After the
switch-over the export serves the target with the guest still connected; the demo then
reads the whole disk back through the export and compares it, and the target file, with
what the guest wrote.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import List, Optional, Tuple

SEGMENT_BYTES = 1 << 20
DEFAULT_SIZE = 1 << 30
#: Smaller when served: the check reads the whole disk back through the export.
SERVED_DEFAULT_SIZE = 256 << 20
_POOL_BYTES = 8 << 20


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from blockmirror._native import DEFAULTS
    from blockmirror._cli_args import parse_size, size_text

    p.add_argument("--size", type=parse_size, default=None,
                   help="image size (default 1G; 256M with --serve, which also reads it all back over NBD)")
    p.add_argument("--rate", type=parse_size, default=16 << 20,
                   help="guest write rate in bytes per second (default 16M)")
    p.add_argument("--block", type=parse_size, default=64 << 10, help="guest write size (default 64K)")
    p.add_argument("--copy-mode", choices=["background", "write-blocking"], default="background")
    p.add_argument("--speed", type=parse_size, default=0, help="mirror speed limit per second (default unlimited)")
    granularity = int(DEFAULTS["granularity"])
    p.add_argument("--granularity", type=parse_size, default=granularity,
                   help=f"chunk size (default {size_text(granularity)})")
    p.add_argument("--in-sync-seconds", type=float, default=1.0,
                   help="how long the guest writes in the mirroring phase before completing")
    p.add_argument("--time-limit", type=float, default=300.0, metavar="S",
                   help="give up when the mirror is not ready after S seconds (default 300; exit 1)")
    p.add_argument("--auto-converge", action="store_true",
                   help="switch to write-blocking when the copy cannot keep up with the guest")
    p.add_argument("--not-converging-window", type=float, default=10.0, metavar="S",
                   help="seconds without progress before the job reports it is not converging "
                   "(default 10; with --serve the demo then switches the job to write-blocking with "
                   "block-job-change, as a management tool would)")
    p.add_argument("--serve", action="store_true",
                   help="serve the image over NBD (a private unix socket) and have the guest write "
                   "through the export; the job is driven with QMP commands in-process")
    p.add_argument("--guest", choices=["nbd", "fio"], default="nbd",
                   help="with --serve: the guest is blockmirror's NBD client (nbd, default) or fio's "
                   "nbd engine with crc32c verification of what it wrote (fio, when installed)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="where to put the temporary files (default: $TMPDIR)")
    p.add_argument("--quiet", action="store_true", help="summary only")


def make_image(path: str, size: int, rng: random.Random, pool: bytes) -> Tuple[int, int, int]:
    """Writes a sparse image; returns (data bytes, zero bytes, hole bytes)."""
    data = zeros = holes = 0
    zero_segment = bytes(SEGMENT_BYTES)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, SEGMENT_BYTES):
            n = min(SEGMENT_BYTES, size - offset)
            kind = rng.random()
            if kind < 0.55:
                start = rng.randrange(0, len(pool) - n)
                f.seek(offset)
                f.write(pool[start:start + n])
                data += n
            elif kind < 0.70:
                f.seek(offset)
                f.write(zero_segment[:n])
                zeros += n
            else:
                holes += n
    return data, zeros, holes


class Guest(threading.Thread):
    """Writes ``block`` bytes at ``rate`` bytes/s: 80 % into a hot 10 % of the disk, through
    ``disk.write(offset, data)`` (a ``Mirror``, or an ``NbdClient`` of the served disk)."""

    def __init__(self, disk: "object", size: int, rate: int, block: int, seed: int, pool: bytes) -> None:
        super().__init__(name="demo-guest", daemon=True)
        self.disk = disk
        self.size, self.rate, self.block = size, rate, min(block, size)
        self.rng = random.Random(seed)
        self.pool = pool
        self.stop_event = threading.Event()
        self.log_writes = threading.Event()
        self.log: List[Tuple[int, bytes]] = []
        self.bytes_written = 0
        self.writes_done = threading.Condition()
        self.error: Optional[BaseException] = None
        hot_len = max(self.block, size // 10)
        self.hot_start = self.rng.randrange(0, max(1, size - hot_len)) // 4096 * 4096
        self.hot_len = hot_len

    def _offset(self) -> int:
        if self.rng.random() < 0.8:
            span, base = self.hot_len, self.hot_start
        else:
            span, base = self.size, 0
        offset = base + self.rng.randrange(0, max(1, span - self.block)) // 4096 * 4096
        return min(offset, self.size - self.block)

    def run(self) -> None:
        interval = self.block / self.rate if self.rate > 0 else 0.0
        due = time.monotonic()
        try:
            while not self.stop_event.is_set():
                offset = self._offset()
                start = self.rng.randrange(0, len(self.pool) - self.block)
                data = self.pool[start:start + self.block]
                self.disk.write(offset, data)  # type: ignore[attr-defined]
                # Checked after the write: one that started before complete() was called may
                # have landed after the pivot, on the target only.
                if self.log_writes.is_set():
                    self.log.append((offset, data))
                with self.writes_done:
                    self.bytes_written += len(data)
                    self.writes_done.notify_all()
                due += interval
                pause = due - time.monotonic()
                if pause > 0:
                    self.stop_event.wait(pause)
                else:
                    due = time.monotonic()  # behind schedule: do not burst to catch up
        except BaseException as exc:
            self.error = exc
        finally:
            with self.writes_done:
                self.writes_done.notify_all()

    def wait_written(self, total: int, timeout: float) -> None:
        """Waits until the guest has written ``total`` bytes in all (or ended, or timeout)."""
        with self.writes_done:
            self.writes_done.wait_for(lambda: self.bytes_written >= total or not self.is_alive(), timeout)

    def replay_log(self, path: str) -> None:
        """Applies the writes logged since ``log_writes`` was set to the file at ``path``, in
        order: the source then holds what the guest last wrote (see ``run_demo``)."""
        with open(path, "r+b") as f:
            for offset, chunk in self.log:
                f.seek(offset)
                f.write(chunk)


def files_equal(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(8 << 20)
            y = fb.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def run_demo(args: argparse.Namespace) -> int:
    from blockmirror._mirror import Mirror
    from blockmirror._native import Timeout
    from blockmirror._progress import ProgressBar

    if args.size is None:
        args.size = SERVED_DEFAULT_SIZE if args.serve else DEFAULT_SIZE
    if args.size <= 0 or args.rate < 0 or args.block <= 0:
        print("blockmirror demo: --size and --block must be positive, --rate non-negative", file=sys.stderr)
        return 2
    if not 0 < args.time_limit < 1e9 or not 0 <= args.not_converging_window < 1e9:
        print("blockmirror demo: --time-limit must be positive, --not-converging-window "
              "non-negative (both finite)", file=sys.stderr)
        return 2
    err = sys.stderr
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=err))
    if args.guest == "fio" and not args.serve:
        print("blockmirror demo: --guest fio needs --serve (fio writes over NBD)", file=sys.stderr)
        return 2
    if args.guest == "fio" and shutil.which("fio") is None:
        print("blockmirror demo: --guest fio: fio is not installed", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="blockmirror-demo-", dir=args.dir)
    try:
        rng = random.Random(args.seed)
        pool = rng.randbytes(_POOL_BYTES) if hasattr(rng, "randbytes") else os.urandom(_POOL_BYTES)
        source, target = os.path.join(workdir, "source.img"), os.path.join(workdir, "target.img")
        t0 = time.monotonic()
        data, zeros, holes = make_image(source, args.size, rng, pool)
        say(f"created {source}: {_mib(args.size)} ({_mib(data)} random data, {_mib(zeros)} zeroes, "
            f"{_mib(holes)} holes) in {time.monotonic() - t0:.1f} s")
        bar = None if args.quiet else ProgressBar("mirror", file=err)
        phase = (lambda msg: None) if bar is None else bar.phase
        if args.serve:
            from blockmirror._demo_serve import run_served

            return run_served(args, source, target, pool, bar, say)
        with Mirror(source, target, copy_mode=args.copy_mode, speed=args.speed,
                    granularity=args.granularity, auto_converge=args.auto_converge,
                    not_converging_window=args.not_converging_window) as m:
            guest = Guest(m, args.size, args.rate, args.block, args.seed + 1, pool)
            guest.start()
            phase(f"guest writing {_mib(args.rate)}/s in {args.block // 1024} KiB blocks "
                  f"(hot-spot), copy mode {args.copy_mode}"
                  f"{', auto-converge' if args.auto_converge else ''}")
            # A guest that dirties faster than the copy keeps a background job from ever
            # being ready: the time limit ends such a run instead of letting it spin.
            give_up = time.monotonic() + args.time_limit
            while True:
                try:
                    m.wait_ready(0.1)  # raises at once if the job ended instead
                    ready = True
                except Timeout:
                    ready = False
                if bar is not None:
                    current, total = m.progress
                    bar.update(current, total)
                    bar.set_status(m.status)
                if ready:
                    break
                if time.monotonic() >= give_up:
                    guest.stop_event.set()
                    guest.join()
                    if bar is not None:
                        bar.close()
                    current, total = m.progress
                    print(f"blockmirror demo: not ready after {args.time_limit:g} s ({_mib(total - current)} "
                          f"still to copy, copy mode {m.stats()['copy_mode']}); a guest that dirties the "
                          f"disk as fast as it is copied keeps a background mirror from converging: try "
                          f"--auto-converge, --copy-mode write-blocking, a higher --speed or a lower --rate",
                          file=err)
                    return 1
            phase("now in mirroring phase: the target is in sync and kept in sync")
            in_sync_until = time.monotonic() + args.in_sync_seconds
            while time.monotonic() < in_sync_until:
                time.sleep(0.1)
                if bar is not None:
                    current, total = m.progress
                    bar.update(current, total)
            phase("completing: quiesce the guest, copy what is dirty, flush, pivot")
            guest.log_writes.set()
            result = m.complete()
            guest.stop_event.set()
            guest.join()
            if bar is not None:
                bar.update(result.bytes_copied, result.bytes_copied, done=True)
                bar.set_status(result.status)
                bar.close()
            if guest.error is not None:
                raise guest.error
            say("pivoted: the guest now writes to the target")
        # The source lacks the guest's writes after the pivot; replay the ones made since
        # complete() was called (in order, one writer thread) to get "the source as the
        # guest last wrote it".
        guest.replay_log(source)
        same = files_equal(source, target)
        src_alloc = os.stat(source).st_blocks * 512
        dst_alloc = os.stat(target).st_blocks * 512
        ready_s = result.seconds_to_ready or result.seconds
        # The bulk copy's rate: what the sync mode selected, over the time to ready (the job
        # then stays in sync for --in-sync-seconds before completing).
        rate = result.initial_bytes / (1 << 20) / ready_s if ready_s > 0 else 0.0
        print(f"{'verified: target == source' if same else 'MISMATCH: target != source'}", file=err)
        print(
            f"summary: {_mib(args.size)} image, {_mib(result.initial_bytes)} to copy, ready after "
            f"{ready_s:.2f} s ({rate:.0f} MiB/s), completed after {result.seconds:.2f} s; "
            f"{_mib(result.bytes_copied)} copied in all, {_mib(result.recopied_bytes)} re-copied, "
            f"{_mib(guest.bytes_written)} written by the guest, "
            f"{_mib(result.bytes_zeroed)} zeroed; allocated: source {_mib(src_alloc)}, "
            f"target {_mib(dst_alloc)}",
            file=err,
        )
        return 0 if same else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
