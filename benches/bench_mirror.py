#!/usr/bin/env python3
"""Mirror benchmark on real files: blockmirror's bulk copy against the device's limit (a
plain `dd`), `cp`, `qemu-img convert` and QEMU's own mirror, then time to ready under guest
writes (blockmirror vs QEMU).

Usage (from the repository root, with a release build of blockmirror in .venv):
    .venv/bin/python benches/bench_mirror.py --size 1G --reps 5 --dir /var/tmp/bm-bench --skip-live

Part 1 (throughput, no guest), once buffered and once with O_DIRECT: one source of random
data, a fresh target per run (the previous one deleted, then `sync`, untimed), the tools
run alternating in each repetition (each repetition starts one tool later). Every run is
timed until its target is durable: the commands are followed by `sync -d TARGET` inside
the timing, because the mirrors flush their target before they report success. Rows:
- `dd if=SRC of=DST bs=4M iflag=direct oflag=direct`: the anchor (the device's limit for
  one sequential reader-writer), in both rounds;
- `cp --sparse=never`, `qemu-img convert -f raw -O raw` (`-t none -T none` with O_DIRECT);
- QEMU's mirror: `qemu-storage-daemon`, QMP `drive-mirror` (sync=full, a new target
  created by QEMU) then `block-job-complete` at READY, timed from the command to
  BLOCK_JOB_COMPLETED (the daemon's start-up is not counted, as a running VM pays none);
- `blockmirror.mirror(src, dst, direct=...)` in this process, with the defaults;
- `--variant name={json}`: more blockmirror rows with other `mirror()` options.
In the buffered round the source is read into the page cache before every run (dd's
`iflag=direct` still reads the disk). The table gives MiB/s min / median / max, the median
of the per-repetition ratios (dd's time / the tool's, so above 1 = faster than dd; the same
against QEMU) and CPU seconds per GiB (the child's rusage for commands, this process's for
blockmirror, /proc/PID/stat for the daemon).

Part 2 (guest writes): a guest writes `--write-rate` random 64 KiB blocks per second while a
mirror with `--live-speed` bytes/s runs; time to BLOCK_JOB_READY (capped) and bytes copied
by then, per copy mode, blockmirror (guest writes via Mirror.write) vs QEMU (guest writes
via HMP `qemu-io` on the `-drive`, so they pass through the mirror's filter). Needs
qemu-system-x86 (installed from apt when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proc_stats import process_cpu  # noqa: E402
from qmp import Qemu, file_node  # noqa: E402

MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def ensure_qemu() -> None:
    if shutil.which("qemu-storage-daemon") and shutil.which("qemu-img") and shutil.which("qemu-system-x86_64"):
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


def block_device(path: str) -> Optional[str]:
    """The name in /proc/diskstats of the disk (or partition) holding ``path``."""
    st = os.stat(path)
    link = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else None


def diskstats(name: Optional[str]) -> Optional[List[int]]:
    """The device's counters: reads, read merges, read sectors, read ms, the same four for
    writes, I/Os in progress, ms busy, weighted ms (the queue's time integral)."""
    if name is None:
        return None
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == name:
                return [int(x) for x in fields[3:14]]
    return None


def device_delta(before: Optional[List[int]], after: Optional[List[int]], seconds: float) -> Dict[str, float]:
    """What the device saw during one run: requests and their mean size per direction, and
    the mean number of requests in the device's queue (weighted ms / elapsed ms). Other
    traffic on a shared disk is counted too."""
    if before is None or after is None:
        return {}
    d = [a - b for a, b in zip(after, before)]
    reads, read_sectors, writes, write_sectors, weighted_ms = d[0], d[2], d[4], d[6], d[10]
    return {
        "dev_reads": reads, "dev_read_kib": read_sectors / 2 / reads if reads else 0.0,
        "dev_writes": writes, "dev_write_kib": write_sectors / 2 / writes if writes else 0.0,
        "dev_queue": weighted_ms / (seconds * 1000) if seconds > 0 else 0.0,
    }


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
        subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return run


class StorageDaemon(Qemu):
    """``qemu-storage-daemon`` with a QMP monitor on a unix socket, spoken to by ``Qemu``'s
    client: the block layer and its jobs alone, as a VM would run them."""

    @staticmethod
    def command(sock_path: str) -> List[str]:
        return ["qemu-storage-daemon", "--chardev", f"socket,path={sock_path},server=on,wait=off,id=qmp0",
                "--monitor", "chardev=qmp0"]


def timed_qemu(workdir: str, src: str, dst: str, direct: bool) -> Dict[str, float]:
    q = StorageDaemon(workdir)
    try:
        q.cmd("blockdev-add", **file_node("src", src, direct))
        t0 = time.perf_counter()
        q.cmd("drive-mirror", **{"job-id": "m", "device": "src", "target": dst, "format": "raw",
                                 "sync": "full", "mode": "absolute-paths"})
        if q.wait_event("BLOCK_JOB_READY", 900) is None:
            raise RuntimeError("QEMU mirror did not become ready")
        q.cmd("block-job-complete", device="m")
        if q.wait_event("BLOCK_JOB_COMPLETED", 900) is None:
            raise RuntimeError("QEMU mirror did not complete")
        t1 = time.perf_counter()
        cpu = process_cpu(q.proc.pid)
    finally:
        q.close()
    return {"s": t1 - t0, "cpu_s": cpu}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_cmd(args: List[str], dst: str) -> Dict[str, float]:
    """Seconds for a command plus an fdatasync of its target (`sync -d`): every mirror
    flushes its target before it reports success, so the anchors pay the same."""
    c0 = children_cpu()
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["sync", "-d", dst], check=True)
    return {"s": time.perf_counter() - t0, "cpu_s": children_cpu() - c0}


