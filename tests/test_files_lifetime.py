"""A Mirror's lifetime: one dropped without close() frees its threads and files."""

from __future__ import annotations

import gc
import os
import time

import pytest

import blockmirror as bm
from _files_util import MiB, random_file


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _drop_mirrors(tmp_path, src, name, count, end):
    for i in range(count):
        m = bm.Mirror(src, str(tmp_path / f"{name}{i}.img"))
        end(m)
        del m
        gc.collect()


def test_dropped_mirrors_free_their_threads_and_files(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=70)
    # One mirror first, so that lazily started process-wide threads (if any) are counted.
    _drop_mirrors(tmp_path, src, "first", 1, lambda m: m.close())
    threads, fds = _threads(), _fds()
    _drop_mirrors(tmp_path, src, "ready", 10, lambda m: m.wait_ready(timeout=30))   # ready, never ended
    _drop_mirrors(tmp_path, src, "new", 10, lambda m: None)                       # dropped at once
    assert (_threads(), _fds()) == (threads, fds)


def test_a_dropped_mirror_is_closed(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=71)
    m = bm.Mirror(src, str(tmp_path / "dst.img"))
    native = m._native
    del m
    gc.collect()
    assert native.closed


def test_close_is_prompt_after_a_job_spun_on_errors(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 16 * MiB, seed=72)
    m = bm.Mirror(src, str(tmp_path / "dst.img"), on_target_error="ignore",
                  faults=[{"side": "target", "op": "write", "count": 0, "error": "nospace"}])
    # Let failures pile up: far more events than the event thread converts per second
    # (or, where the job backs off between retries, whatever a few seconds bring).
    give_up = time.monotonic() + 8
    while m.stats()["failed_ops"] < 300_000 and time.monotonic() < give_up:
        time.sleep(0.01)
    assert m.stats()["failed_ops"] > 0
    t0 = time.monotonic()
    m.close()
    # Closing takes at most its one-second drain plus the native close, not the minutes a
    # backlog of events would take to convert; the bound leaves room for a loaded machine.
    assert time.monotonic() - t0 < 5
    assert m.ended and not m._pump.is_alive()


def test_a_run_of_alike_errors_is_counted_not_stored():
    """The Python log's own bound, behind the native one (which folds identical consecutive
    errors into one event with a count): of a run of alike errors it keeps the first 100
    events and counts what the rest stood for; an error of another kind starts a new run."""
    from blockmirror._events import MirrorEvent
    from blockmirror._mirror import _EventLog

    log = _EventLog()
    nospace = dict(type="BLOCK_JOB_ERROR", operation="write", action="ignore", error="nospace")
    for i in range(1000):
        log.add(MirrorEvent(time_ns=i, offset=i, length=1, count=3 if i == 999 else None, **nospace))
    stored = [e for e in log.events if e.type == "BLOCK_JOB_ERROR"]
    assert len(stored) == 100 and [e.offset for e in stored] == list(range(100))
    assert log.errors_not_stored == 899 + 3
    log.add(MirrorEvent(time_ns=1000, **{**nospace, "error": "io"}))
    assert log.events[-1].error == "io", "another kind of error is never dropped"
    log.add(MirrorEvent(type="JOB_STATUS_CHANGE", time_ns=1001, status="ready"))
    assert log.events[-1].type == "JOB_STATUS_CHANGE"


def test_an_image_a_mirror_holds_is_refused_to_a_second_one_until_it_closes(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=71)
    first = bm.Mirror(src, str(tmp_path / "a.img"))
    try:
        with pytest.raises(bm.IoError) as info:
            bm.Mirror(src, str(tmp_path / "b.img"))
        assert info.value.operation == "lock"
        assert "in use by another process" in str(info.value)
        assert not (tmp_path / "b.img").exists()
        # Without its own lock a second mirror of the same process may start.
        bm.Mirror(src, str(tmp_path / "c.img"), lock=False).close()
    finally:
        first.close()
    bm.Mirror(src, str(tmp_path / "b.img")).close()
