#!/usr/bin/env python3
"""Copy onto an NBD export: a raw file of random data mirrored onto a qemu-nbd export over a
Unix socket by four programs, alternating within every repetition, each onto a fresh
target (a new sparse file of the same size behind a new qemu-nbd), `sync` before each:

  blockmirror  blockmirror.mirror(SRC, "nbd+unix:///exp?socket=SOCK") in this process
  QEMU         qemu-storage-daemon: blockdev-add of an nbd node, blockdev-mirror sync=full,
               block-job-complete at READY; timed from the blockdev-add to
               BLOCK_JOB_COMPLETED (the daemon starts before the clock)
  nbdcopy      nbdcopy --flush SRC URI (--flush: the others all flush the target at the end)
  qemu-img     qemu-img convert -n -f raw -O raw SRC URI

Every run ends with the target's data on the export and flushed. Prints MiB/s min, median
and max per program, the median of the per-repetition ratios to QEMU and to nbdcopy, the
CPU seconds of each program and of qemu-nbd while serving it, and the load average before
each repetition (this machine may be shared). The source stays in the page cache (written
just before; 24 GiB of RAM): what is compared is the copy onto the export, not the
source's disk.

`--cache unsafe` serves with `qemu-nbd --cache=unsafe` (flushes do nothing): the copy
pipeline without the target's disk. `--trace-requests` instead runs each program once with
qemu-nbd tracing its requests and prints what arrived on the wire: request sizes, how many
were in flight at the server, and blockmirror's CPU seconds per thread (sampled from
/proc while it runs).

Usage (from the repository root, with a release build installed in .venv):
    .venv/bin/python benches/bench_nbd_target.py --size-mib 1024 --reps 3 --dir /var/tmp/bm-nbd
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

MiB = 1 << 20
PROGRAMS = ("blockmirror", "QEMU", "nbdcopy", "qemu-img")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    user, system, _ = proc_usage(pid)
    return user + system


def proc_usage(pid: int) -> Tuple[float, float, int]:
    """User and system CPU seconds and minor page faults of a live process (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, int(fields[7])


# What a run cost its program: user and system CPU seconds, minor page faults.
Usage = Tuple[float, float, int]


def wait_for_socket(path: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {path}")
        time.sleep(0.01)


class Export:
    """A fresh sparse target of `size` bytes behind `qemu-nbd -f raw -x exp -k SOCK`, with
    `-t` (persistent) so that the probe that waits for it to listen does not end it."""

    def __init__(self, workdir: str, size: int, cache: str = "writeback", trace: Optional[str] = None) -> None:
        self.image = os.path.join(workdir, "target.img")
        self.sock = os.path.join(workdir, "nbd.sock")
        for path in (self.image, self.sock):
            if os.path.exists(path):
                os.remove(path)
        with open(self.image, "wb") as f:
            f.truncate(size)
        tracing = []
        if trace is not None:
            for event in TRACE_EVENTS:
                tracing += ["--trace", event]
        self.trace_file = open(trace, "wb") if trace is not None else None
        self.proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-x", "exp", "-k", self.sock, "-t",
                                      f"--cache={cache}", *tracing, self.image],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.trace_file or subprocess.DEVNULL)
        wait_for_socket(self.sock, self.proc, "qemu-nbd")
        self.uri = f"nbd+unix:///exp?socket={self.sock}"
        self.cpu_start = proc_cpu(self.proc.pid)

    def stop(self) -> float:
        """Ends the server; returns the CPU seconds it spent since the start."""
        cpu = proc_cpu(self.proc.pid) - self.cpu_start
        self.proc.terminate()
        self.proc.wait(timeout=60)
        if self.trace_file is not None:
            self.trace_file.close()
        return cpu


TRACE_EVENTS = ("nbd_co_receive_request_decode_type", "nbd_co_receive_request_payload_received",
                "nbd_co_send_simple_reply", "nbd_co_send_chunk_done")