def thread_cpu() -> Dict[Tuple[int, str], float]:
    """CPU seconds (user + system) of each live thread of this process, by (tid, name)."""
    out: Dict[Tuple[int, str], float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        fields = rest.split()
        out[(int(tid), head.split("(", 1)[1])] = (int(fields[11]) + int(fields[12])) / tick
    return out


class ThreadSampler:
    """Samples every thread's CPU time while a call runs (the mirror's threads end with it,
    so their last sample is kept): the CPU per thread group of one mirror."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.last: Dict[Tuple[int, str], float] = {}
        self.start = thread_cpu()
        self.own_tid: Optional[int] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.own_tid = threading.get_native_id()
        while not self._stop.is_set():
            self.last.update(thread_cpu())
            self._stop.wait(self.interval)

    def own_cpu(self) -> float:
        """CPU seconds the sampler itself used (not the mirror's: subtracted from it)."""
        return sum(cpu for (tid, _), cpu in self.last.items() if tid == self.own_tid)

    def __enter__(self) -> "ThreadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(thread_cpu())

    def by_group(self) -> Dict[str, float]:
        """CPU seconds during the call per thread kind: the io_uring thread, the I/O workers,
        the driver, and this process's other threads (Python's: the caller; the sampler's
        own are left out)."""
        groups: Dict[str, float] = {}
        for (tid, name), cpu in self.last.items():
            if tid == self.own_tid:
                continue
            used = cpu - self.start.get((tid, name), 0.0)
            if name.startswith("blockmirror-io"):
                group = "workers"
            elif name.startswith("blockmirror-ur"):  # thread names are cut to 15 bytes
                group = "uring"
            elif name.startswith("blockmirror"):
                group = "driver+other"
            else:
                group = "python"
            groups[group] = groups.get(group, 0.0) + used
        return groups


def timed_bm(src: str, dst: str, options: Dict[str, Any]) -> Dict[str, float]:
    """``blockmirror.mirror`` in this process (it flushes the target before READY)."""
    import blockmirror as bm

    c0 = self_cpu()
    with ThreadSampler() as sampler:
        t0 = time.perf_counter()
        bm.mirror(src, dst, **options)
        seconds = time.perf_counter() - t0
    run = {"s": seconds, "cpu_s": self_cpu() - c0 - sampler.own_cpu()}
    run.update({f"cpu_{group}": cpu for group, cpu in sampler.by_group().items()})
    return run


def parse_variant(text: str) -> Tuple[str, Dict[str, Any]]:
    """``name=json``: an extra blockmirror row with these ``mirror()`` options."""
    name, _, options = text.partition("=")
    return name, json.loads(options or "{}")


def throughput(args: argparse.Namespace, src: str, direct: bool) -> Dict[str, List[Dict[str, float]]]:
    dst = os.path.join(args.dir, "dst.img")
    dd = ["dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=direct", "oflag=direct"]
    tools: Dict[str, Callable[[], Dict[str, float]]] = {
        "dd bs=4M iflag=direct oflag=direct": lambda: timed_cmd(dd, dst),
        "cp --sparse=never": lambda: timed_cmd(["cp", "--sparse=never", src, dst], dst),
        "qemu-img convert -t none -T none" if direct else "qemu-img convert": lambda: timed_cmd(
            ["qemu-img", "convert", "-f", "raw", "-O", "raw",
             *(["-t", "none", "-T", "none"] if direct else []), src, dst], dst),
        "QEMU drive-mirror (qemu-storage-daemon)": lambda: timed_qemu(args.dir, src, dst, direct),
        f"blockmirror.mirror(direct={direct})": lambda: timed_bm(src, dst, {"direct": direct}),
    }
    for name, options in args.variant:
        tools[f"blockmirror {name}"] = (lambda o: lambda: timed_bm(src, dst, {"direct": direct, **o}))(options)
    if args.only:
        keep = [k for k in tools if k.startswith("dd") or any(o in k for o in args.only)]
        tools = {k: tools[k] for k in keep}
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in tools}
    names = list(tools)
    device = block_device(args.dir)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]  # alternate the order
        for name in order:
            fresh(dst)
            if not direct:
                warm(src)
            before = diskstats(device)
            run = tools[name]()
            run.update(device_delta(before, diskstats(device), run["s"]))
            results[name].append(run)
            print(f"  rep {rep + 1} {name}: {results[name][-1]['s']:.2f} s", file=sys.stderr, flush=True)
    fresh(dst)
    return results


