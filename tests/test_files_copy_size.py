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