def summarize_trace(path: str) -> str:
    """Requests by type, write payload sizes, and requests in flight at the server (received,
    not yet answered) as each request arrived."""
    kinds: Counter = Counter()
    sizes: Counter = Counter()
    outstanding = set()
    in_flight: List[int] = []
    with open(path, errors="replace") as f:
        for line in f:
            if "Decoding type:" in line:
                cookie = line.split("cookie = ", 1)[1].split(",", 1)[0]
                kinds[line.rsplit("(", 1)[1].rstrip(")\n")] += 1
                outstanding.add(cookie)
                in_flight.append(len(outstanding))
            elif "Payload received:" in line:
                sizes[int(line.rsplit("len = ", 1)[1])] += 1
            elif "reply" in line or "chunk" in line:
                if "cookie = " in line:
                    outstanding.discard(line.split("cookie = ", 1)[1].split(",", 1)[0])
    common = ", ".join(f"{size // 1024} KiB x{n}" for size, n in sizes.most_common(3))
    return (f"requests {dict(kinds)}; write payloads: {common}; in flight at arrival: "
            f"median {statistics.median(in_flight) if in_flight else 0}, max {max(in_flight, default=0)}")


class ThreadCpu:
    """Samples this process's threads' CPU seconds from /proc every 50 ms, keeping each
    thread's last value (a thread's counter is gone once it exits)."""

    def __init__(self) -> None:
        self.last: Dict[str, Tuple[str, float]] = {}
        self.before = self.read()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def read() -> Dict[str, Tuple[str, float]]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    head, tail = f.read().rsplit(")", 1)
                fields = tail.split()
                out[tid] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK)
            except OSError:
                pass
        return out

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.last.update(self.read())

    def finish(self) -> str:
        self.stop.set()
        self.thread.join()
        by_name: Counter = Counter()
        for tid, (name, cpu) in self.last.items():
            by_name[name] += cpu - self.before.get(tid, (name, 0.0))[1]
        return ", ".join(f"{name} {cpu:.2f} s" for name, cpu in by_name.most_common() if cpu > 0.005)


def run_blockmirror(src: str, uri: str, workdir: str) -> Tuple[float, Usage]:
    import blockmirror

    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    blockmirror.mirror(src, uri)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    return elapsed, (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                     after.ru_minflt - before.ru_minflt)


def run_child(args: List[str]) -> Tuple[float, Usage]:
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err}")
    return elapsed, (usage.ru_utime, usage.ru_stime, usage.ru_minflt)


def run_nbdcopy(src: str, uri: str, workdir: str) -> Tuple[float, Usage]:
    return run_child(["nbdcopy", "--flush", src, uri])


def run_qemu_img(src: str, uri: str, workdir: str) -> Tuple[float, Usage]:
    return run_child(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri])


