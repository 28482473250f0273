"""Concurrent overlapping guest writes on a live mirror: the order in which they reach the
source and the order in which they reach the target must agree, whatever the thread timing.

Rounds of K threads, released together by a barrier, write different data to the same
range (whole chunks, or pieces inside one chunk). After the writers stop, ``complete()``
must leave a target equal to the source, chunk by chunk. Before guest writes owned their
range ahead of the source write, write-blocking mode ended with hundreds of chunks of 2048
differing here."""

from __future__ import annotations

import threading
from typing import List

import pytest

import blockmirror as bm
from _files_util import MiB, random_file

CHUNK = 4096
SIZE = 8 * MiB
ROUNDS = 120


def _differing_chunks(src: str, dst: str, chunk: int) -> List[int]:
    with open(src, "rb") as a, open(dst, "rb") as b:
        differ = []
        index = 0
        while True:
            x, y = a.read(chunk), b.read(chunk)
            if not x and not y:
                return differ
            if x != y:
                differ.append(index)
            index += 1


def _race(m: bm.Mirror, threads: int, offsets_of, piece: int) -> None:
    """ROUNDS rounds; in each, every thread writes its own byte pattern to the same ranges
    at the same moment (a barrier releases them together)."""
    barrier = threading.Barrier(threads)
    errors: List[BaseException] = []

    def writer(index: int) -> None:
        try:
            for round_ in range(ROUNDS):
                data = bytes([(round_ * threads + index) % 251 + 1]) * piece
                barrier.wait(timeout=60)
                for offset in offsets_of(round_):
                    m.write(offset, data)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            barrier.abort()

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("mode", ["write-blocking", "background"])
@pytest.mark.parametrize("threads", [2, 4])
def test_overlapping_whole_chunk_writes_reach_the_target_in_source_order(tmp_path, mode, threads, direct):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, SIZE, seed=threads)
    with bm.Mirror(src, dst, copy_mode=mode, granularity=CHUNK, direct=direct) as m:
        m.wait_ready(timeout=120)
        # Each round writes 16 fresh whole chunks (64 KiB), all threads the same range.
        _race(m, threads, lambda r: [r * 16 * CHUNK], 16 * CHUNK)
        result = m.complete(timeout=120)
    assert result.pivoted
    assert _differing_chunks(src, dst, CHUNK) == []


@pytest.mark.parametrize("mode", ["write-blocking", "background"])
def test_overlapping_pieces_inside_one_chunk_reach_the_target_in_source_order(tmp_path, mode):
    chunk = 64 << 10
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, SIZE, seed=7)
    with bm.Mirror(src, dst, copy_mode=mode, granularity=chunk) as m:
        m.wait_ready(timeout=120)
        # Every thread writes the same 2 KiB pieces of one fresh chunk per round.
        pieces = lambda r: [r * chunk + i * 2048 for i in range(0, 32, 3)]
        _race(m, 3, pieces, 2048)
        result = m.complete(timeout=120)
    assert result.pivoted
    assert _differing_chunks(src, dst, chunk) == []
