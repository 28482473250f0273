"""A Mirror's lifetime: one dropped without close() frees its threads and files."""

from __future__ import annotations

import gc
import os

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
