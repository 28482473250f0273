"""Copy sizes on real files: a `max_io` above half the buffer budget works without a
larger `buf_size` (copies are then half the budget), `max_io` has an upper bound, and a
speed-limited copy with a `max_io` of several slices' quota keeps to its rate."""

from __future__ import annotations

import os

import pytest

import blockmirror as bm
from _files_util import MiB, random_file, sha256


@pytest.mark.parametrize("direct", [False, True])
def test_a_max_io_above_the_buffer_budget_needs_no_larger_buf_size(tmp_path, direct):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 40 * MiB, seed=71)
    result = bm.mirror(src, dst, max_io=32 * MiB, direct=direct)
    assert sha256(dst) == sha256(src)
    assert result.bytes_copied == 40 * MiB


def test_max_io_is_bounded(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=72)
    with pytest.raises(bm.InvalidArgument, match="max_io"):
        bm.mirror(src, str(tmp_path / "dst.img"), max_io=128 * MiB)
    assert not os.path.exists(tmp_path / "dst.img")


def test_a_limited_copy_with_a_large_max_io_keeps_its_rate(tmp_path):
    # Copies are at most one slice's quota (speed / 10) under a limit, so a 4 MiB max_io
    # (five slices' worth here) does not make the copy overshoot.
    src = str(tmp_path / "src.img")
    size, speed = 16 * MiB, 8 * MiB
    random_file(src, size, seed=73)
    result = bm.mirror(src, str(tmp_path / "slow.img"), speed=speed, max_io=4 * MiB)
    # Every byte but the last slice's waits for its slice: at least (size - quota) / speed.
    earliest = (size - speed // 10) / speed
    assert result.seconds_to_ready >= earliest * 0.95, result
    assert result.seconds_to_ready < size / speed + 10, result


@pytest.mark.parametrize("options", [{}, {"offload": False}, {"direct": True}],
                         ids=["offload", "user-space", "direct"])
def test_long_copies_write_their_zero_pieces_as_zeroes(tmp_path, options):
    # 256 KiB segments of data, written zeroes and holes: a 4 MiB copy (the default)
    # spans all three kinds. Only the data is written; the zero pieces are punched on the
    # target, as copies the size of a segment would have done.
    from _files_util import allocated, make_image
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    data, zeros, _ = make_image(src, 64 * MiB, seed=74, segment=256 * 1024)
    result = bm.mirror(src, dst, **options)
    assert sha256(dst) == sha256(src)
    assert data <= result.bytes_written <= data + 64 * 1024, (result.bytes_written, data)
    assert result.bytes_zeroed >= zeros - 64 * 1024, (result.bytes_zeroed, zeros)
    assert allocated(dst) <= data + 2 * MiB


def test_zero_pieces_in_a_long_copy_are_found_at_any_copy_offset(tmp_path):
    # A zero MiB between data, at 1152 KiB: neither it nor the copy (from 128 KiB, after
    # the hole) is aligned to the 256 KiB pieces, which count from the disk's start. The
    # three whole pieces inside the zeroes (1280-2048 KiB) are found; the zero parts of the
    # pieces at either end are written with their data.
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    with open(src, "wb") as f:
        f.write(os.urandom(64 * 1024))
        f.truncate(128 * 1024)
        f.seek(128 * 1024)
        f.write(os.urandom(1 * MiB))
        f.write(bytes(MiB))          # allocated zeroes: 4 pieces of 256 KiB
        f.write(os.urandom(2 * MiB))
    result = bm.mirror(src, dst, offload=False)
    assert sha256(dst) == sha256(src)
    assert result.bytes_zeroed == 768 * 1024, result
    assert result.bytes_written == 64 * 1024 + 4 * MiB - 768 * 1024, result
