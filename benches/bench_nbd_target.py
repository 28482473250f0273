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
import time
from typing import Callable, Dict, List, Tuple

MiB = 1 << 20
PROGRAMS = ("blockmirror", "QEMU", "nbdcopy", "qemu-img")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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

    def __init__(self, workdir: str, size: int) -> None:
        self.image = os.path.join(workdir, "target.img")
        self.sock = os.path.join(workdir, "nbd.sock")
        for path in (self.image, self.sock):
            if os.path.exists(path):
                os.remove(path)
        with open(self.image, "wb") as f:
            f.truncate(size)
        self.proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-x", "exp", "-k", self.sock, "-t", self.image],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_socket(self.sock, self.proc, "qemu-nbd")
        self.uri = f"nbd+unix:///exp?socket={self.sock}"
        self.cpu_start = proc_cpu(self.proc.pid)

    def stop(self) -> float:
        """Ends the server; returns the CPU seconds it spent since the start."""
        cpu = proc_cpu(self.proc.pid) - self.cpu_start
        self.proc.terminate()
        self.proc.wait(timeout=60)
        return cpu


def run_blockmirror(src: str, uri: str, workdir: str) -> Tuple[float, float]:
    import blockmirror

    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    blockmirror.mirror(src, uri)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def run_child(args: List[str]) -> Tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_utime + usage.ru_stime


def run_nbdcopy(src: str, uri: str, workdir: str) -> Tuple[float, float]:
    return run_child(["nbdcopy", "--flush", src, uri])


def run_qemu_img(src: str, uri: str, workdir: str) -> Tuple[float, float]:
    return run_child(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri])


def run_qemu(src: str, uri: str, workdir: str) -> Tuple[float, float]:
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
        cpu_start = proc_cpu(proc.pid)
        t = time.perf_counter()
        qmp.cmd("blockdev-add", {"driver": "raw", "node-name": "tgt",
                                 "file": {"driver": "nbd", "export": "exp",
                                          "server": {"type": "unix", "path": nbd_sock}}})
        qmp.cmd("blockdev-mirror", {"job-id": "m", "device": "src", "target": "tgt", "sync": "full"})
        done = False
        while not done:
            event = qmp.pull_event(wait=True)
            name = event["event"] if event else None
            if name == "BLOCK_JOB_READY":
                qmp.cmd("block-job-complete", {"device": "m"})
            elif name == "BLOCK_JOB_COMPLETED":
                if event["data"].get("error"):
                    raise RuntimeError(f"QEMU mirror failed: {event['data']['error']}")
                done = True
        elapsed = time.perf_counter() - t
        cpu = proc_cpu(proc.pid) - cpu_start
        qmp.cmd("blockdev-del", {"node-name": "tgt"})  # disconnects from qemu-nbd
        qmp.close()
        return elapsed, cpu
    finally:
        proc.terminate()
        proc.wait(timeout=60)


RUNNERS: Dict[str, Callable[[str, str, str], Tuple[float, float]]] = {
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
    rates: Dict[str, List[float]] = {name: [] for name in PROGRAMS}
    cpu: Dict[str, List[float]] = {name: [] for name in PROGRAMS}
    server_cpu: Dict[str, List[float]] = {name: [] for name in PROGRAMS}
    loads: List[str] = []
    for rep in range(args.reps):
        loads.append(load())
        for name in PROGRAMS:
            subprocess.run(["sync"], check=True)
            export = Export(args.dir, size)
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
    print(f"{args.size_mib} MiB random data onto a qemu-nbd export (Unix socket), {args.reps} repetitions")
    print(f"load average (1/5/15 min) before each repetition: {'; '.join(loads)}; after: {load()}")
    print("| program | MiB/s min | median | max | median ratio to QEMU | median ratio to nbdcopy "
          "| CPU s (median) | qemu-nbd CPU s (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in PROGRAMS:
        r = rates[name]
        to_qemu = statistics.median(a / b for a, b in zip(r, rates["QEMU"]))
        to_nbdcopy = statistics.median(a / b for a, b in zip(r, rates["nbdcopy"]))
        print(f"| {name} | {min(r):.0f} | {statistics.median(r):.0f} | {max(r):.0f} | {to_qemu:.2f} "
              f"| {to_nbdcopy:.2f} | {statistics.median(cpu[name]):.2f} | {statistics.median(server_cpu[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
