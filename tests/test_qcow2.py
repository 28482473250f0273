"""qcow2 sources, targets and backing chains, judged by QEMU's own tools: ``qemu-img compare``
(whole chain against the target's chain), ``qemu-img check`` on every qcow2 written,
``qemu-img info`` for the backing file and format, ``qemu-img map`` for what the target
allocates itself. Chains are built with ``qemu-img create -b`` and filled with ``qemu-io``
patterns at random offsets per layer."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from typing import Dict, List, Set, Tuple

import pytest

import blockmirror as bm

MiB = 1 << 20
KiB = 1 << 10
CLUSTER = 64 * KiB
SIZE = 16 * MiB


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required (CI installs qemu-utils)"
    return path


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def qemu_io(path: str, *commands: str, fmt: str = "qcow2") -> None:
    args = [_tool("qemu-io"), "-f", fmt]
    for c in commands:
        args += ["-c", c]
    run(*args, path)


def compare(a: str, b: str) -> None:
    out = subprocess.run([_tool("qemu-img"), "compare", "-U", a, b], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def check(path: str) -> None:
    out = subprocess.run([_tool("qemu-img"), "check", "-U", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No errors were found" in out.stdout, out.stdout


def info(path: str) -> Dict[str, object]:
    return json.loads(run(_tool("qemu-img"), "info", "-U", "--output=json", path))


def own_clusters(path: str) -> Set[int]:
    """The clusters ``path``'s top layer holds itself (data or zero clusters)."""
    entries = json.loads(run(_tool("qemu-img"), "map", "-U", "--output=json", path))
    held: Set[int] = set()
    for e in entries:
        if e["depth"] == 0 and (e["data"] or e["zero"]) and e.get("present", True):
            # A layer without a backing file reports unallocated ranges as depth 0 zero
            # too; those are not "present" in the top layer.
            held.update(range(e["start"] // CLUSTER, (e["start"] + e["length"]) // CLUSTER))
    return held


def allocated_in_top(path: str) -> Set[int]:
    """Clusters allocated in ``path``'s own layer, from a map that stops at the layer."""
    entries = json.loads(run(_tool("qemu-img"), "map", "-U", "--output=json", path))
    held: Set[int] = set()
    for e in entries:
        if e["depth"] == 0 and e["present"]:
            held.update(range(e["start"] // CLUSTER, (e["start"] + e["length"]) // CLUSTER))
    return held


def make_chain(tmp: str, layers: int = 3, seed: int = 1, size: int = SIZE) -> List[str]:
    """A chain of ``layers`` qcow2 images (base first), each with patterns (and one zero
    write in the upper layers) at random cluster-aligned and unaligned offsets."""
    rng = random.Random(seed)
    paths: List[str] = []
    for i in range(layers):
        path = os.path.join(tmp, f"layer{i}.qcow2")
        if paths:
            run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", paths[-1], "-F", "qcow2", path)
        else:
            run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", path, str(size))
        commands = []
        for _ in range(6):
            length = rng.choice([4 * KiB, CLUSTER, 300 * KiB, MiB])
            offset = rng.randrange(0, size - length) // 512 * 512
            commands.append(f"write -P 0x{0x10 * (i + 1) + rng.randrange(15):02x} {offset} {length}")
        if i:
            offset = rng.randrange(0, size - CLUSTER) // CLUSTER * CLUSTER
            commands.append(f"write -z {offset} {CLUSTER}")
        qemu_io(path, *commands)
        paths.append(path)
    return paths


@pytest.fixture
def chain(tmp_path) -> List[str]:
    return make_chain(str(tmp_path))


@pytest.mark.parametrize("target_format", ["qcow2", "raw"])
def test_full_makes_a_standalone_copy_of_the_whole_chain(chain, tmp_path, target_format):
    top = chain[-1]
    target = str(tmp_path / f"full.{target_format}")
    result = bm.mirror(top, target, target_format=target_format)
    assert result.pivoted
    compare(top, target)
    if target_format == "qcow2":
        check(target)
        assert "backing-filename" not in info(target)
    assert info(target)["format"] == target_format


def test_full_from_a_raw_source_onto_a_qcow2_target(tmp_path):
    source = str(tmp_path / "src.raw")
    with open(source, "wb") as f:
        f.truncate(SIZE)
    qemu_io(source, "write -P 0x5a 1M 3M", "write -P 0x5b 9M 64k", fmt="raw")
    target = str(tmp_path / "dst.qcow2")
    bm.mirror(source, target, target_format="qcow2")
    check(target)
    compare(source, target)
    # Only what holds data was allocated (the raw file's holes are not written).
    assert len(allocated_in_top(target)) * CLUSTER <= 4 * MiB + CLUSTER


def test_top_copies_only_the_top_layer_onto_a_target_with_the_same_backing(chain, tmp_path):
    top = chain[-1]
    target = str(tmp_path / "top.qcow2")
    bm.mirror(top, target, sync="top")
    check(target)
    compare(top, target)
    meta = info(target)
    assert meta["backing-filename"] == os.path.abspath(chain[-2])
    assert meta["backing-filename-format"] == "qcow2"
    assert allocated_in_top(target) == allocated_in_top(top)


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("sync", ["full", "top"])
def test_live_guest_writes_allocate_in_the_top_layer_and_are_mirrored(chain, tmp_path, sync, copy_mode):
    top = chain[-1]
    before = allocated_in_top(top)
    target = str(tmp_path / "live.qcow2")
    rng = random.Random(7)
    written: Set[int] = set()
    with bm.Mirror(top, target, sync=sync, copy_mode=copy_mode) as m:
        for i in range(12):
            length = rng.choice([512, 4 * KiB, CLUSTER, 200 * KiB])
            offset = rng.randrange(0, SIZE - length) // 512 * 512
            m.write(offset, bytes([0xA0 + i]) * length)
            written.update(range(offset // CLUSTER, (offset + length - 1) // CLUSTER + 1))
        m.wait_ready()
        m.complete()
        # After the switch-over the guest reads through the target's chain.
        after = m.read(0, SIZE)
    # The source's metadata is on disk once the mirror is closed.
    assert after == _read_chain(top)
    check(top)
    check(target)
    compare(top, target)
    assert allocated_in_top(top) == before | written
    if sync == "top":
        assert allocated_in_top(target) == before | written
        assert info(target)["backing-filename"] == os.path.abspath(chain[-2])


def _read_chain(path: str) -> bytes:
    raw = path + ".flat"
    run(_tool("qemu-img"), "convert", "-U", "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        data = f.read()
    os.unlink(raw)
    return data


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
def test_none_copies_only_new_writes_onto_a_target_backed_by_the_source(chain, tmp_path, copy_mode):
    top = chain[-1]
    target = str(tmp_path / "none.qcow2")
    rng = random.Random(11)
    written: Set[int] = set()
    with bm.Mirror(top, target, sync="none", copy_mode=copy_mode) as m:
        for i in range(10):
            # Unaligned writes: the target must fill the rest of each cluster from the source.
            length = rng.choice([512, 3 * KiB, 70 * KiB])
            offset = rng.randrange(0, SIZE - length) // 512 * 512
            m.write(offset, bytes([0xC0 + i]) * length)
            written.update(range(offset // CLUSTER, (offset + length - 1) // CLUSTER + 1))
        m.wait_ready()
        m.complete()
        after = m.read(0, SIZE)
        # After the switch-over, guest writes land on the target only.
        m.write(5 * MiB + 100, b"\xee" * 1000)
    check(top)
    check(target)
    meta = info(target)
    assert meta["backing-filename"] == os.path.abspath(top)
    assert meta["backing-filename-format"] == "qcow2"
    assert after == _read_chain(top)
    flat = _read_chain(target)
    expected = bytearray(after)
    expected[5 * MiB + 100:5 * MiB + 1100] = b"\xee" * 1000
    assert flat == bytes(expected)
    # The target holds nothing of the source's old data beyond the clusters written.
    assert allocated_in_top(target) == written | {(5 * MiB) // CLUSTER}


def test_reuse_top_needs_the_same_backing_file(chain, tmp_path):
    top = chain[-1]
    good = str(tmp_path / "good.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", chain[-2], "-F", "qcow2", good)
    bm.mirror(top, good, sync="top", reuse=True)
    compare(top, good)
    check(good)
    wrong = str(tmp_path / "wrong.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", chain[0], "-F", "qcow2", wrong)
    with pytest.raises(bm.ImageError) as exc:
        bm.mirror(top, wrong, sync="top", reuse=True)
    assert exc.value.kind == "wrong_backing"


def test_three_layer_chain_opens_every_layer_once(chain, tmp_path):
    target = str(tmp_path / "t.qcow2")
    with bm.Mirror(chain[-1], target) as m:
        assert m.length == SIZE
        m.wait_ready()
        m.complete()
    compare(chain[-1], target)


# -- refusals: typed errors before anything is written -----------------------------------

def _refused(source: str, target: str, kind: str, **kwargs) -> None:
    existed = os.path.exists(target)
    before = open(target, "rb").read() if existed else None
    with pytest.raises(bm.ImageError) as exc:
        bm.mirror(source, target, **kwargs)
    assert exc.value.kind == kind, str(exc.value)
    assert isinstance(exc.value, bm.InvalidArgument)
    if existed:
        assert open(target, "rb").read() == before, "a refused target was written"
    else:
        assert not os.path.exists(target), "a refused target was left behind"


def test_missing_backing_file_is_refused(chain, tmp_path):
    os.rename(chain[0], chain[0] + ".gone")
    _refused(chain[-1], str(tmp_path / "t.qcow2"), "missing_backing")


def test_unreadable_backing_file_is_refused(chain, tmp_path):
    # A directory in the backing file's place (root reads any file, so no chmod test).
    os.rename(chain[0], chain[0] + ".moved")
    os.mkdir(chain[0])
    _refused(chain[-1], str(tmp_path / "t.qcow2"), "unreadable_backing")


def test_format_mismatch_is_refused(tmp_path):
    raw = str(tmp_path / "disk.raw")
    with open(raw, "wb") as f:
        f.write(b"\x01" * MiB)
    _refused(raw, str(tmp_path / "t.qcow2"), "format_mismatch", format="qcow2")
    # A backing format in the header that is not the file's.
    top = str(tmp_path / "over.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", top)
    run(_tool("qemu-img"), "rebase", "-q", "-u", "-b", raw, "-F", "qcow2", top)
    _refused(top, str(tmp_path / "t2.qcow2"), "format_mismatch")


def test_corrupt_header_is_refused(tmp_path):
    bad = str(tmp_path / "bad.qcow2")
    with open(bad, "wb") as f:
        f.write(b"QFI\xfb" + b"\xff" * 4092)
    _refused(bad, str(tmp_path / "t.qcow2"), "corrupt")


def test_backing_loop_is_refused(tmp_path):
    a, b = str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", a, str(MiB))
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", a, "-F", "qcow2", b)
    run(_tool("qemu-img"), "rebase", "-q", "-u", "-b", b, "-F", "qcow2", a)
    _refused(b, str(tmp_path / "t.qcow2"), "backing_loop")


def test_a_target_in_the_source_chain_is_refused(chain):
    _refused(chain[-1], chain[0], "target_in_chain", reuse=True)


def test_none_onto_a_new_raw_target_is_refused(chain, tmp_path):
    _refused(chain[-1], str(tmp_path / "t.raw"), "needs_backing_target", sync="none",
             target_format="raw")


def test_none_onto_an_existing_target_needs_the_source_as_backing(chain, tmp_path):
    target = str(tmp_path / "t.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", chain[-2], "-F", "qcow2", target)
    _refused(chain[-1], target, "wrong_backing", sync="none", reuse=True)
    os.unlink(target)
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", chain[-1], "-F", "qcow2", target)
    bm.mirror(chain[-1], target, sync="none", reuse=True)
    compare(chain[-1], target)


def test_an_image_in_use_is_refused(chain, tmp_path):
    # qemu-io holds the image's write lock while it waits on its stdin.
    holder = subprocess.Popen([_tool("qemu-io"), "-f", "qcow2", chain[-1]], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        holder.stdin.write(b"write -P 0x77 0 4k\n")
        holder.stdin.flush()
        assert b"wrote" in holder.stdout.readline() + holder.stdout.readline()
        with pytest.raises(bm.IoError) as exc:
            bm.mirror(chain[-1], str(tmp_path / "t.qcow2"))
        assert exc.value.operation == "lock"
    finally:
        holder.stdin.close()
        holder.wait()


def test_a_backing_file_in_use_is_refused_and_locked_while_mirroring(chain, tmp_path):
    base = chain[0]
    holder = subprocess.Popen([_tool("qemu-io"), "-f", "qcow2", base], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        holder.stdin.write(b"write -P 0x77 0 4k\n")
        holder.stdin.flush()
        assert b"wrote" in holder.stdout.readline() + holder.stdout.readline()
        with pytest.raises(bm.IoError) as exc:
            bm.mirror(chain[-1], str(tmp_path / "t.qcow2"))
        assert exc.value.operation == "lock"
    finally:
        holder.stdin.close()
        holder.wait()
    # While a mirror runs, a writer of the base is refused (QEMU's own lock check).
    with bm.Mirror(chain[-1], str(tmp_path / "t2.qcow2"), speed=1) as m:
        out = subprocess.run([_tool("qemu-io"), "-f", "qcow2", "-c", "write 0 4k", base],
                             capture_output=True, text=True)
        assert out.returncode != 0 and "lock" in (out.stdout + out.stderr).lower(), out
        m.cancel(force=True)


def test_unknown_format_name_is_refused(chain, tmp_path):
    with pytest.raises(bm.InvalidArgument):
        bm.mirror(chain[-1], str(tmp_path / "t.qcow2"), format="vmdk")


# -- a sparse image copies only what it allocates ----------------------------------------

def test_a_sparse_1gib_image_copies_only_its_allocated_percent(tmp_path):
    size = 1 << 30
    source = str(tmp_path / "sparse.qcow2")
    run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", source, str(size))
    rng = random.Random(3)
    allocated = set()
    commands = []
    while len(allocated) * CLUSTER < size // 100:
        cluster = rng.randrange(size // CLUSTER)
        if cluster not in allocated:
            allocated.add(cluster)
            commands.append(f"write -P 0x{rng.randrange(1, 256):02x} {cluster * CLUSTER} {CLUSTER}")
    for i in range(0, len(commands), 200):
        qemu_io(source, *commands[i:i + 200])
    target = str(tmp_path / "copy.qcow2")
    result = bm.mirror(source, target)
    assert result.bytes_read == len(allocated) * CLUSTER
    assert result.bytes_written == len(allocated) * CLUSTER
    check(target)
    compare(source, target)
    assert allocated_in_top(target) == allocated


# -- the command line ---------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    import sys
    return subprocess.run([sys.executable, "-m", "blockmirror", "mirror", "--quiet", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_mirrors_qcow2_with_probed_and_forced_formats(chain, tmp_path):
    top = chain[-1]
    out = _cli("--sync", "top", top, str(tmp_path / "top.qcow2"))
    assert out.returncode == 0, out.stderr
    compare(top, str(tmp_path / "top.qcow2"))
    assert info(str(tmp_path / "top.qcow2"))["backing-filename"] == os.path.abspath(chain[-2])
    out = _cli("--target-format", "raw", top, str(tmp_path / "flat.raw"))
    assert out.returncode == 0, out.stderr
    compare(top, str(tmp_path / "flat.raw"))
    out = _cli("--format", "qcow2", str(tmp_path / "flat.raw"), str(tmp_path / "x.qcow2"))
    assert out.returncode == 2
    assert "is not a qcow2 image" in out.stderr
    assert not os.path.exists(tmp_path / "x.qcow2")


# -- raw and qcow2 on either side, with live guest writes ---------------------------------

def _raw_copy_of(chain_top: str, tmp_path) -> str:
    raw = str(tmp_path / "src.raw")
    run(_tool("qemu-img"), "convert", "-U", "-O", "raw", chain_top, raw)
    return raw


def _live_writes(m: "bm.Mirror", seed: int) -> None:
    rng = random.Random(seed)
    for i in range(8):
        length = rng.choice([512, 5 * KiB, 100 * KiB])
        offset = rng.randrange(0, SIZE - length) // 512 * 512
        m.write(offset, bytes([0x80 + i]) * length)


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("source_format,target_format", [("qcow2", "raw"), ("raw", "qcow2")])
def test_full_across_formats_with_live_writes(chain, tmp_path, source_format, target_format, copy_mode):
    source = chain[-1] if source_format == "qcow2" else _raw_copy_of(chain[-1], tmp_path)
    target = str(tmp_path / f"dst.{target_format}")
    with bm.Mirror(source, target, target_format=target_format, copy_mode=copy_mode) as m:
        _live_writes(m, 5)
        m.wait_ready()
        m.complete()
    if target_format == "qcow2":
        check(target)
    compare(source, target)


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
def test_none_from_a_raw_source_onto_a_qcow2_target_backed_by_it(chain, tmp_path, copy_mode):
    source = _raw_copy_of(chain[-1], tmp_path)
    target = str(tmp_path / "none.qcow2")
    with bm.Mirror(source, target, sync="none", target_format="qcow2", copy_mode=copy_mode) as m:
        _live_writes(m, 9)
        m.wait_ready()
        m.complete()
        seen = m.read(0, SIZE)
    check(target)
    meta = info(target)
    assert meta["backing-filename"] == os.path.abspath(source)
    assert meta["backing-filename-format"] == "raw"
    with open(source, "rb") as f:
        assert seen == f.read()
    compare(source, target)