def paired_table(res: Dict[str, List[Dict[str, float]]], size: int, label: str) -> None:
    """MiB/s min/median/max per tool and median per-repetition ratios to dd and to QEMU."""
    mib = size / MiB
    names = list(res)
    dd = next(n for n in names if n.startswith("dd"))
    qemu = next((n for n in names if n.startswith("QEMU")), None)
    print(f"\n### {label}: {mib:.0f} MiB of random data, {len(res[dd])} alternating repetitions\n")
    device = all("dev_queue" in r for n in names for r in res[n])
    extra_head = " device reads: n, KiB each | device writes: n, KiB each | device queue |" if device else ""
    print("| copy | MiB/s min / median / max | median ratio to dd | median ratio to QEMU | CPU s per GiB |"
          + extra_head)
    print("|---|---|---|---|---|" + ("---|---|---|" if device else ""))
    for name in names:
        rates = [mib / r["s"] for r in res[name]]
        to_dd = statistics.median(res[dd][i]["s"] / r["s"] for i, r in enumerate(res[name]))
        to_q = (f"{statistics.median(res[qemu][i]['s'] / r['s'] for i, r in enumerate(res[name])):.2f}x"
                if qemu else "-")
        cpu = statistics.median(r["cpu_s"] for r in res[name]) / (size / (1 << 30))
        extra = ""
        if device:
            m = {k: statistics.median(r[k] for r in res[name])
                 for k in ("dev_reads", "dev_read_kib", "dev_writes", "dev_write_kib", "dev_queue")}
            extra = (f" {m['dev_reads']:.0f}, {m['dev_read_kib']:.0f} | {m['dev_writes']:.0f}, "
                     f"{m['dev_write_kib']:.0f} | {m['dev_queue']:.1f} |")
        print(f"| {name} | {min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f} "
              f"| {to_dd:.2f}x | {to_q} | {cpu:.2f} |" + extra, flush=True)
    threads = [n for n in names if any(k.startswith("cpu_") and k != "cpu_s" for k in res[n][0])]
    if threads:
        print("\nCPU s per GiB by thread (median; python = the calling thread, waiting):\n")
        print("| copy | uring | workers | driver+other | python |")
        print("|---|---|---|---|---|")
        for name in threads:
            cells = []
            for group in ("uring", "workers", "driver+other", "python"):
                cpu = statistics.median(r.get(f"cpu_{group}", 0.0) for r in res[name]) / (size / (1 << 30))
                cells.append(f"{cpu:.2f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


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
    p.add_argument("--variant", type=parse_variant, action="append", default=[],
                   help="extra blockmirror row: name={json mirror() options}, e.g. 'io4M={\"max_io\": 4194304}'")
    p.add_argument("--only", action="append", default=[],
                   help="run only the rows whose name contains this (dd always runs)")
    p.add_argument("--keep-source", action="store_true", help="do not remove the source at the end")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw results here")
    args = p.parse_args()
    if not args.skip_live:
        ensure_qemu()  # the live rows drive a qemu-system VM
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "src.img")
    make_source(src, args.size)
    report: Dict[str, Any] = {"size": args.size, "reps": args.reps, "live": []}
    if not args.skip_throughput:
        rounds = [d for d in (False, True) if not (d and args.no_direct) and not (not d and args.no_cached)]
        for direct in rounds:
            label = "O_DIRECT" if direct else "buffered"
            print(f"== throughput, {label}; uptime: {os.getloadavg()}", file=sys.stderr)
            res = throughput(args, src, direct)
            report[f"throughput_{'direct' if direct else 'buffered'}"] = res
            paired_table(res, args.size, label)
            print(f"\n(load average after: {os.getloadavg()})", flush=True)
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
    if not args.keep_source:
        os.remove(src)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