def run_qemu(src: str, uri: str, workdir: str) -> Tuple[float, Usage]:
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qmp_sock = os.path.join(workdir, "qsd-qmp.sock")
    if os.path.exists(qmp_sock):
        os.remove(qmp_sock)
    nbd_sock = uri.split("socket=", 1)[1]
    proc = subprocess.Popen(
        ["qemu-storage-daemon",
         "--blockdev", f"driver=file,filename={src},node-name=src-file,cache.direct=off",
         "--blockdev", "driver=raw,file=src-file,node-name=src",
         "--chardev", f"socket,id=mon,path={qmp_sock},server=on,wait=off",
         "--monitor", "chardev=mon"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_socket(qmp_sock, proc, "qemu-storage-daemon")
        qmp = QEMUMonitorProtocol(qmp_sock)
        qmp.connect()
        start = proc_usage(proc.pid)
        t = time.perf_counter()
        qmp.cmd("blockdev-add", **{"driver": "raw", "node-name": "tgt",
                                   "file": {"driver": "nbd", "export": "exp",
                                            "server": {"type": "unix", "path": nbd_sock}}})
        qmp.cmd("blockdev-mirror", **{"job-id": "m", "device": "src", "target": "tgt", "sync": "full"})
        done = False
        while not done:
            event = qmp.pull_event(wait=True)
            name = event["event"] if event else None
            if name == "BLOCK_JOB_READY":
                qmp.cmd("block-job-complete", device="m")
            elif name == "BLOCK_JOB_COMPLETED":
                if event["data"].get("error"):
                    raise RuntimeError(f"QEMU mirror failed: {event['data']['error']}")
                done = True
        elapsed = time.perf_counter() - t
        end = proc_usage(proc.pid)
        used = (end[0] - start[0], end[1] - start[1], end[2] - start[2])
        qmp.cmd("blockdev-del", **{"node-name": "tgt"})  # disconnects from qemu-nbd
        qmp.close()
        return elapsed, used
    finally:
        proc.terminate()
        proc.wait(timeout=60)


RUNNERS: Dict[str, Callable[[str, str, str], Tuple[float, Usage]]] = {
    "blockmirror": run_blockmirror,
    "QEMU": run_qemu,
    "nbdcopy": run_nbdcopy,
    "qemu-img": run_qemu_img,
}


def make_source(path: str, size_mib: int) -> None:
    rng = random.Random(5)
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(rng.randbytes(MiB))


def same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", default="/var/tmp/blockmirror-nbd-bench")
    p.add_argument("--verify", action="store_true", help="compare the target with the source after every run")
    p.add_argument("--cache", default="writeback", help="qemu-nbd --cache mode (unsafe: flushes do nothing)")
    p.add_argument("--trace-requests", action="store_true", help="one traced run per program: what the wire carried")
    args = p.parse_args()
    for tool in ("qemu-nbd", "qemu-storage-daemon", "nbdcopy", "qemu-img"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "src.img")
    size = args.size_mib * MiB
    if not (os.path.exists(src) and os.path.getsize(src) == size):
        make_source(src, args.size_mib)
    if args.trace_requests:
        for name in PROGRAMS:
            subprocess.run(["sync"], check=True)
            trace = os.path.join(args.dir, f"trace-{name}.log")
            export = Export(args.dir, size, args.cache, trace)
            sampler = ThreadCpu() if name == "blockmirror" else None
            try:
                elapsed, used = RUNNERS[name](src, export.uri, args.dir)
            finally:
                served = export.stop()
            threads = f"; threads: {sampler.finish()}" if sampler else ""
            print(f"{name}: {args.size_mib / elapsed:.0f} MiB/s (traced), CPU user {used[0]:.2f} s sys "
                  f"{used[1]:.2f} s, {used[2]} minor faults, qemu-nbd CPU "
                  f"{served:.2f} s; {summarize_trace(trace)}{threads}")
        return 0
    rates: Dict[str, List[float]] = {name: [] for name in PROGRAMS}
    cpu: Dict[str, List[Usage]] = {name: [] for name in PROGRAMS}
    server_cpu: Dict[str, List[float]] = {name: [] for name in PROGRAMS}
    loads: List[str] = []
    for rep in range(args.reps):
        loads.append(load())
        for name in PROGRAMS:
            subprocess.run(["sync"], check=True)
            export = Export(args.dir, size, args.cache)
            try:
                elapsed, used = RUNNERS[name](src, export.uri, args.dir)
            finally:
                served = export.stop()
            if args.verify and not same_content(src, export.image):
                raise RuntimeError(f"{name}: the target differs from the source")
            rates[name].append(args.size_mib / elapsed)
            cpu[name].append(used)
            server_cpu[name].append(served)
        print(f"rep {rep + 1}/{args.reps} done (load before: {loads[-1]}); "
              + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in PROGRAMS) + " MiB/s", file=sys.stderr)
    print(f"{args.size_mib} MiB random data onto a qemu-nbd export (Unix socket, --cache={args.cache}), "
          f"{args.reps} repetitions")
    print(f"load average (1/5/15 min) before each repetition: {'; '.join(loads)}; after: {load()}")
    print("| program | MiB/s min | median | max | median ratio to QEMU | median ratio to nbdcopy "
          "| CPU s user + sys (median) | minor faults (median) | qemu-nbd CPU s (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in PROGRAMS:
        r = rates[name]
        to_qemu = statistics.median(a / b for a, b in zip(r, rates["QEMU"]))
        to_nbdcopy = statistics.median(a / b for a, b in zip(r, rates["nbdcopy"]))
        user = statistics.median(u for u, _, _ in cpu[name])
        system = statistics.median(s for _, s, _ in cpu[name])
        faults = statistics.median(f for _, _, f in cpu[name])
        print(f"| {name} | {min(r):.0f} | {statistics.median(r):.0f} | {max(r):.0f} | {to_qemu:.2f} "
              f"| {to_nbdcopy:.2f} | {user:.2f} + {system:.2f} | {faults:.0f} "
              f"| {statistics.median(server_cpu[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
