"""Live mirrors: guest writer threads during the copy in both copy modes; complete, cancel in
ready, forced cancel, the context manager, pause/resume/speed, and guest I/O after a pivot."""

from __future__ import annotations

import time

import pytest

import blockmirror as bm
from _files_util import MiB, Writer, make_image, random_file, replay, sha256

MODES = ["background", "write-blocking"]


def _wait_until(condition, timeout=60.0, what="condition"):
    """Waits for a state of the mirror or the writers (polled, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _more_writes(ws, n):
    """Waits until every writer has made ``n`` more writes."""
    targets = [w.count + n for w in ws]
    _wait_until(lambda: all(w.count >= t for w, t in zip(ws, targets)), what=f"{n} more writes")


def _writers(m, size, count=3, **kw):
    span = size // count
    ws = [Writer(m, i * span, (i + 1) * span, seed=100 + i, **kw) for i in range(count)]
    for w in ws:
        w.start()
    return ws


@pytest.mark.parametrize("mode", MODES)
def test_writers_during_copy_then_complete(tmp_path, mode):
    size = 48 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, size, seed=20)
    # A speed limit keeps the bulk copy running while the writers start.
    with bm.Mirror(src, dst, copy_mode=mode, speed=16 * MiB) as m:
        ws = _writers(m, size, pause_s=0.002)
        # Writes race the bulk copy: with half the disk copied, pause the copy (so it cannot
        # become ready meanwhile) while every writer lands more writes, some of them on
        # chunks already copied.
        _wait_until(lambda: m.progress[0] >= size // 2, what="half the disk copied")
        m.pause()
        _more_writes(ws, 20)
        assert m.status in ("paused", "running")  # running: the pause waits for copies in flight
        m.resume()
        m.set_speed(0)  # then the copy outpaces them (background mode needs that)
        m.wait_ready(timeout=60)
        _more_writes(ws, 5)  # keep writing while in sync
        for w in ws:
            w.finish()
        result = m.complete(timeout=60)
        stats = m.stats()
    assert result.pivoted
    assert sha256(dst) == sha256(src)
    if mode == "write-blocking":
        # Writes to chunks in sync went to the target as well.
        assert stats["guest_bytes_mirrored"] > 0
    else:
        # Writes to chunks already copied dirtied them again: they were copied twice.
        assert result.recopied_bytes > 0


@pytest.mark.parametrize("direct", [False, True])
def test_writers_keep_writing_through_complete(tmp_path, direct):
    # direct=True: the copy uses O_DIRECT while guest I/O stays buffered on both files.
    size = 32 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, size, seed=21)
    with bm.Mirror(src, dst, copy_mode="write-blocking", direct=direct) as m:
        ws = _writers(m, size, pause_s=0.001)
        m.wait_ready(timeout=60)
        for w in ws:
            w.record.set()
        m.complete(timeout=60)
        _more_writes(ws, 5)  # writes after the pivot land on the target only
        for w in ws:
            w.finish()
    # Each writer owns its region, so replaying each one's recorded writes in order on the
    # source yields the disk as the guest last wrote it.
    for w in ws:
        replay(src, w.log)
    assert sha256(dst) == sha256(src)


@pytest.mark.parametrize("mode", MODES)
def test_cancel_in_ready_leaves_a_consistent_copy(tmp_path, mode):
    size = 32 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, size, seed=22)
    with bm.Mirror(src, dst, copy_mode=mode) as m:
        # Paced writers: unpaced ones can outrun a background copy for as long as they
        # like (that race is the not-converging tests' subject, not this one's).
        ws = _writers(m, size, count=2, pause_s=0.002)
        m.wait_ready(timeout=60)
        for w in ws:
            w.finish()
        result = m.cancel(timeout=60)
        # Not pivoted: guest I/O still goes to the source.
        m.write(0, b"after")
        assert m.read(0, 5) == b"after"
    assert not result.pivoted and not result.cancelled
    with open(dst, "rb") as f:
        assert f.read(5) != b"after"
    replay(dst, [(0, b"after")])
    assert sha256(dst) == sha256(src)


def test_forced_cancel_stops_and_leaves_the_source_unchanged(tmp_path):
    size = 64 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, size, seed=23)
    before = sha256(src)
    with bm.Mirror(src, dst, speed=16 * MiB) as m:
        _wait_until(lambda: m.progress[0] > 0, what="the copy to start")
        result = m.cancel(force=True, timeout=30)
        assert m.status == "concluded"
    assert result.cancelled and not result.pivoted
    assert [e.type for e in result.events].count("BLOCK_JOB_CANCELLED") == 1
    assert result.bytes_copied < size
    assert sha256(src) == before


def test_exception_in_with_block_force_cancels(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 32 * MiB, seed=24)
    before = sha256(src)
    with pytest.raises(RuntimeError, match="boom"):
        with bm.Mirror(src, dst, speed=8 * MiB) as m:
            raise RuntimeError("boom")
    assert m.ended
    assert "BLOCK_JOB_CANCELLED" in [e.type for e in m.events]
    assert sha256(src) == before
    with pytest.raises(bm.JobStateError):
        m.write(0, b"x")


def test_pause_resume_and_copy_mode_change(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 32 * MiB, seed=25)
    with bm.Mirror(src, dst, speed=32 * MiB) as m:
        _wait_until(lambda: m.progress[0] > 0, what="the copy to start")
        m.pause()
        deadline = time.monotonic() + 10
        while m.status != "paused" and time.monotonic() < deadline:
            time.sleep(0.01)  # the pause takes effect once in-flight copies have drained
        assert m.status == "paused"
        frozen = m.progress[0]
        time.sleep(0.3)  # a negative check: at 32 MiB/s an unpaused copy moves in this time
        assert m.progress[0] == frozen
        with pytest.raises(bm.JobStateError):
            m.pause()
        m.set_copy_mode("write-blocking")
        m.resume()
        m.set_speed(0)
        m.wait_ready(timeout=60)
        m.write(5 * MiB, b"y" * 70_000)
        assert m.stats()["guest_bytes_mirrored"] >= 70_000
        m.complete(timeout=60)
    assert sha256(src) == sha256(dst)


def test_guest_io_goes_to_the_target_after_pivot(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 4 * MiB, seed=26)
    with bm.Mirror(src, dst) as m:
        m.wait_ready(timeout=30)
        m.complete(timeout=30)
        before = sha256(src)
        m.write(123, b"target only")
        assert m.read(123, 11) == b"target only"
        with pytest.raises(bm.JobStateError):
            m.complete()
        with pytest.raises(bm.JobStateError):
            m.pause()
    assert sha256(src) == before
    with open(dst, "rb") as f:
        f.seek(123)
        assert f.read(11) == b"target only"


def test_write_blocking_reaches_ready_under_heavy_writes(tmp_path):
    size = 32 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, size, seed=27)
    with bm.Mirror(src, dst, copy_mode="write-blocking", speed=32 * MiB) as m:
        ws = _writers(m, size, count=2, block=256 * 1024)
        m.wait_ready(timeout=60)
        for w in ws:
            w.finish()
        m.complete(timeout=60)
    assert sha256(src) == sha256(dst)


def test_auto_converge_switches_to_write_blocking_and_gets_ready(tmp_path):
    size = 16 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, size, seed=28)
    # The guest dirties far faster than the 4 MiB/s copy: background mode alone never gets ready.
    with bm.Mirror(src, dst, speed=4 * MiB, auto_converge=True, not_converging_window=0.5) as m:
        ws = _writers(m, size, count=2, block=128 * 1024)
        m.wait_ready(timeout=60)
        # Switched by the job's BLOCK_JOB_NOT_CONVERGING or by the driver's rate watch,
        # whichever noticed first.
        assert m.stats()["copy_mode"] == "write-blocking"
        for w in ws:
            w.finish()
        m.complete(timeout=60)
    assert sha256(src) == sha256(dst)


def test_without_auto_converge_background_mode_stays_behind(tmp_path):
    size = 16 * MiB
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, size, seed=29)
    # At 2 MiB/s the bulk copy alone takes 8 s: the job reports it is not converging long
    # before it could be ready; what matters is the event and that the mode stays background.
    with bm.Mirror(src, dst, speed=2 * MiB, not_converging_window=0.5) as m:
        ws = _writers(m, size, count=2, block=128 * 1024)
        types = []
        for event in m.iter_events(timeout=30):
            types.append(event.type)
            if event.type == "BLOCK_JOB_NOT_CONVERGING":
                break
        assert "BLOCK_JOB_READY" not in types and m.status == "running"
        assert m.stats()["copy_mode"] == "background"
        for w in ws:
            w.finish()
        m.cancel(force=True, timeout=30)


# -- Mirror.run_to_end: the one "ready -> complete, stop -> cancel, timeout" loop ---------

def test_run_to_end_pivots_or_leaves_a_consistent_copy(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 4 * MiB, seed=70)
    for pivot in (True, False):
        dst = str(tmp_path / f"dst-{pivot}.img")
        ticks = []
        with bm.Mirror(src, dst, guest_writes=False) as m:
            result = m.run_to_end(pivot=pivot, on_tick=lambda: ticks.append(m.status))
        assert result.pivoted is pivot and not result.cancelled and result.status == "concluded"
        assert sha256(src) == sha256(dst)
        assert "concluded" not in ticks, "on_tick runs only while the job has not ended"


def test_run_to_end_timeout_force_cancels_promptly(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 16 * MiB, seed=71)
    with bm.Mirror(src, dst, speed=MiB, guest_writes=False) as m:
        t0 = time.monotonic()
        with pytest.raises(bm.Timeout):
            m.run_to_end(timeout=0.2)
        # The deadline is acted on within a tick, and the force-cancel is waited for.
        assert time.monotonic() - t0 < 5
        assert m.ended and "BLOCK_JOB_CANCELLED" in [e.type for e in m.events]


def test_run_to_end_a_stop_policy_ends_the_run_with_the_event(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 2 * MiB, seed=72)
    faults = [{"side": "target", "op": "write", "nth": 1, "error": "nospace"}]
    with bm.Mirror(src, dst, on_target_error="stop", faults=faults, guest_writes=False) as m:
        with pytest.raises(bm.IoError) as info:
            m.run_to_end()
        stop = info.value.event
        assert stop.type == "BLOCK_JOB_ERROR" and stop.action == "stop" and stop.error == "nospace"
        assert info.value.operation == "write" and info.value.offset == stop.offset
        assert m.ended


def test_the_cli_drives_the_mirror_through_its_public_api():
    import inspect

    from blockmirror import _cli_mirror, _demo

    for module in (_cli_mirror, _demo):
        assert "._native" not in inspect.getsource(module).replace("blockmirror._native", "")
