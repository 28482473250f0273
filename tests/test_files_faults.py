"""Faults: a real ENOSPC on a small tmpfs, and injected EIO/ENOSPC under every policy.
Every run that completes must leave target == source (no corruption)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

import blockmirror as bm
from _files_util import MiB, make_image, random_file, sha256, tmpfs


@pytest.fixture
def small_fs(tmp_path):
    with tmpfs(str(tmp_path / "small"), "4m") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root): the real-ENOSPC case is not run")
        yield mnt


def test_real_enospc_fails_the_job_under_report(tmp_path, small_fs):
    src = str(tmp_path / "src.img")
    random_file(src, 8 * MiB, seed=30)
    before = sha256(src)
    with pytest.raises(bm.IoError) as info:
        bm.mirror(src, os.path.join(small_fs, "dst.img"))
    assert info.value.errno == errno.ENOSPC
    assert info.value.operation == "write"
    assert info.value.offset is not None and info.value.offset >= 0
    assert isinstance(info.value, OSError)
    assert sha256(src) == before


def test_real_enospc_stops_then_resumes_after_growing_the_fs(tmp_path, small_fs):
    src, dst = str(tmp_path / "src.img"), os.path.join(small_fs, "dst.img")
    random_file(src, 8 * MiB, seed=31)
    with bm.Mirror(src, dst, on_target_error="enospc") as m:
        it = m.iter_events(timeout=30)
        stop = next(e for e in it if e.type == "BLOCK_JOB_ERROR")
        assert stop.action == "stop" and stop.error == "nospace" and stop.operation == "write"
        # The operator makes room, then resumes.
        subprocess.run(["mount", "-o", "remount,size=32m", small_fs], check=True)
        deadline_status = m.status
        assert deadline_status in ("paused", "running")
        m.resume()
        m.wait_ready(timeout=60)
        m.complete(timeout=60)
    assert sha256(src) == sha256(dst)


def _run_mirror(tmp_path, faults, **opts):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, 8 * MiB, seed=32, mix=(0.7, 0.2))
    return src, dst, bm.Mirror(src, dst, faults=faults, max_in_flight=4, **opts)


@pytest.mark.parametrize("side,op,error,errno_", [
    ("source", "read", "io", errno.EIO),
    ("target", "write", "nospace", errno.ENOSPC),
    ("target", "write", "readonly", errno.EROFS),
    ("target", "flush", "io", errno.EIO),
])
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_report_fails_the_job_with_the_error(tmp_path, side, op, error, errno_, direct):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, 8 * MiB, seed=33, mix=(0.8, 0.0))
    before = sha256(src)
    fault = {"side": side, "op": op, "nth": 2 if op != "flush" else 1, "error": error}
    with pytest.raises(bm.IoError) as info:
        bm.mirror(src, dst, faults=[fault], direct=direct)
    assert info.value.errno == errno_
    assert info.value.operation == ("read" if side == "source" else "write")
    assert sha256(src) == before


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("side,op", [("source", "read"), ("target", "write"), ("target", "zero")])
def test_ignore_retries_and_converges(tmp_path, side, op, direct):
    # direct=True also covers the io_uring path's fault handling.
    faults = [{"side": side, "op": op, "nth": 1, "count": 3, "error": "io"}]
    src, dst, m = _run_mirror(tmp_path, faults, on_source_error="ignore", on_target_error="ignore",
                              direct=direct)
    with m:
        m.wait_ready(timeout=60)
        result = m.complete(timeout=60)
        assert m.stats()["injected_faults"] == 3
    errors = [e for e in result.events if e.type == "BLOCK_JOB_ERROR"]
    # Identical consecutive errors are one event with a count (a bounded event history).
    assert sum(e.count for e in errors) == 3 and all(e.action == "ignore" for e in errors)
    assert sha256(src) == sha256(dst)


@pytest.mark.parametrize("policy,error", [("stop", "io"), ("enospc", "nospace")])
@pytest.mark.parametrize("side", ["source", "target"])
def test_stop_pauses_until_resume(tmp_path, policy, error, side):
    op = "read" if side == "source" else "write"
    faults = [{"side": side, "op": op, "nth": 2, "error": error}]
    kw = {"on_source_error": policy} if side == "source" else {"on_target_error": policy}
    src, dst, m = _run_mirror(tmp_path, faults, **kw)
    with m:
        it = m.iter_events(timeout=30)
        err = next(e for e in it if e.type == "BLOCK_JOB_ERROR")
        assert err.action == "stop" and err.operation == op
        m.resume()
        m.wait_ready(timeout=60)
        m.complete(timeout=60)
    assert sha256(src) == sha256(dst)


def test_enospc_policy_reports_other_errors(tmp_path):
    src, dst, m = _run_mirror(tmp_path, [{"side": "target", "op": "write", "nth": 1, "error": "io"}],
                              on_target_error="enospc")
    with m:
        with pytest.raises(bm.IoError) as info:
            m.wait_ready(timeout=60)
        assert info.value.errno == errno.EIO
        assert [e.action for e in m.events if e.type == "BLOCK_JOB_ERROR"] == ["report"]


def test_mirror_function_raises_on_a_stop_policy(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 4 * MiB, seed=34)
    with pytest.raises(bm.IoError) as info:
        bm.mirror(src, dst, on_target_error="stop", timeout=60,
                  faults=[{"side": "target", "op": "write", "nth": 1, "error": "nospace"}])
    assert info.value.errno == errno.ENOSPC
