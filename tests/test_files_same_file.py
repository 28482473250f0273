"""The mirror refuses a target that is the source's own storage under another name: a hard
link, a symlink, a bind mount, a loop device over the source's file (either direction), or
two loop devices over one file. Mirroring onto the source itself writes stale copy data over
the guest's writes, so each case must fail before anything is written, with InvalidArgument."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator

import pytest

import blockmirror as bm
from _files_util import MiB, loop_device, random_file, sha256


def assert_refused(source: str, target: str, **options: object) -> None:
    try:
        m = bm.Mirror(source, target, reuse=True, **options)
    except bm.InvalidArgument as e:
        assert "same" in str(e), e
        return
    m.close()  # release the files, so that the mounts and loops can go
    pytest.fail(f"mirroring {source} onto {target} was not refused")


@pytest.fixture
def src(tmp_path) -> str:
    path = str(tmp_path / "src.img")
    random_file(path, 4 * MiB, seed=1)
    return path


def test_hard_link_of_the_source_is_refused(tmp_path, src):
    before = sha256(src)
    link = str(tmp_path / "link.img")
    os.link(src, link)
    assert_refused(src, link)
    assert_refused(link, src)
    with pytest.raises(bm.InvalidArgument, match="same"):
        bm.mirror(src, link, reuse=True)
    assert sha256(src) == before


def test_hard_link_without_reuse_names_the_real_problem(tmp_path, src):
    # Without reuse=True the error must not advise passing reuse=True onto the source.
    link = str(tmp_path / "link.img")
    os.link(src, link)
    with pytest.raises(bm.InvalidArgument, match="same"):
        bm.Mirror(src, link)


def test_symlink_to_a_hard_link_of_the_source_is_refused(tmp_path, src):
    link = str(tmp_path / "link.img")
    os.link(src, link)
    sym = str(tmp_path / "sym.img")
    os.symlink(link, sym)
    assert_refused(src, sym)
    assert_refused(sym, src)


def test_symlink_to_the_source_is_refused(tmp_path, src):
    sym = str(tmp_path / "sym.img")
    os.symlink(src, sym)
    assert_refused(src, sym)


def test_direct_io_hard_link_is_refused(tmp_path, src):
    link = str(tmp_path / "link.img")
    os.link(src, link)
    try:
        assert_refused(src, link, direct=True)
    except bm.InvalidArgument as e:  # pragma: no cover - tmpfs has no O_DIRECT
        if "direct I/O" in str(e):
            pytest.skip("this filesystem has no O_DIRECT")
        raise


@contextlib.contextmanager
def bind_mount(what: str, where: str) -> Iterator[bool]:
    r = subprocess.run(["mount", "--bind", what, where], capture_output=True, text=True)
    if r.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        if subprocess.run(["umount", where], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", where], check=False)  # busy: detach it anyway


def test_bind_mount_of_the_source_is_refused(tmp_path, src):
    before = sha256(src)
    other = str(tmp_path / "bound.img")
    random_file(other, 4 * MiB, seed=2)
    with bind_mount(src, other) as mounted:
        if not mounted:
            pytest.skip("mount --bind is not permitted here (needs root)")
        assert_refused(src, other)
        assert_refused(other, src)
    assert sha256(src) == before


def test_bind_mounted_directory_is_refused(tmp_path, src):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with bind_mount(str(tmp_path), str(mnt)) as mounted:
        if not mounted:
            pytest.skip("mount --bind is not permitted here (needs root)")
        assert_refused(src, str(mnt / "src.img"))


def test_loop_device_over_the_source_is_refused(src):
    before = sha256(src)
    with loop_device(src) as dev:
        if dev is None:
            pytest.skip("loop devices cannot be attached here (needs root and /dev/loop-control)")
        assert_refused(src, dev)  # the target is a loop device over the source's file
        assert_refused(dev, src)  # the source is a loop device over the target's file
    assert sha256(src) == before


def test_two_loop_devices_over_one_file_are_refused(src):
    with loop_device(src) as a, loop_device(src) as b:
        if a is None or b is None:
            pytest.skip("loop devices cannot be attached here (needs root and /dev/loop-control)")
        assert a != b
        assert_refused(a, b)


def test_second_device_node_of_the_same_device_is_refused(tmp_path, src):
    with loop_device(src) as dev:
        if dev is None:
            pytest.skip("loop devices cannot be attached here (needs root and /dev/loop-control)")
        node = str(tmp_path / "node")
        rdev = os.stat(dev).st_rdev
        try:
            os.mknod(node, 0o600 | 0o060000, rdev)  # S_IFBLK
        except PermissionError:
            pytest.skip("mknod is not permitted here")
        assert_refused(dev, node)


def test_a_different_file_is_still_accepted(tmp_path, src):
    other = str(tmp_path / "other.img")
    with bm.Mirror(src, other) as m:
        m.wait_ready(timeout=30)
        m.complete(timeout=30)
    assert sha256(other) == sha256(src)
