"""The native FileMirror under hostile use: huge timeouts and reads, a panicking worker,
resources after close or drop, and a failing target retried forever under ``ignore``.
Every wait here is on the mirror's own events or states, never on a sleep."""

from __future__ import annotations

import gc
import math
import os
from typing import List

import pytest

import blockmirror as bm
from blockmirror._native import FileMirror
from _files_util import MiB, random_file

HUGE = [1e19, 1e30, float("inf")]


@pytest.fixture
def paths(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 2 * MiB, seed=3)
    return src, dst


def drain(fm: FileMirror) -> List[bm.Event]:
    events = []
    while True:
        ev = fm.next_event(30)
        if ev is None:
            return events
        events.append(ev)


# -- item 5: timeouts, read lengths, panics ------------------------------------------------

def test_huge_finite_timeouts_mean_no_timeout(paths):
    fm = FileMirror(*paths)
    try:
        for t in HUGE:
            assert fm.wait_ready(t) == "ready"
            assert fm.next_event(t) is not None
        fm.cancel()  # in ready: drains, then BLOCK_JOB_COMPLETED
        for t in HUGE:
            assert fm.wait_end(t) is True
        types = [e.type for e in drain(fm)]
        assert "BLOCK_JOB_COMPLETED" in types
        assert fm.next_event(1e19) is None
    finally:
        fm.close()


def test_python_mirror_takes_huge_timeouts(paths):
    with bm.Mirror(*paths) as m:
        m.wait_ready(timeout=1e30)
        result = m.complete(timeout=1e19)
    assert result.pivoted


@pytest.mark.parametrize("bad", [-1.0, -1e30, math.nan])
def test_negative_or_nan_timeouts_are_invalid(paths, bad):
    fm = FileMirror(*paths)
    try:
        for call in (fm.wait_ready, fm.wait_end, fm.next_event):
            with pytest.raises(bm.InvalidArgument):
                call(bad)
    finally:
        fm.close()


@pytest.mark.parametrize("window", [1e10, 2e10, 1e300, float("inf")])
def test_huge_not_converging_window_is_accepted(paths, window):
    fm = FileMirror(*paths, auto_converge=True, not_converging_window=window)
    try:
        assert fm.wait_ready(30) == "ready"
    finally:
        fm.close()


def test_not_converging_window_must_not_be_negative(paths):
    with pytest.raises(bm.InvalidArgument, match="not_converging_window"):
        FileMirror(*paths, not_converging_window=-1.0)


def test_huge_guest_read_is_refused_before_allocating(tmp_path):
    src, dst = str(tmp_path / "big.img"), str(tmp_path / "dst.img")
    with open(src, "wb") as f:
        f.truncate(256 * MiB)  # sparse: nothing to copy, but a large disk
    fm = FileMirror(src, dst)
    try:
        assert fm.wait_ready(30) == "ready"
        assert fm.read(0, 64 * MiB) == bytes(64 * MiB)  # the limit itself is allowed
        with pytest.raises(bm.InvalidArgument, match="limit"):
            fm.read(0, 64 * MiB + 1)
        with pytest.raises(bm.InvalidArgument, match="limit"):
            fm.read(0, 256 * MiB)
        with pytest.raises(bm.InvalidArgument):
            fm.read(0, 1 << 62)  # past the disk end
    finally:
        fm.close()


@pytest.mark.parametrize("where", ["panic", "panic-locked"])
def test_a_panicking_worker_fails_the_mirror_cleanly(paths, where):
    # "panic-locked" panics while holding the job's lock (poisoning it); "panic" panics in
    # the I/O with a task in flight. Either way every later call must answer, not panic.
    fm = FileMirror(*paths, faults=[{"side": "target", "op": "write", "error": where}])
    try:
        assert fm.wait_end(30) is True
        snap = fm.snapshot()
        assert "panicked" in (snap["internal_error"] or "")
        assert fm.wait_ready(30) in ("ended", "ready")
        assert isinstance(fm.status, str) and isinstance(fm.progress, tuple)
        for verb in (fm.pause, fm.resume, fm.complete, fm.cancel):
            with pytest.raises(bm.JobStateError):
                verb()
        assert fm.read(0, 4096) == open(paths[0], "rb").read(4096)
        drain(fm)
    finally:
        fm.close()
    assert fm.closed


