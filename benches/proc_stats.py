"""What a running process spends, read from /proc: CPU seconds per thread group, context
switches, memory (VmRSS, VmHWM) and a sampler of VmRSS over a window. Used by the serve
benchmarks to compare servers' costs per I/O."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Any, Dict, Tuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> Dict[str, float]:
    """CPU seconds (user + system) per thread group of ``pid``: thread names with their
    numbers removed (``bm-serve-io-3`` -> ``bm-serve-io-``), so groups compare across runs."""
    groups: Dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        group = re.sub(r"\d+$", "", name)
        groups[group] = groups.get(group, 0.0) + ticks / CLOCK_TICKS
    return groups


def context_switches(pid: int) -> Tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the live threads of ``pid``:
    a voluntary one is a thread going to sleep (a hand-off between threads costs one on
    each side), an involuntary one a thread preempted while it could still run."""
    voluntary = involuntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except FileNotFoundError:
            continue
    return voluntary, involuntary


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the whole process, threads that ended included (the
    per-thread figures lose those: QEMU's pool workers come and go)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    """Per group, CPU seconds spent between two samples (threads that ended are lost:
    the servers keep their threads for their lifetime, the mirror's end with the job)."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after.get(k, 0.0) - before.get(k, 0.0) > 0}


def memory_kib(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class RssSampler:
    """Samples VmRSS of a process every ``interval`` seconds on a thread; ``peak`` is the
    highest seen (VmHWM covers the whole life, this one a window)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError, KeyError):
                self.peak = max(self.peak, memory_kib(self.pid)[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
