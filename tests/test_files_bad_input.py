"""Bad input to the file backend gives a clear, typed exception, writes nothing, and leaves
the source's hash unchanged."""

from __future__ import annotations

import errno
import os

import pytest

import blockmirror as bm
from _files_util import MiB, random_file, sha256, tmpfs


@pytest.fixture
def src(tmp_path):
    path = str(tmp_path / "src.img")
    random_file(path, 2 * MiB, seed=40)
    return path


@pytest.fixture
def src_hash(src):
    return sha256(src)


def test_missing_source(tmp_path):
    with pytest.raises(bm.IoError) as info:
        bm.mirror(str(tmp_path / "nope.img"), str(tmp_path / "dst.img"))
    assert info.value.errno == errno.ENOENT and info.value.operation == "open"
    assert isinstance(info.value, FileNotFoundError) or isinstance(info.value, OSError)
    assert not (tmp_path / "dst.img").exists()


def test_target_is_a_directory(tmp_path, src, src_hash):
    with pytest.raises(bm.InvalidArgument, match="directory"):
        bm.mirror(src, str(tmp_path))
    assert sha256(src) == src_hash


def test_existing_target_needs_reuse(tmp_path, src, src_hash):
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"keep me")
    with pytest.raises(bm.InvalidArgument, match="reuse"):
        bm.mirror(src, str(dst))
    assert dst.read_bytes() == b"keep me"
    assert sha256(src) == src_hash


def test_reused_target_of_another_size(tmp_path, src, src_hash):
    dst = tmp_path / "dst.img"
    random_file(str(dst), MiB, seed=41)
    before = sha256(str(dst))
    with pytest.raises(bm.InvalidArgument, match="bytes but the source is"):
        bm.mirror(src, str(dst), reuse=True)
    assert sha256(str(dst)) == before
    assert sha256(src) == src_hash


def test_same_file_as_source_and_target(src, src_hash):
    with pytest.raises(bm.InvalidArgument, match="same file"):
        bm.mirror(src, src, reuse=True)
    assert sha256(src) == src_hash


def test_read_only_target_location(tmp_path, src, src_hash):
    with tmpfs(str(tmp_path / "ro"), "1m", read_only=True) as mnt:
        if mnt is None:
            pytest.skip("cannot mount a read-only tmpfs here (needs root)")
        with pytest.raises(bm.IoError) as info:
            bm.mirror(src, os.path.join(mnt, "dst.img"))
        assert info.value.errno == errno.EROFS
    assert sha256(src) == src_hash


@pytest.mark.parametrize("options,match", [
    ({"granularity": 3000}, "granularity"),
    ({"granularity": 256}, "granularity"),
    ({"on_source_error": "explode"}, "error policy"),
    ({"on_target_error": "retry"}, "error policy"),
    ({"sync": "partial"}, "sync mode"),
    ({"copy_mode": "fast"}, "copy mode"),
    ({"max_io": 1000}, "max_io"),
    ({"faults": [{"side": "middle"}]}, "fault side"),
    ({"faults": [{"op": "read", "error": "bogus"}]}, "fault error"),
    ({"faults": [{"nth": 0}]}, "nth"),
    ({"faults": [{"when": "now"}]}, "unknown fault key"),
])
def test_bad_options_raise_before_any_write(tmp_path, src, src_hash, options, match):
    dst = tmp_path / "dst.img"
    with pytest.raises(bm.InvalidArgument, match=match) as info:
        bm.mirror(src, str(dst), **options)
    assert isinstance(info.value, ValueError)
    assert not dst.exists()
    assert sha256(src) == src_hash


def test_guest_io_out_of_range_and_after_the_end(tmp_path, src, src_hash):
    with bm.Mirror(src, str(tmp_path / "dst.img")) as m:
        with pytest.raises(bm.InvalidArgument):
            m.write(2 * MiB - 2, b"abc")
        with pytest.raises(bm.InvalidArgument):
            m.read(2 * MiB, 1)
        with pytest.raises(bm.InvalidArgument):
            m.wait_ready(timeout=-1)
        # A negative offset is out of range like any other: InvalidArgument, a ValueError.
        with pytest.raises(bm.InvalidArgument, match="offset"):
            m.write(-1, b"a")
        with pytest.raises(bm.InvalidArgument, match="offset"):
            m.read(-1, 1)
        with pytest.raises(bm.InvalidArgument, match="length"):
            m.read(0, -1)
        with pytest.raises(bm.InvalidArgument, match="offset"):
            m.write(1 << 64, b"a")
        m.wait_ready(timeout=30)
        m.cancel(timeout=30)
        for verb in (m.complete, m.pause, m.resume, lambda: m.cancel(force=True), lambda: m.set_speed(1)):
            with pytest.raises(bm.JobStateError):
                verb()
    with pytest.raises(bm.JobStateError):
        m.write(0, b"closed")
    with pytest.raises(bm.JobStateError):
        m.read(0, 1)
    assert sha256(src) == src_hash


@pytest.mark.parametrize("data", [5, [1, 2, 3], "text", None])
def test_guest_write_takes_only_bytes_like_objects(tmp_path, src, data):
    dst = str(tmp_path / "dst.img")
    with bm.Mirror(src, dst) as m:
        m.wait_ready(timeout=30)
        before = m.read(0, 8)
        with pytest.raises(TypeError, match="bytes-like"):
            m.write(0, data)
        assert m.read(0, 8) == before
        m.write(0, bytearray(b"ok"))
        m.write(2, memoryview(b"ok"))
        assert m.read(0, 4) == b"okok"
        m.cancel(force=True, timeout=30)


def test_complete_before_ready_is_refused(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 16 * MiB, seed=42)
    with bm.Mirror(src, str(tmp_path / "dst.img"), speed=4 * MiB) as m:
        with pytest.raises(bm.JobStateError):
            m.complete()
        m.cancel(force=True, timeout=30)
