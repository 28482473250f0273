"""A small pure-Python driver for ``blockmirror.MirrorJob`` over ``bytearray`` disks.

The driver follows the contract of DESIGN.md §7 literally: it performs every action the job
asks for on two in-memory disks, completes them in a random order (reads capture the source
when they complete), injects faults, writes random unaligned guest data, and holds the guest
while quiesced. After ``BLOCK_JOB_COMPLETED`` without error the target must equal the source
as it was at the switch (the pivot, or the un-quiesce that ended a soft cancel's drain).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

import blockmirror as bm

GRANULE = 4096
LENGTH = 64 * GRANULE + 1000  # an unaligned tail chunk
MS = 1_000_000


@dataclass
class Driver:
    job: bm.MirrorJob
    source: bytearray
    target: bytearray
    rng: random.Random
    fault_rate: float = 0.0
    fault_errors: tuple[str | int, ...] = ("io",)
    discard_reads_zero: bool = False
    now: int = 0
    pending: list[bm.Action] = field(default_factory=list)
    buffers: dict[int, bytes] = field(default_factory=dict)
    mirrored: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    events: list[bm.Event] = field(default_factory=list)
    quiesced: bool = False
    pivoted: bool = False
    switch_snapshot: bytes | None = None
    reads_by_op: dict[int, tuple[int, int]] = field(default_factory=dict)

    def pump(self) -> None:
        """The driver rule: after every input, drain actions and events."""
        while True:
            action = self.job.poll_action()
            event = self.job.poll_event()
            if action is None and event is None:
                return
            if action is not None:
                self.start(action)
            if event is not None:
                self.events.append(event)

    def start(self, a: bm.Action) -> None:
        if a.kind == "quiesce":
            self.quiesced = True
        elif a.kind == "unquiesce":
            # The drain ends here: a soft cancel's consistent copy is taken at this moment.
            self.switch_snapshot = bytes(self.source)
            self.quiesced = False
        elif a.kind == "pivot":
            assert self.quiesced, "pivot with the guest running"
            self.switch_snapshot = bytes(self.source)
            self.pivoted = True
        elif a.kind == "read":
            self.reads_by_op[a.op] = (a.offset, a.length)
        self.pending.append(a)

    def completable(self) -> list[bm.Action]:
        # A quiesce completes once no guest write is waiting for its mirror write.
        return [a for a in self.pending if a.kind != "quiesce" or not self.mirrored]

    def complete_one(self) -> bool:
        ready = self.completable()
        if not ready:
            return False
        a = self.rng.choice(ready)
        self.pending.remove(a)
        error = None
        if a.kind in ("read", "write", "write_zeroes", "discard", "guest_write", "flush"):
            if self.rng.random() < self.fault_rate:
                error = self.rng.choice(self.fault_errors)
        zero = False
        end = a.offset + a.length
        if error is None:
            if a.kind == "read":
                data = bytes(self.source[a.offset:end])
                self.buffers[a.op] = data
                zero = not any(data)
            elif a.kind == "write":
                self.target[a.offset:end] = self.buffers.pop(a.op)
            elif a.kind in ("write_zeroes", "discard"):
                assert a.kind == "write_zeroes" or self.discard_reads_zero
                self.buffers.pop(a.op, None)
                self.target[a.offset:end] = bytes(a.length)
            elif a.kind == "guest_write":
                g_offset, data = self.mirrored[a.op]
                assert g_offset <= a.offset and end <= g_offset + len(data)
                self.target[a.offset:end] = data[a.offset - g_offset:end - g_offset]
        else:
            self.buffers.pop(a.op, None)
        self.job.handle_completion(a.op, error=error, zero=zero)
        if a.kind == "guest_write":
            del self.mirrored[a.op]  # the guest's write is acknowledged now
        self.pump()
        return True

    def guest_write(self) -> None:
        length = self.rng.randint(1, 3 * GRANULE)
        offset = self.rng.randrange(0, LENGTH - length + 1)
        data = self.rng.randbytes(length) if self.rng.random() < 0.8 else bytes(length)
        self.source[offset:offset + length] = data
        op = self.job.handle_guest_write(offset, length)
        if op is not None:
            self.mirrored[op] = (offset, data)
        self.pump()

    def tick(self) -> None:
        # The job's rule: tell it the time whenever the clock advanced.
        self.now += MS
        self.job.handle_timeout(self.now)
        self.pump()


def make_disks(sync: str, rng: random.Random) -> tuple[bytearray, bytearray, list[tuple[int, int, str]]]:
    """Source, target and declarations for a sync mode (see the module docstring)."""
    source = bytearray(rng.randbytes(LENGTH))
    hole = (8 * GRANULE, 8 * GRANULE)  # a granule-aligned hole / unallocated range
    source[hole[0]:hole[0] + hole[1]] = bytes(hole[1])
    if sync == "full":
        return source, bytearray(LENGTH), [(hole[0], hole[1], "zero")]
    if sync == "top":
        # The target shares the backing image: the unallocated range already matches.
        target = bytearray(LENGTH)
        unallocated = (32 * GRANULE, 16 * GRANULE)
        target[unallocated[0]:unallocated[0] + unallocated[1]] = source[unallocated[0]:unallocated[0] + unallocated[1]]
        return source, target, [(unallocated[0], unallocated[1], "unallocated")]
    return source, bytearray(source), []


def run(copy_mode: str, sync: str, policy: str, seed: int) -> Driver:
    rng = random.Random(seed)
    source, target, declarations = make_disks(sync, rng)
    job = bm.MirrorJob(LENGTH, granularity=GRANULE, sync=sync, copy_mode=copy_mode,
                       on_source_error=policy, on_target_error=policy,
                       buf_size=8 * GRANULE, max_in_flight=4, max_io=4 * GRANULE)
    for offset, length, state in declarations:
        job.declare(offset, length, state)
    errors: tuple[str | int, ...] = ("nospace", "io") if policy == "enospc" else ("io", "nospace", 27)
    d = Driver(job, source, target, rng, fault_rate=0.05, fault_errors=errors)
    job.start(now=0)
    d.pump()
    for step in range(20_000):
        if job.status == "concluded":
            break
        if step == 300:
            d.fault_rate = 0.0  # faults stop: ignore and stop must still converge
        if job.status in ("paused", "standby") and not d.pending:
            job.resume()  # a `stop` error paused the job; the operator resumes it
            d.pump()
        elif job.status == "ready" and step > 400 and not any(e.type == "BLOCK_JOB_COMPLETED" for e in d.events):
            try:
                job.complete()
            except bm.JobStateError:
                pass  # complete() twice is harmless, a second call may be refused after cancel
            d.pump()
        roll = rng.random()
        if roll < 0.3 and not d.quiesced and step < 600:
            d.guest_write()
        elif roll < 0.9 and d.complete_one():
            pass
        else:
            d.tick()
    else:
        pytest.fail(f"no conclusion after 20000 steps: status {job.status}, pending {d.pending}")
    return d


COPY_MODES = ["background", "write-blocking"]
SYNC_MODES = ["full", "top", "none"]
POLICIES = ["report", "ignore", "stop", "enospc"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("sync", SYNC_MODES)
@pytest.mark.parametrize("copy_mode", COPY_MODES)
def test_target_equals_source_after_completed(copy_mode: str, sync: str, policy: str) -> None:
    for seed in range(4):
        d = run(copy_mode, sync, policy, seed)
        types = [e.type for e in d.events]
        assert types.count("BLOCK_JOB_READY") <= 1
        completed = [e for e in d.events if e.type == "BLOCK_JOB_COMPLETED"]
        if completed and completed[-1].error is None:
            assert completed[-1].pivoted == d.pivoted
            assert d.switch_snapshot is not None
            assert bytes(d.target) == d.switch_snapshot, f"seed {seed}: target differs at the switch"
        else:
            # Only a report (or enospc's report) error may end the job otherwise.
            assert policy in ("report", "enospc"), f"seed {seed}: {types}"
            assert completed and completed[-1].error is not None
        errors = [e for e in d.events if e.type == "BLOCK_JOB_ERROR"]
        for e in errors:
            assert e.operation in ("read", "write") and e.action in ("report", "ignore", "stop")


def test_no_faults_always_completes_equal() -> None:
    for copy_mode in COPY_MODES:
        rng = random.Random(99)
        source, target, _ = make_disks("full", rng)
        job = bm.MirrorJob(LENGTH, granularity=GRANULE, copy_mode=copy_mode, max_io=2 * GRANULE)
        d = Driver(job, source, target, rng)
        job.start()
        d.pump()
        while job.status != "ready":
            if rng.random() < 0.2:
                d.guest_write()
            elif not d.complete_one():
                d.tick()
        job.complete()
        d.pump()
        while job.status != "concluded":
            if not d.complete_one():
                d.tick()
        assert d.pivoted and bytes(d.target) == bytes(d.source) == d.switch_snapshot


def test_defaults_are_the_cores() -> None:
    """Every signature and the CLI's help show the core's defaults (blockmirror.DEFAULTS)."""
    import inspect

    import argparse

    from blockmirror.cli import add_job_options

    d = bm.DEFAULTS
    assert (d["granularity"], d["buf_size"], d["max_io"], d["max_in_flight"]) == (64 << 10, 16 << 20, 4 << 20, 16)
    knobs = ("granularity", "sync", "copy_mode", "on_source_error", "on_target_error", "speed", "buf_size",
             "max_in_flight", "max_io")
    job = inspect.signature(bm.MirrorJob).parameters
    mirror = inspect.signature(bm.Mirror).parameters
    for name in knobs:
        assert job[name].default == d[name], name
        assert mirror[name].default == d[name], name
    assert job["discard_reads_zero"].default == d["discard_reads_zero"]
    assert mirror["not_converging_window"].default * 1e9 == d["not_converging_window_ns"]
    # FileMirror's signature (py/src/mirror.rs) writes its own; where it shows a number it agrees.
    for name, p in inspect.signature(bm.FileMirror).parameters.items():
        if name in d and p.default is not Ellipsis:
            assert p.default == d[name], name
    parser = argparse.ArgumentParser()
    add_job_options(parser)
    help_text = " ".join(parser.format_help().split())
    for shown in ("chunk size (default 64K)", "copy buffers in flight (default 16M)", "(default 16)", "default: 4M"):
        assert shown in help_text, shown
