#!/usr/bin/env python3
"""`blockmirror serve` against qemu-storage-daemon: the same raw file exported over NBD by
each, driven by the same fio jobs and the same QMP commands, the two servers alternating
within every repetition (ABBA...), so machine noise hits them alike. Compare the paired
ratios (blockmirror / QEMU), not the bare figures: this machine's disk and CPU are shared.

Sub-benchmarks (any combination; all four when none is named):
  --fio     fio's nbd engine, random writes (4 KiB and 64 KiB, iodepth 1 and 16) on a 1 GiB
            raw file: idle, while a ready mirror runs in background mode, and in
            write-blocking mode. IOPS, p50/p99 completion latency, server CPU per I/O by
            thread group (/proc/PID/task/*/stat).
  --ready   time from drive-mirror to BLOCK_JOB_READY with a speed limit while fio writes
            at fractions of that speed, both copy modes; "not ready" past a bound.
  --memory  VmRSS / VmHWM of the server process on a 1 TiB sparse file with 16 fio
            clients doing I/O: idle, and while mirroring (speed-limited, then cancelled).
  --bitmap  what `serve --bitmap` (the crash-safe bitmap file) costs fio's 4 KiB random writes
            on a dense 1 GiB and a sparse 8 GiB disk, ready mirror in both copy modes and
            idle with a file left behind, with/without alternating (bench_serve_bitmap.py).
  --quick   tiny sizes and one repetition: seconds, to keep the script working.

Usage (from the repository root, the release extension installed in .venv):
    .venv/bin/python benches/bench_serve.py --fio --reps 5 --runtime 5 --dir /var/tmp/bm-serve
    .venv/bin/python benches/bench_serve.py --ready --reps 3 --dir /var/tmp/bm-serve
    .venv/bin/python benches/bench_serve.py --memory --dir /var/tmp/bm-serve
    .venv/bin/python benches/bench_serve.py --bitmap --reps 3 --runtime 5 --dir /var/tmp/bm-serve
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from qemu.qmp.legacy import QEMUMonitorProtocol
from qemu.qmp.protocol import ConnectError

from proc_stats import RssSampler, context_switches, cpu_delta, memory_kib, process_cpu, thread_cpu

MiB = 1 << 20
EXPORT = "disk"
SERVERS = ("blockmirror", "qemu-storage-daemon")


# ---------------------------------------------------------------------------------------
# The two servers behind one interface

@dataclass
class Server:
    """A running server of one disk: its process, NBD URI and a negotiated QMP session."""

    kind: str
    proc: subprocess.Popen
    uri: str
    qmp: QEMUMonitorProtocol


def _wait_for(paths: List[str], proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {out}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no sockets after {timeout} s")
        time.sleep(0.01)


def _server_command(kind: str, image: str, nbd: str, qmp: str, python: str, bitmap: Optional[str]) -> List[str]:
    if kind == "blockmirror":
        return [python, "-m", "blockmirror", "serve", image, "--socket", nbd, "--qmp", qmp, "--export", EXPORT,
                *(["--bitmap", bitmap] if bitmap else [])]
    # QEMU's defaults for a file node: page cache, aio=threads (its worker-thread pool).
    return ["qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image}",
            "--blockdev", f"driver=raw,node-name={EXPORT},file=file0",
            "--nbd-server", f"addr.type=unix,addr.path={nbd}",
            "--export", f"type=nbd,id=exp0,node-name={EXPORT},name={EXPORT},writable=on",
            "--chardev", f"socket,path={qmp},server=on,wait=off,id=mon0",
            "--monitor", "chardev=mon0"]


@contextlib.contextmanager
def serving(kind: str, image: str, workdir: str, python: str, bitmap: Optional[str] = None) -> Iterator[Server]:
    """A server of ``image``; ``bitmap``: blockmirror's jobs keep their bitmap file there."""
    tag = "bm" if kind == "blockmirror" else "qsd"
    nbd, qmp_path = os.path.join(workdir, f"{tag}-nbd.sock"), os.path.join(workdir, f"{tag}-qmp.sock")
    for p in (nbd, qmp_path):
        if os.path.exists(p):
            os.remove(p)
    proc = subprocess.Popen(_server_command(kind, image, nbd, qmp_path, python, bitmap), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    qmp = None
    try:
        _wait_for([nbd, qmp_path], proc, kind)
        qmp = QEMUMonitorProtocol(qmp_path)
        for attempt in range(100):  # the socket file appears at bind(), before listen()
            try:
                qmp.connect(negotiate=True)
                break
            except (OSError, ConnectError):  # qemu.qmp wraps the refusal in its ConnectError
                if attempt == 99:
                    raise
                time.sleep(0.02)
                qmp = QEMUMonitorProtocol(qmp_path)
        qmp.settimeout(120)
        yield Server(kind, proc, f"nbd+unix:///{EXPORT}?socket={nbd}", qmp)
    finally:
        if qmp is not None:
            with contextlib.suppress(Exception):
                qmp.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def next_event(qmp: QEMUMonitorProtocol, name: str, timeout: float) -> Optional[Dict[str, Any]]:
    """The next event called ``name``, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            event = qmp.pull_event(wait=left)
        except TimeoutError:  # the client's way of saying that no event came in time
            return None
        if event is not None and event["event"] == name:
            return event


def start_mirror(server: Server, target: str, mode: str, speed: int = 0) -> None:
    if os.path.exists(target):
        os.remove(target)
    args: Dict[str, Any] = {"job-id": "job0", "device": EXPORT, "target": target, "sync": "full",
                            "format": "raw", "copy-mode": mode}
    if speed:
        args["speed"] = speed
    server.qmp.cmd("drive-mirror", **args)


def cancel_mirror(server: Server) -> None:
    if server.qmp.cmd("query-block-jobs"):
        server.qmp.cmd("block-job-cancel", device="job0", force=True)
        if next_event(server.qmp, "BLOCK_JOB_CANCELLED", 120) is None:
            raise RuntimeError(f"{server.kind}: the job was not cancelled within 120 s")


# ---------------------------------------------------------------------------------------
# Machine load

def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------
# fio

def fio_command(uri: str, *, bs: str, iodepth: int, size: str, runtime: float, rw: str = "randwrite",
                numjobs: int = 1, rate: Optional[str] = None, extra: Optional[List[str]] = None) -> List[str]:
    args = ["fio", "--name=guest", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={iodepth}", f"--size={size}", "--direct=0", "--time_based", f"--runtime={int(runtime * 1000)}ms",
            f"--numjobs={numjobs}", "--group_reporting", "--output-format=json", "--randrepeat=0"]
    if rate:
        args.append(f"--rate={rate}")
    return args + (extra or [])


def fio_result(stdout: str) -> Dict[str, Any]:
    """The JSON document of fio's output (anything fio prints before it is skipped)."""
    start = stdout.find("{")
    if start < 0:
        raise RuntimeError(f"fio printed no JSON: {stdout[-2000:]}")
    return json.loads(stdout[start:])


def run_fio(cmd: List[str], timeout: float) -> Dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed ({out.returncode}): {out.stderr[-2000:]} {out.stdout[-2000:]}")
    return fio_result(out.stdout)


def write_figures(doc: Dict[str, Any]) -> Dict[str, float]:
    w = doc["jobs"][0]["write"]
    pct = w["clat_ns"].get("percentile", {})
    job = doc["jobs"][0]
    return {"iops": w["iops"], "p50_us": pct.get("50.000000", 0) / 1e3, "p99_us": pct.get("99.000000", 0) / 1e3,
            "p999_us": pct.get("99.900000", 0) / 1e3, "mean_us": w["clat_ns"]["mean"] / 1e3,
            "ios": w["total_ios"], "bw_mib": w["bw_bytes"] / MiB,
            "fio_cpu_pct": job["usr_cpu"] + job["sys_cpu"]}


def make_random_image(path: str, size: int) -> None:
    """A raw image of pseudo-random data (fully allocated: the mirror copies all of it)."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    rng = random.Random(7)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))
    subprocess.run(["sync"], check=True)


def settle(args: argparse.Namespace) -> None:
    """Writes back dirty pages before a run (untimed), so one run's writeback does not land
    in the next; skipped in quick mode."""
    if not args.quick:
        subprocess.run(["sync"], check=True)


def order(rep: int, index: int) -> Tuple[str, ...]:
    """The servers' order for one pair: alternating with repetition and configuration."""
    return SERVERS if (rep + index) % 2 == 0 else SERVERS[::-1]


# ---------------------------------------------------------------------------------------
# Sub-benchmark 1: fio through the export

def bench_fio(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    image, target = os.path.join(args.dir, "fio-src.img"), os.path.join(args.dir, "fio-dst.img")
    make_random_image(image, args.fio_size_mib * MiB)
    configs = [(bs, qd, state) for bs in args.bs.split(",") for qd in map(int, args.iodepth.split(","))
               for state in args.states.split(",")]
    runs: List[Dict[str, Any]] = []
    loads = [f"before: {load()}"]
    for rep in range(args.reps):
        for index, (bs, qd, state) in enumerate(configs):
            for kind in order(rep, index):
                settle(args)
                with serving(kind, image, args.dir, args.python) as server:
                    if state != "idle":
                        t = time.monotonic()
                        start_mirror(server, target, state)
                        if next_event(server.qmp, "BLOCK_JOB_READY", 300) is None:
                            raise RuntimeError(f"{kind}: the mirror was not ready in 300 s")
                        ready_s = time.monotonic() - t
                    cpu0, total0 = thread_cpu(server.proc.pid), process_cpu(server.proc.pid)
                    switches0 = context_switches(server.proc.pid)
                    doc = run_fio(fio_command(server.uri, bs=bs, iodepth=qd, size=f"{args.fio_size_mib}M",
                                              runtime=args.runtime), timeout=args.runtime + 120)
                    cpu = cpu_delta(cpu0, thread_cpu(server.proc.pid))
                    total_cpu = process_cpu(server.proc.pid) - total0
                    switches = [b - a for a, b in zip(switches0, context_switches(server.proc.pid))]
                    if state != "idle":
                        cancel_mirror(server)
                figures = write_figures(doc)
                row = {"rep": rep, "bs": bs, "iodepth": qd, "state": state, "server": kind, **figures,
                       "server_cpu_s": cpu, "server_cpu_us_per_io": total_cpu / max(1, figures["ios"]) * 1e6,
                       "voluntary_switches_per_io": switches[0] / max(1, figures["ios"]),
                       "involuntary_switches_per_io": switches[1] / max(1, figures["ios"])}
                if state != "idle":
                    row["mirror_ready_s"] = ready_s
                runs.append(row)
                log(f"rep {rep + 1} {bs} qd{qd} {state:14} {kind:20} {figures['iops']:8.0f} IOPS "
                    f"p50 {figures['p50_us']:7.1f} us p99 {figures['p99_us']:8.1f} us "
                    f"cpu/io {row['server_cpu_us_per_io']:5.1f} us  load {load()}")
                if os.path.exists(target):
                    os.remove(target)
    loads.append(f"after: {load()}")
    header = (f"fio, random writes, {args.fio_size_mib} MiB raw file, {args.runtime} s per run, "
              f"{args.reps} pairs per row; load {loads[0]}, {loads[1]}")
    table = report_fio(runs, header)
    return {"runs": runs, "table": table, "load": loads}


def report_fio(runs: List[Dict[str, Any]], header: str) -> List[Dict[str, Any]]:
    """Prints the fio table (medians, min/med/max, medians of paired ratios) and the server
    CPU per I/O by thread group; returns the ratio rows."""
    configs = list(dict.fromkeys((r["bs"], r["iodepth"], r["state"]) for r in runs))
    print("\n" + header)
    print(f"{'bs':>4} {'qd':>3} {'state':14} | {'blockmirror IOPS min/med/max':>30} | "
          f"{'QEMU IOPS min/med/max':>24} | {'IOPS ratio':>10} | {'p50 bm/q us':>13} | {'p99 bm/q us':>15} | "
          f"{'p99 ratio':>9} | {'cpu us/io bm/q':>14}")
    table = []
    for bs, qd, state in configs:
        def sel(kind: str) -> List[Dict[str, Any]]:
            return [r for r in runs if (r["bs"], r["iodepth"], r["state"], r["server"]) == (bs, qd, state, kind)]
        bm, q = sel("blockmirror"), sel("qemu-storage-daemon")
        pairs = list(zip(sorted(bm, key=lambda r: r["rep"]), sorted(q, key=lambda r: r["rep"])))
        iops_ratio = statistics.median(a["iops"] / b["iops"] for a, b in pairs)
        p99_ratio = statistics.median(a["p99_us"] / b["p99_us"] for a, b in pairs if b["p99_us"])
        med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
        mm = lambda rows, k: f"{min(r[k] for r in rows):.0f}/{med(rows, k):.0f}/{max(r[k] for r in rows):.0f}"  # noqa: E731
        print(f"{bs:>4} {qd:>3} {state:14} | {mm(bm, 'iops'):>30} | {mm(q, 'iops'):>24} | {iops_ratio:9.2f}x | "
              f"{med(bm, 'p50_us'):6.0f}/{med(q, 'p50_us'):<6.0f} | {med(bm, 'p99_us'):7.0f}/{med(q, 'p99_us'):<7.0f} | "
              f"{p99_ratio:8.2f}x | {med(bm, 'server_cpu_us_per_io'):6.1f}/{med(q, 'server_cpu_us_per_io'):<6.1f}")
        table.append({"bs": bs, "iodepth": qd, "state": state, "iops_ratio": iops_ratio, "p99_ratio": p99_ratio})
    print("\nserver CPU per I/O by thread group, us (median over the runs; groups under 1 us left out)")
    for bs, qd, state in configs:
        for kind in SERVERS:
            rows = [r for r in runs if (r["bs"], r["iodepth"], r["state"], r["server"]) == (bs, qd, state, kind)]
            groups = sorted({g for r in rows for g in r["server_cpu_s"]})
            per_io = {g: statistics.median(r["server_cpu_s"].get(g, 0.0) / max(1, r["ios"]) * 1e6 for r in rows)
                      for g in groups}
            shown = ", ".join(f"{g} {v:.1f}" for g, v in sorted(per_io.items(), key=lambda kv: -kv[1]) if v >= 1)
            fio_cpu = statistics.median(r["fio_cpu_pct"] for r in rows)
            switches = ""
            if rows and "voluntary_switches_per_io" in rows[0]:
                switches = (f"; context switches per I/O: voluntary "
                            f"{statistics.median(r['voluntary_switches_per_io'] for r in rows):.2f}, involuntary "
                            f"{statistics.median(r['involuntary_switches_per_io'] for r in rows):.3f}")
            print(f"{bs:>4} qd{qd:<3} {state:14} {kind:20} {shown}  (fio itself {fio_cpu:.0f} % CPU){switches}")
    return table


# ---------------------------------------------------------------------------------------
# Sub-benchmark 2: time to ready under a writing guest

def bench_ready(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    image, target = os.path.join(args.dir, "ready-src.img"), os.path.join(args.dir, "ready-dst.img")
    size = args.ready_size_mib * MiB
    make_random_image(image, size)
    speed = args.speed_mib * MiB
    fractions = [float(x) for x in args.fractions.split(",")]
    configs = [(mode, frac) for mode in args.modes.split(",") for frac in fractions]
    runs: List[Dict[str, Any]] = []
    loads = [f"before: {load()}"]
    for rep in range(args.reps):
        for index, (mode, frac) in enumerate(configs):
            for kind in order(rep, index):
                settle(args)
                rate_kib = int(frac * args.speed_mib * 1024)
                with serving(kind, image, args.dir, args.python) as server:
                    fio = subprocess.Popen(
                        fio_command(server.uri, bs="64k", iodepth=4, size=f"{args.ready_size_mib}M",
                                    runtime=args.ready_bound + 60, rate=f"{rate_kib}k"),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    try:
                        # fio connects and starts writing: a fixed warm-up, so the copy starts
                        # against a guest already at its rate.
                        time.sleep(args.warmup)
                        if fio.poll() is not None:
                            raise RuntimeError(f"fio ended early: {fio.stderr.read() if fio.stderr else ''}")
                        t = time.monotonic()
                        start_mirror(server, target, mode, speed)
                        ready = next_event(server.qmp, "BLOCK_JOB_READY", args.ready_bound)
                        elapsed = time.monotonic() - t if ready else None
                        jobs = server.qmp.cmd("query-block-jobs")
                        progress = (jobs[0]["offset"], jobs[0]["len"]) if jobs else (0, 0)
                    finally:
                        fio.send_signal(signal.SIGINT)
                        out, err = fio.communicate(timeout=120)
                    cancel_mirror(server)
                guest = fio_result(out)["jobs"][0]["write"]["bw_bytes"] / MiB if "{" in out else float("nan")
                row = {"rep": rep, "mode": mode, "fraction": frac, "server": kind, "ready_s": elapsed,
                       "offset": progress[0], "len": progress[1], "guest_mib_s": guest}
                runs.append(row)
                shown = f"{elapsed:6.2f} s" if elapsed is not None else f"not ready in {args.ready_bound} s"
                log(f"rep {rep + 1} {mode:14} guest {frac:4}x {kind:20} {shown:22} guest {guest:6.1f} MiB/s "
                    f"progress {progress[0] / MiB:.0f}/{progress[1] / MiB:.0f} MiB  load {load()}")
                if os.path.exists(target):
                    os.remove(target)
    loads.append(f"after: {load()}")
    print(f"\ntime to ready, {args.ready_size_mib} MiB image, speed {args.speed_mib} MiB/s, guest 64 KiB random "
          f"writes at the fraction of the speed, bound {args.ready_bound} s, {args.reps} pairs per row; "
          f"load {loads[0]}, {loads[1]}")
    print(f"{'mode':14} {'guest':>6} | {'blockmirror s min/med/max (ready)':>36} | {'QEMU s min/med/max (ready)':>30} | "
          f"{'ratio':>6} | guest MiB/s bm/q")
    table = []
    for mode, frac in configs:
        def sel(kind: str) -> List[Dict[str, Any]]:
            return sorted((r for r in runs if (r["mode"], r["fraction"], r["server"]) == (mode, frac, kind)),
                          key=lambda r: r["rep"])
        bm, q = sel("blockmirror"), sel("qemu-storage-daemon")

        def show(rows: List[Dict[str, Any]]) -> str:
            done = [r["ready_s"] for r in rows if r["ready_s"] is not None]
            if not done:
                return f"not ready (0/{len(rows)})"
            return f"{min(done):.2f}/{statistics.median(done):.2f}/{max(done):.2f} ({len(done)}/{len(rows)})"
        ratios = [a["ready_s"] / b["ready_s"] for a, b in zip(bm, q) if a["ready_s"] and b["ready_s"]]
        ratio = f"{statistics.median(ratios):5.2f}x" if ratios else "   n/a"
        guest = (f"{statistics.median(r['guest_mib_s'] for r in bm):.1f}/"
                 f"{statistics.median(r['guest_mib_s'] for r in q):.1f}")
        print(f"{mode:14} {frac:5}x | {show(bm):>36} | {show(q):>30} | {ratio} | {guest}")
        table.append({"mode": mode, "fraction": frac, "blockmirror": show(bm), "qemu": show(q),
                      "ratio": statistics.median(ratios) if ratios else None})
    return {"runs": runs, "table": table, "load": loads}


# ---------------------------------------------------------------------------------------
# Sub-benchmark 3: memory with 16 clients on a 1 TiB sparse disk

def bench_memory(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    image, target = os.path.join(args.dir, "mem-src.img"), os.path.join(args.dir, "mem-dst.img")
    phases = [("idle", "64k", None), ("background", "64k", "background"),
              ("write-blocking", "64k", "write-blocking"), ("idle, 4 MiB writes", "4m", None)]
    if args.quick:
        phases = phases[:2]
    results: List[Dict[str, Any]] = []
    loads = [f"before: {load()}"]
    kinds = SERVERS if not args.memory_blockmirror_only else SERVERS[:1]
    for kind in kinds:
        for name, bs, mode in phases:
            for path in (image, target):
                if os.path.exists(path):
                    os.remove(path)
            with open(image, "wb") as f:
                f.truncate(args.memory_size_gib << 30)
            with serving(kind, image, args.dir, args.python) as server:
                pid = server.proc.pid
                start_rss = memory_kib(pid)[0]
                if mode:
                    start_mirror(server, target, mode, args.speed_mib * MiB)
                threads = len(os.listdir(f"/proc/{pid}/task"))
                with RssSampler(pid) as sampler:
                    rw = "randwrite" if bs == "4m" else "randrw"
                    doc = run_fio(fio_command(server.uri, bs=bs, iodepth=16, size=f"{args.memory_io_gib}G",
                                              runtime=args.memory_runtime, rw=rw, numjobs=args.clients),
                                  timeout=args.memory_runtime + 120)
                    during_threads = threads
                jobs = server.qmp.cmd("query-block-jobs")
                copied = jobs[0]["offset"] if jobs else 0
                rss, hwm = memory_kib(pid)
                if mode:
                    cancel_mirror(server)
            job = doc["jobs"][0]
            row = {"server": kind, "phase": name, "bs": bs, "clients": args.clients, "start_rss_mib": start_rss / 1024,
                   "peak_rss_mib": sampler.peak / 1024, "hwm_mib": hwm / 1024, "end_rss_mib": rss / 1024,
                   "threads_at_start": during_threads, "mirror_copied_mib": copied / MiB,
                   "guest_mib_s": (job["write"]["bw_bytes"] + job["read"]["bw_bytes"]) / MiB}
            results.append(row)
            log(f"{kind:20} {name:20} VmHWM {row['hwm_mib']:7.1f} MiB (sampled peak {row['peak_rss_mib']:.1f}, "
                f"start {row['start_rss_mib']:.1f}) guest {row['guest_mib_s']:.0f} MiB/s, copied "
                f"{row['mirror_copied_mib']:.0f} MiB  load {load()}")
    for path in (image, target):
        if os.path.exists(path):
            os.remove(path)
    loads.append(f"after: {load()}")
    print(f"\nmemory, {args.memory_size_gib} GiB sparse raw file (I/O in its first {args.memory_io_gib} GiB), "
          f"{args.clients} fio nbd clients at iodepth 16 "
          f"for {args.memory_runtime} s (64k: 50/50 random read/write; 4m: random writes), mirror speed "
          f"{args.speed_mib} MiB/s; load {loads[0]}, {loads[1]}")
    print(f"{'server':20} {'phase':20} | {'start MiB':>9} | {'VmHWM MiB':>9} | {'sampled peak':>12} | {'guest MiB/s':>11}")
    for r in results:
        print(f"{r['server']:20} {r['phase']:20} | {r['start_rss_mib']:9.1f} | {r['hwm_mib']:9.1f} | "
              f"{r['peak_rss_mib']:12.1f} | {r['guest_mib_s']:11.0f}")
    return {"runs": results, "load": loads}


# ---------------------------------------------------------------------------------------

def main() -> int:
    # Imported here: it imports this script's helpers (as the module bench_serve), which
    # must not happen while this file is itself being loaded as that module.
    import bench_serve_bitmap

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fio", action="store_true", help="sub-benchmark 1: fio IOPS and latency")
    p.add_argument("--ready", action="store_true", help="sub-benchmark 2: time to ready under a guest")
    p.add_argument("--memory", action="store_true", help="sub-benchmark 3: RSS with 16 clients, 1 TiB disk")
    p.add_argument("--bitmap", action="store_true", help="sub-benchmark 4: the bitmap file's cost to guest writes")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (seconds)")
    p.add_argument("--dir", default="/var/tmp/blockmirror-serve-bench")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `-m blockmirror serve`")
    p.add_argument("--reps", type=int, default=3, help="pairs per configuration")
    p.add_argument("--json", help="write every run here")
    p.add_argument("--report", metavar="JSON", help="print the fio tables of a --json file again, and stop")
    g = p.add_argument_group("fio")
    g.add_argument("--fio-size-mib", type=int, default=1024)
    g.add_argument("--runtime", type=float, default=5.0, help="seconds of fio per run")
    g.add_argument("--bs", default="4k,64k")
    g.add_argument("--iodepth", default="1,16")
    g.add_argument("--states", default="idle,background,write-blocking")
    g = p.add_argument_group("time to ready")
    g.add_argument("--ready-size-mib", type=int, default=256)
    g.add_argument("--speed-mib", type=int, default=64, help="drive-mirror speed limit, MiB/s")
    g.add_argument("--fractions", default="0.25,0.5,1,2", help="guest write rate / copy speed")
    g.add_argument("--modes", default="background,write-blocking")
    g.add_argument("--ready-bound", type=float, default=20.0, help="seconds; later counts as not ready")
    g.add_argument("--warmup", type=float, default=1.0, help="seconds of guest writes before drive-mirror")
    g = p.add_argument_group("memory")
    g.add_argument("--memory-size-gib", type=int, default=1024)
    g.add_argument("--memory-io-gib", type=int, default=8,
                   help="the clients' I/O stays in this many first GiB of the disk: scattered writes over the whole "
                        "terabyte leave a file whose unlink takes minutes on a filesystem mounted with discard")
    g.add_argument("--clients", type=int, default=16)
    g.add_argument("--memory-runtime", type=float, default=5.0)
    g.add_argument("--memory-blockmirror-only", action="store_true")
    bench_serve_bitmap.add_arguments(p)
    args = p.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        if "fio" in saved:
            report_fio(saved["fio"]["runs"], " ".join(saved["argv"]) + "; load " + ", ".join(saved["fio"]["load"]))
        bench_serve_bitmap.report_saved(saved)
        return 0
    if not (args.fio or args.ready or args.memory or args.bitmap):
        args.fio = args.ready = args.memory = args.bitmap = True
    if args.quick:
        args.reps, args.fio_size_mib, args.runtime = 1, 16, 0.5
        args.bs, args.iodepth, args.states = "4k", "16", "idle,write-blocking"
        args.ready_size_mib, args.fractions, args.modes, args.ready_bound, args.warmup = 16, "0.5", "write-blocking", 10.0, 0.2
        args.memory_size_gib, args.memory_io_gib, args.clients, args.memory_runtime = 16, 1, 4, 0.5
        bench_serve_bitmap.quick(args)
    for tool in ("fio", "qemu-storage-daemon"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    os.makedirs(args.dir, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
    print(f"machine: {os.uname().sysname} {os.uname().release} {os.uname().machine}, {os.cpu_count()} cores; "
          f"load at start {load()}")
    results: Dict[str, Any] = {"argv": sys.argv}
    if args.fio:
        results["fio"] = bench_fio(args, log)
    if args.ready:
        results["ready"] = bench_ready(args, log)
    if args.memory:
        results["memory"] = bench_memory(args, log)
    if args.bitmap:
        results["bitmap"] = bench_serve_bitmap.bench_bitmap(args, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
