"""Crash-safe mirroring: a mirror with a persistent bitmap, killed with SIGKILL at random
moments while a guest writes through ``Mirror.write`` (in a child process), resumes and
completes with the target equal to the source, copying again only what its bitmap marks.
Also: the refusals (an existing bitmap without resume, resume without a bitmap, a damaged
or foreign bitmap), and the CLI's ``--bitmap`` / ``--resume``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time

import pytest

import blockmirror
from blockmirror.cli import main

MiB = 1 << 20
GRANULARITY = 64 << 10
LENGTH = 32 * MiB
HOT = 2 * MiB

# The child: starts (or resumes) a mirror with a bitmap and writes random 4 KiB blocks
# through it, printing one line per write that returned; the parent kills it after a
# random number of lines.
CHILD = textwrap.dedent("""
    import os, random, sys
    import blockmirror
    src, dst, resume, seed, speed, span = (sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]),
                                           int(sys.argv[5]), int(sys.argv[6]))
    rng = random.Random(seed)
    m = blockmirror.Mirror(src, dst, granularity=65536, bitmap=True, resume=resume,
                           bitmap_interval=0.02, bitmap_granularity=65536, speed=speed)
    print("started", flush=True)
    while True:
        offset = rng.randrange(0, span // 4096) * 4096
        m.write(offset, rng.randbytes(4096))
        current, total = m.progress
        print(total - current, flush=True)
""")


def make_source(path, length=LENGTH):
    rng = random.Random(7)
    with open(path, "wb") as f:
        f.write(rng.randbytes(length))


def generation(dst):
    return blockmirror.read_bitmap(str(dst) + ".bmbitmap")["generation"]


def run_and_kill(src, dst, resume, seed, lines, speed, settle=False, span=LENGTH):
    """Runs the child until it printed `lines` write lines (or died), then SIGKILLs it;
    returns the job's remaining bytes in the child's last line.
    With `settle`, the lines are counted only once the bitmap file was written twice by
    this child (a clearing round has run, so the file reflects this child's copying).
    The child writes inside the first `span` bytes."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst), "1" if resume else "0",
                              str(seed), str(speed), str(span)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        first = child.stdout.readline()
        assert first == "started\n", child.stderr.read()
        if settle:
            start = generation(dst)
            for _ in range(100_000):
                if generation(dst) >= start + 2 or not child.stdout.readline():
                    break
        remaining = None
        for _ in range(lines):
            line = child.stdout.readline()
            if not line:
                break
            remaining = int(line)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -9
    return remaining


def covered(ranges, outer):
    """Whether every range of `ranges` lies inside one of `outer` (both sorted, merged)."""
    return all(any(o[0] <= r[0] and r[1] <= o[1] for o in outer) for r in ranges)


def resume_and_complete(src, dst):
    """Resumes, completes; returns (bytes the bitmap marked, bytes copied)."""
    marked = blockmirror.read_bitmap(str(dst) + ".bmbitmap")["dirty_bytes"]
    with blockmirror.Mirror(src, dst, granularity=GRANULARITY, resume=True, bitmap_granularity=GRANULARITY) as m:
        m.wait_ready(timeout=120)
        result = m.complete(timeout=120)
        assert result.pivoted
        # Removed by the switch-over itself, before the guest moved to the target.
        assert not os.path.exists(str(dst) + ".bmbitmap")
        stats = m.stats()
    copied = stats["bytes_written"] + stats["bytes_zeroed"]
    assert stats["initial_total"] == marked  # only the marked chunks were selected
    assert not os.path.exists(str(dst) + ".bmbitmap")  # completed: nothing left to resume
    return marked, copied


@pytest.mark.parametrize("round_", range(5))
def test_kill_9_at_random_moments_then_resume_gives_the_source(tmp_path, round_):
    """Ten SIGKILLs per round (fifty over the five rounds) of a child writing through
    Mirror.write. After each kill every differing chunk is marked in the file; after the
    last, resume and complete: target == source, the resume copies only what the file
    marks, and that stays within the job's backlog plus one clearing round's lag."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_source(src)
    rng = random.Random(1000 + round_)
    for kill in range(10):
        # A slow copy (the job's speed limit) so kills land before READY as well as after.
        speed = rng.choice([4 * MiB, 16 * MiB, 0])
        # The last kill comes after a clearing round, with the guest writing a hot region
        # (as guests do), so what the file marks can be compared with the job's backlog.
        last = kill == 9
        remaining = run_and_kill(src, dst, resume=kill > 0, seed=rng.randrange(1 << 30),
                                 lines=rng.randrange(1, 200), speed=4 * MiB if last else speed, settle=last,
                                 span=HOT if last else LENGTH)
        # The crash-safety property itself: every chunk that differs is marked.
        info = blockmirror.read_bitmap(str(dst) + ".bmbitmap")
        differing = blockmirror.verify(src, dst, granularity=GRANULARITY).differing
        assert covered(differing, info["ranges"]), (kill, differing, info["ranges"])
    marked, copied = resume_and_complete(src, dst)
    assert copied <= marked
    # Marked beyond the job's backlog at the kill: the hot region the guest keeps writing
    # (the activity window keeps it marked) and what was copied since the last clearing
    # round and its target flush (at 4 MiB/s: 8 MiB allows two seconds for a round and its
    # flush on a loaded machine; the disk is 32 MiB).
    if remaining is not None:
        assert marked <= remaining + HOT + 8 * MiB, (marked, remaining)
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()


def test_resume_after_a_clean_cancel_copies_only_what_was_written(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_source(src)
    m = blockmirror.Mirror(src, dst, granularity=GRANULARITY, bitmap=True, bitmap_interval=0.02,
                           bitmap_granularity=GRANULARITY)
    m.wait_ready(timeout=60)
    # Wait for the condition: a clearing round after the copy emptied the file.
    bitmap = str(dst) + ".bmbitmap"
    for _ in range(6000):
        if blockmirror.read_bitmap(bitmap)["dirty_bytes"] == 0:
            break
        time.sleep(0.01)
    assert blockmirror.read_bitmap(bitmap)["dirty_bytes"] == 0
    for i in range(3):
        m.write(i * 5 * MiB + 100, b"z" * 10)
    assert blockmirror.read_bitmap(bitmap)["dirty_bytes"] > 0  # marked before write() returned
    m.cancel()
    m.close()
    marked, copied = resume_and_complete(src, dst)
    # Only the three chunks written since the file was empty can be marked (fewer if a
    # round cleared them after their copy, before the cancel).
    assert marked <= 3 * GRANULARITY
    assert copied == marked
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()


def test_refusals(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_source(src, MiB)
    m = blockmirror.Mirror(src, dst, bitmap=True)
    m.cancel(force=True)
    m.close()
    bitmap = str(dst) + ".bmbitmap"
    for kwargs in ({"bitmap": True}, {}):
        with pytest.raises(blockmirror.BitmapError, match="resume") as info:
            blockmirror.Mirror(src, dst, reuse=True, **kwargs)
        assert info.value.reason == "exists"
    other = tmp_path / "other.img"
    make_source(other, MiB)
    with pytest.raises(blockmirror.BitmapError) as info:
        blockmirror.Mirror(other, dst, resume=True)
    assert info.value.reason == "other_source"
    with pytest.raises(blockmirror.BitmapError) as info:
        blockmirror.Mirror(src, dst, resume=True, bitmap_granularity=2 * MiB)
    assert info.value.reason == "other_granularity"
    with pytest.raises(blockmirror.InvalidArgument, match="granularity"):
        blockmirror.Mirror(src, dst, resume=True, bitmap_granularity=4096)
    with open(bitmap, "r+b") as f:
        f.truncate(64)
    with pytest.raises(blockmirror.BitmapError) as info:
        blockmirror.Mirror(src, dst, resume=True)
    assert info.value.reason == "truncated"
    os.remove(bitmap)
    with pytest.raises(blockmirror.BitmapError) as info:
        blockmirror.Mirror(src, dst, resume=True)
    assert info.value.reason == "missing"
    with pytest.raises(blockmirror.InvalidArgument, match="bitmap path"):
        blockmirror.Mirror(src, "nbd://127.0.0.1:1/x", resume=True)


def test_cli_keeps_the_target_and_resumes(tmp_path, capsys):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_source(src, 4 * MiB)
    # A run that times out keeps DST and its bitmap and says how to resume.
    code = main(["mirror", str(src), str(dst), "--bitmap", str(dst) + ".bmbitmap", "--speed", "1M",
                 "--timeout", "0.5", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--resume" in err and dst.exists() and os.path.exists(str(dst) + ".bmbitmap")
    assert main(["mirror", str(src), str(dst), "--reuse", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["mirror", str(src), str(dst), "--resume", "--quiet"]) == 0
    assert not os.path.exists(str(dst) + ".bmbitmap")
    assert blockmirror.verify(src, dst).equal


def test_an_old_copy_of_the_bitmap_is_refused_by_the_generation_remembered(tmp_path, capsys):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    bmp = str(dst) + ".bmbitmap"
    make_source(src, 4 * MiB)
    with blockmirror.Mirror(src, dst, bitmap=True, speed=1 << 20, bitmap_interval=0.02) as m:
        old_generation = m.bitmap_generation
        assert old_generation is not None and old_generation >= 1
        with open(bmp, "rb") as f:
            old_copy = f.read()
        # The cleaning rounds clear what the job copies: the file moves on.
        for _ in range(100_000):
            if m.bitmap_generation > old_generation:
                break
            time.sleep(0.001)
        m.cancel(force=True)
    newest = blockmirror.read_bitmap(bmp)["generation"]
    assert newest > old_generation
    # Resuming with the generation remembered accepts the file it came from...
    with blockmirror.Mirror(src, dst, resume=True, bitmap_min_generation=newest, speed=1 << 20) as m:
        assert m.bitmap_generation >= newest
        m.cancel(force=True)
    # ...and refuses an older copy put in its place, which would skip chunks written since.
    with open(bmp, "wb") as f:
        f.write(old_copy)
    with pytest.raises(blockmirror.BitmapError) as refused:
        blockmirror.Mirror(src, dst, resume=True, bitmap_min_generation=newest)
    assert refused.value.reason == "stale_generation"
    code = main(["mirror", str(src), str(dst), "--resume", "--bitmap-generation", str(newest), "--quiet"])
    assert code == 2 and "older than the expected" in capsys.readouterr().err
    # The command line prints the generation to pass back when it keeps a bitmap.
    os.remove(bmp)
    code = main(["mirror", str(src), str(dst), "--reuse", "--bitmap", bmp, "--speed", "1M", "--timeout", "0.3",
                 "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    kept = blockmirror.read_bitmap(bmp)["generation"]
    assert f"--resume --bitmap-generation {kept}" in err, err


def test_kill_9_of_the_mirror_command_then_resume(tmp_path):
    """`blockmirror mirror --bitmap` killed five times at random points of its progress
    (counted in its --json lines); each run resumes; the last completes: DST == SRC, and
    the resumed runs together copied little more than the disk once."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_source(src)
    bitmap = str(dst) + ".bmbitmap"
    rng = random.Random(5)
    base = [sys.executable, "-m", "blockmirror", "mirror", str(src), str(dst), "--json",
            "--progress-interval", "0.02", "--speed", "2M", "--bitmap", bitmap]
    for kill in range(5):
        cmd = base + (["--resume"] if kill else [])
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(rng.randrange(1, 10)):
            if not child.stdout.readline():
                break
        child.kill()
        child.wait()
        child.stdout.close()
        assert child.returncode == -9
    marked = blockmirror.read_bitmap(bitmap)["dirty_bytes"]
    assert main(["mirror", str(src), str(dst), "--resume", "--quiet"]) == 0
    assert not os.path.exists(bitmap)
    assert marked <= LENGTH
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()


def test_mirror_call_keeps_a_failed_target_with_its_bitmap_and_resumes(tmp_path):
    # The one-shot call with a bitmap: a failure keeps the partial target (it is what the
    # file describes), and the resumed call completes it.
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_source(src)
    fault = [{"side": "target", "op": "write", "nth": 3, "error": "io"}]
    with pytest.raises(blockmirror.IoError):
        blockmirror.mirror(src, dst, bitmap=True, faults=fault)
    assert os.path.exists(dst) and os.path.exists(dst + ".bmbitmap")
    result = blockmirror.mirror(src, dst, resume=True)
    assert result.pivoted and not os.path.exists(dst + ".bmbitmap")
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()
