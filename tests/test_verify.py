"""`blockmirror.verify` and `blockmirror verify`: differing ranges found exactly, repaired,
refusals typed, exit codes 0/1/2."""

from __future__ import annotations

import json
import os

import pytest

import blockmirror
from blockmirror.cli import main

GiB = 1 << 30
MiB = 1 << 20


def sparse(path, length):
    with open(path, "wb") as f:
        f.truncate(length)


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_single_flipped_byte_in_a_1gib_sparse_target_is_found_and_repaired(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse(src, GiB)
    sparse(dst, GiB)
    for offset in (0, 300 * MiB + 12345, GiB - 4096):
        poke(src, offset, os.urandom(4096))
    # Make both sides hold the same data first, then flip one byte of the target.
    with open(src, "rb") as f:
        for offset in (0, 300 * MiB + 12345, GiB - 4096):
            f.seek(offset)
            poke(dst, offset, f.read(4096))
    assert blockmirror.verify(src, dst).equal
    flip = 700 * MiB + 777
    poke(dst, flip, b"\x01")
    report = blockmirror.verify(src, dst, granularity=64 << 10)
    assert not report.equal
    chunk = flip // (64 << 10) * (64 << 10)
    assert report.differing == [(chunk, chunk + (64 << 10))]
    assert report.differing_bytes == 64 << 10
    assert report.bytes_read < 64 * MiB  # the holes were not read
    repaired = blockmirror.verify(src, dst, granularity=64 << 10, repair=True)
    assert repaired.equal and repaired.repaired_bytes == 64 << 10 and repaired.still_differing == []
    assert blockmirror.verify(src, dst).equal
    with open(dst, "rb") as f:
        f.seek(flip)
        assert f.read(1) == b"\x00"


def test_ranges_merge_and_the_short_last_chunk_is_exact(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    length = 8 * MiB + 1000
    sparse(src, length)
    sparse(dst, length)
    poke(src, MiB, b"a")
    poke(dst, 2 * MiB + 1, b"b")
    poke(dst, length - 1, b"c")
    report = blockmirror.verify(src, dst)
    assert report.differing == [(MiB, 3 * MiB), (8 * MiB, length)]
    assert report.chunks == 9


def test_refusals_are_typed(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse(src, MiB)
    sparse(dst, 2 * MiB)
    with pytest.raises(blockmirror.InvalidArgument, match="bytes"):
        blockmirror.verify(src, dst)
    with pytest.raises(blockmirror.InvalidArgument, match="granularity"):
        blockmirror.verify(src, src, granularity=1000)
    with pytest.raises(blockmirror.IoError):
        blockmirror.verify(tmp_path / "missing", dst)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse(src, 4 * MiB)
    sparse(dst, 4 * MiB)
    assert main(["verify", str(src), str(dst)]) == 0
    poke(dst, 3 * MiB, b"x")
    capsys.readouterr()
    assert main(["verify", str(src), str(dst), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["differing"] == [[3 * MiB, 4 * MiB]] and out["equal"] is False
    assert main(["verify", str(src), str(dst), "--repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repaired_bytes"] == MiB
    assert main(["verify", str(src), str(tmp_path / "missing")]) == 2
    assert main(["verify", str(src), str(dst), "--granularity", "1000"]) == 2


def test_cli_help_states_the_exit_codes(capsys):
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "1    the images differ" in out and "2    an error" in out


def test_online_verify_while_the_guest_writes_finds_no_false_mismatch_and_a_real_one(tmp_path):
    import random
    import threading

    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    with open(src, "wb") as f:
        f.write(random.Random(3).randbytes(32 * MiB))
    with blockmirror.Mirror(src, dst, granularity=64 << 10) as m:
        m.wait_ready(timeout=60)
        stop = threading.Event()
        written = []

        def guest():
            rng = random.Random(4)
            while not stop.is_set():
                m.write(rng.randrange(0, 32 * MiB // 4096) * 4096, rng.randbytes(4096))
                written.append(1)

        writer = threading.Thread(target=guest)
        writer.start()
        try:
            # At least three verifies, and more until one has overlapped a guest write
            # (one can be over between two writes); none may find a difference.
            overlapped = 0
            for attempt in range(500):
                before = len(written)
                report = m.verify(granularity=256 << 10)
                assert report.differing == [], report
                assert report.verified_bytes > 0
                overlapped += len(written) > before
                if attempt >= 2 and overlapped:
                    break
                assert writer.is_alive()
        finally:
            stop.set()
            writer.join()
        assert overlapped, "no verify overlapped a guest write"
        # A difference made behind the mirror's back, in a chunk nobody writes now.
        # The last writes' chunks are copied soon: wait until every segment is compared.
        for _ in range(1000):
            quiet = m.verify(granularity=256 << 10)
            assert quiet.equal, quiet
            if not quiet.skipped:
                break
        assert quiet.skipped == [] and quiet.verified_bytes == 32 * MiB
        poke(dst, 5 * MiB + 3, b"\xff" if open(src, "rb").read()[5 * MiB + 3] != 0xFF else b"\x00")
        found = m.verify(granularity=256 << 10)
        assert found.differing == [(5 * MiB, 5 * MiB + (256 << 10))]
        # Repair: the job copies the segment again from the source.
        repaired = m.verify(granularity=256 << 10, repair=True)
        assert repaired.repaired == repaired.differing == found.differing, repaired
        for _ in range(1000):
            after = m.verify(granularity=256 << 10)
            if after.equal and not after.skipped:
                break
        assert after.equal and after.verified_bytes == 32 * MiB, after
        m.cancel(force=True)
