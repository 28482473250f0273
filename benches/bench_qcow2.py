"""qcow2 → qcow2 mirror benchmark: blockmirror vs QEMU's mirror vs ``qemu-img convert``.

Cases (1 GiB virtual size, 64 KiB clusters, written with ``qemu-io`` patterns in 1 MiB
extents at random places):
- ``full-25`` / ``full-100``: one standalone qcow2 image, 25 % / 100 % allocated; a new
  standalone target (``sync=full``).
- ``top-25`` / ``top-100``: an overlay (25 % / 100 % allocated) over a fully allocated base;
  a new target over the same base (``sync=top``).

Tools, run alternately in each repetition (the order rotates), every source read into the
page cache first:
- blockmirror: ``blockmirror.mirror(src, dst, sync=...)`` in a child Python process, timed
  inside it around the call (the import is not counted);
- QEMU: ``qemu-storage-daemon``, QMP ``blockdev-add`` of the source chain, ``drive-mirror``
  (``format: qcow2``, ``mode: absolute-paths``: QEMU creates the target) then
  ``block-job-complete`` at READY, timed from the command to BLOCK_JOB_COMPLETED;
- ``qemu-img convert -O qcow2`` (``-B BASE -F qcow2`` for ``top``: it reads the whole chain
  and the base to write only what differs) followed by ``sync -d`` of the target (every
  mirror flushes its target before it reports success).

Each row gives the median time, the median of the per-repetition ratios (the tool's time /
blockmirror's, so above 1 means blockmirror is faster), bytes read and written through
system calls (``rchar``/``wchar`` of /proc/PID/io: the child's own for blockmirror and
qemu-img, the daemon's difference for QEMU) and the target's allocated size (``du``).

    python benches/bench_qcow2.py --dir /var/tmp/bm-qcow2 --reps 3
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
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import Qemu  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


class StorageDaemon(Qemu):
    """``qemu-storage-daemon`` with a QMP monitor on a unix socket."""

    @staticmethod
    def command(sock_path: str) -> List[str]:
        return ["qemu-storage-daemon", "--chardev", f"socket,path={sock_path},server=on,wait=off,id=qmp0",
                "--monitor", "chardev=qmp0"]


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fill(path: str, size: int, share: float, seed: int) -> None:
    """Writes patterns into ``share`` of ``path``'s 1 MiB extents (chosen at random)."""
    extents = list(range(size // MiB))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(extents, int(len(extents) * share)))
    for i in range(0, len(chosen), 256):
        cmds: List[str] = []
        for e in chosen[i:i + 256]:
            cmds += ["-c", f"write -P 0x{rng.randrange(1, 256):02x} {e * MiB} {MiB}"]
        run("qemu-io", "-f", "qcow2", *cmds, path)


def make_images(workdir: str, size: int) -> Dict[str, Dict[str, Any]]:
    cases: Dict[str, Dict[str, Any]] = {}
    base = os.path.join(workdir, "base.qcow2")
    if not os.path.exists(base):
        run("qemu-img", "create", "-f", "qcow2", base, str(size))
        fill(base, size, 1.0, 1)
    for share in (25, 100):
        full = os.path.join(workdir, f"full-{share}.qcow2")
        if not os.path.exists(full):
            run("qemu-img", "create", "-f", "qcow2", full, str(size))
            fill(full, size, share / 100, 10 + share)
        cases[f"full-{share}"] = {"src": full, "sync": "full", "base": None}
        top = os.path.join(workdir, f"top-{share}.qcow2")
        if not os.path.exists(top):
            run("qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
            fill(top, size, share / 100, 20 + share)
        cases[f"top-{share}"] = {"src": top, "sync": "top", "base": base}
    return cases


def warm(*paths: str) -> None:
    for p in paths:
        if p:
            with open(p, "rb") as f:
                while f.read(8 * MiB):
                    pass


def proc_io(pid: int) -> Dict[str, int]:
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def wait_io(proc: subprocess.Popen) -> Dict[str, int]:
    """Waits for ``proc`` to exit without reaping it, reads its /proc/PID/io, then reaps it."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    io = proc_io(proc.pid)
    if proc.wait() != 0:
        raise RuntimeError(f"{proc.args} failed")
    return io


BM_CHILD = """
import json, sys, time
import blockmirror as bm
src, dst, sync = sys.argv[1:4]
t0 = time.perf_counter()
r = bm.mirror(src, dst, sync=sync)
s = time.perf_counter() - t0
print(json.dumps({"s": s, "bytes_read": r.bytes_read, "bytes_written": r.bytes_written}))
"""


def timed_bm(case: Dict[str, Any], dst: str) -> Dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", BM_CHILD, case["src"], dst, case["sync"]],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    io = wait_io(proc)
    return {"s": json.loads(out)["s"], "rchar": io["rchar"], "wchar": io["wchar"]}


def timed_convert(case: Dict[str, Any], dst: str) -> Dict[str, float]:
    args = ["qemu-img", "convert", "-O", "qcow2"]
    if case["base"]:
        args += ["-B", case["base"], "-F", "qcow2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args + [case["src"], dst], stdout=subprocess.DEVNULL)
    io = wait_io(proc)
    run("sync", "-d", dst)
    return {"s": time.perf_counter() - t0, "rchar": io["rchar"], "wchar": io["wchar"]}


def timed_qemu(case: Dict[str, Any], dst: str, workdir: str) -> Dict[str, float]:
    q = StorageDaemon(workdir)
    try:
        q.cmd("blockdev-add", **{"node-name": "src", "driver": "qcow2",
                                 "file": {"driver": "file", "filename": case["src"]}})
        before = proc_io(q.proc.pid)
        t0 = time.perf_counter()
        q.cmd("drive-mirror", **{"job-id": "m", "device": "src", "target": dst, "format": "qcow2",
                                 "sync": case["sync"], "mode": "absolute-paths"})
        if q.wait_event("BLOCK_JOB_READY", 900) is None:
            raise RuntimeError("QEMU mirror did not become ready")
        q.cmd("block-job-complete", device="m")
        if q.wait_event("BLOCK_JOB_COMPLETED", 900) is None:
            raise RuntimeError("QEMU mirror did not complete")
        s = time.perf_counter() - t0
        after = proc_io(q.proc.pid)
    finally:
        q.close()
    return {"s": s, "rchar": after["rchar"] - before["rchar"], "wchar": after["wchar"] - before["wchar"]}


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp/bm-qcow2-bench")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--cases", default="full-25,full-100,top-25,top-100")
    args = ap.parse_args()
    for tool in ("qemu-img", "qemu-io", "qemu-storage-daemon"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is required")
    os.makedirs(args.dir, exist_ok=True)
    cases = make_images(args.dir, args.size)
    tools = ["blockmirror", "qemu-mirror", "qemu-img-convert"]
    print(f"uptime before: {os.getloadavg()}", flush=True)
    for name in args.cases.split(","):
        case = cases[name]
        rows: Dict[str, List[Dict[str, float]]] = {t: [] for t in tools}
        for rep in range(args.reps):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool in order:
                dst = os.path.join(args.dir, f"dst-{tool}.qcow2")
                if os.path.exists(dst):
                    os.unlink(dst)
                warm(case["src"], case["base"])
                if tool == "blockmirror":
                    r = timed_bm(case, dst)
                elif tool == "qemu-mirror":
                    r = timed_qemu(case, dst, args.dir)
                else:
                    r = timed_convert(case, dst)
                r["target"] = allocated(dst)
                subprocess.run(["qemu-img", "compare", "-U", case["src"], dst], check=True,
                               stdout=subprocess.DEVNULL)
                rows[tool].append(r)
                os.unlink(dst)
        bm_times = [r["s"] for r in rows["blockmirror"]]
        print(f"\n{name} ({case['sync']}, {args.reps} reps)")
        print("| tool | median s | ratio vs blockmirror (median) | read MiB | written MiB | target MiB |")
        print("|------|---------:|------:|------:|------:|------:|")
        for tool in tools:
            rs = rows[tool]
            ratio = statistics.median(r["s"] / b for r, b in zip(rs, bm_times))
            print(f"| {tool} | {statistics.median(r['s'] for r in rs):.3f} | {ratio:.2f}x | "
                  f"{statistics.median(r['rchar'] for r in rs) / MiB:.0f} | "
                  f"{statistics.median(r['wchar'] for r in rs) / MiB:.0f} | "
                  f"{statistics.median(r['target'] for r in rs) / MiB:.0f} |", flush=True)
    print(f"\nuptime after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