def test_python_mirror_reports_a_panicked_worker(paths):
    with bm.Mirror(*paths, faults=[{"side": "target", "op": "write", "error": "panic-locked"}]) as m:
        with pytest.raises(RuntimeError, match="panicked"):
            m.wait_ready(timeout=30)


# -- item 6: close and drop release the files and the threads ---------------------------

def fd_targets() -> List[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the directory's own fd, already gone
    return out


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def baseline() -> tuple:
    """Open fds and OS threads now, after collecting what earlier tests left behind."""
    gc.collect()
    return len(fd_targets()), os_threads()


def test_close_releases_the_files_and_threads_at_once(paths):
    src, dst = paths
    fds, threads = baseline()
    fm = FileMirror(src, dst)
    assert fm.wait_ready(30) == "ready"
    assert os_threads() > threads
    assert sum(t == dst for t in fd_targets()) >= 2
    fm.close()  # `fm` stays referenced: no garbage collection can be what frees them
    assert len(fd_targets()) == fds
    assert os_threads() == threads
    os.unlink(dst)
    assert not any(dst in t for t in fd_targets()), "a deleted target is still held open"
    # What is left stays readable, and the untaken events are still delivered, in order.
    assert fm.closed and fm.status == "concluded" and fm.wait_end(0) is True
    events = drain(fm)
    assert "BLOCK_JOB_CANCELLED" in [e.type for e in events]
    assert (events[-1].type, events[-1].status) == ("JOB_STATUS_CHANGE", "concluded")
    with pytest.raises(bm.JobStateError):
        fm.read(0, 1)
    with pytest.raises(bm.JobStateError):
        fm.pause()
    fm.close()  # idempotent


def test_python_mirror_close_releases_the_files(paths):
    src, dst = paths
    fds, threads = baseline()
    with bm.Mirror(src, dst) as m:
        m.wait_ready(timeout=30)
        m.complete(timeout=30)
    assert len(fd_targets()) == fds
    assert os_threads() == threads
    assert m.result().pivoted


def test_dropping_the_native_mirror_without_close_releases_everything(paths):
    fds, threads = baseline()
    for i in range(5):
        fm = FileMirror(paths[0], f"{paths[1]}.{i}")
        assert fm.wait_ready(30) == "ready"
        del fm
    gc.collect()
    assert len(fd_targets()) == fds
    assert os_threads() == threads


def test_dropping_a_python_mirror_without_close_releases_everything(paths):
    fds, threads = baseline()
    for i in range(3):
        m = bm.Mirror(paths[0], f"{paths[1]}.{i}")
        m.wait_ready(timeout=30)
        del m
    gc.collect()
    assert len(fd_targets()) == fds
    assert os_threads() == threads


# -- item 3: repeated ignored errors are counted, not stored one by one -------------------

FULL_DISK = [{"side": "target", "op": "any", "count": 0, "error": "nospace"}]


def test_repeated_ignored_errors_are_counted_not_stored(paths):
    # The job backs off between retries (10 ms doubling to 1 s), so a few dozen failures
    # take about a second; the native queue folds them into a handful of records.
    # 512 KiB copies of the 2 MiB disk: several fail in each retry round.
    fm = FileMirror(*paths, granularity=65536, max_io=512 * 1024, on_target_error="ignore", faults=FULL_DISK)
    try:
        records = total = 0
        while total < 24:
            ev = fm.next_event(30)
            assert ev is not None, "the ignored errors stopped coming"
            if ev.type == "BLOCK_JOB_ERROR":
                assert ev.action == "ignore" and ev.error == "nospace"
                records += 1
                total += ev.count
        assert records * 3 <= total, (records, total)
        assert fm.snapshot()["events_dropped"] == 0
    finally:
        fm.close()


def test_python_events_carry_the_repeat_count(paths):
    # Several copies fail in each retry round (512 KiB copies of the 2 MiB disk), so the
    # errors that pile up between two reads of the queue are folded into one event.
    with bm.Mirror(*paths, on_target_error="ignore", faults=FULL_DISK, max_io=512 * 1024) as m:
        total = 0
        for ev in m.iter_events(timeout=30):
            if ev.type == "BLOCK_JOB_ERROR":
                assert ev.count is not None and ev.count >= 1
                total += ev.count
                if total >= 24:
                    break
        errors = [e for e in m.events if e.type == "BLOCK_JOB_ERROR"]
        assert len(errors) * 3 <= sum(e.count for e in errors)
        assert errors[0].to_dict()["count"] >= 1
