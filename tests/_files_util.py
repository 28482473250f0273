"""Helpers for the file-backend tests: images, hashes, qemu-img, tmpfs and loop mounts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import threading
from typing import Iterator, List, Optional, Tuple

MiB = 1 << 20


def make_image(path: str, size: int, seed: int = 0, segment: int = MiB,
               mix: Tuple[float, float] = (0.6, 0.15)) -> Tuple[int, int, int]:
    """A raw image of ``size`` bytes from segments of random data (share ``mix[0]``), written
    zeroes (``mix[1]``) and holes (the rest). Returns (data, zero, hole) bytes."""
    rng = random.Random(seed)
    pool = rng.randbytes(4 * MiB)
    data = zeros = holes = 0
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, segment):
            n = min(segment, size - offset)
            r = rng.random()
            if r < mix[0]:
                start = rng.randrange(0, len(pool) - n)
                f.seek(offset)
                f.write(pool[start:start + n])
                data += n
            elif r < mix[0] + mix[1]:
                f.seek(offset)
                f.write(bytes(n))
                zeros += n
            else:
                holes += n
    return data, zeros, holes


def random_file(path: str, size: int, seed: int = 0) -> None:
    """A file of random bytes (no holes, no zero runs)."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def sha256(path: str, length: Optional[int] = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = length if length is not None else 1 << 62
        while left > 0:
            block = f.read(min(8 * MiB, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def allocated(path: str) -> int:
    """Bytes the file occupies on disk."""
    return os.stat(path).st_blocks * 512


def qemu_img_identical(a: str, b: str) -> bool:
    """``qemu-img compare`` of two raw images (exit 0: identical, 1: different)."""
    qemu_img = shutil.which("qemu-img")
    assert qemu_img, "qemu-img is missing (the test command installs qemu-utils)"
    r = subprocess.run([qemu_img, "compare", "-q", "-f", "raw", "-F", "raw", a, b],
                       capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


@contextlib.contextmanager
def tmpfs(path: str, size: str, read_only: bool = False) -> Iterator[Optional[str]]:
    """Mounts a tmpfs at ``path``; yields None (nothing mounted) when mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


@contextlib.contextmanager
def loop_device(image: str) -> Iterator[Optional[str]]:
    """Attaches ``image`` to a loop device; yields None when that is not allowed."""
    r = subprocess.run(["losetup", "-f", "--show", image], capture_output=True, text=True)
    if r.returncode != 0:
        yield None
        return
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


class Writer(threading.Thread):
    """A guest thread writing random blocks through ``mirror.write`` into [lo, hi) until
    stopped; records the writes that return after ``record`` was set."""

    def __init__(self, mirror: object, lo: int, hi: int, seed: int, block: int = 64 << 10,
                 pause_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.mirror, self.lo, self.hi, self.block, self.pause_s = mirror, lo, hi, block, pause_s
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.record = threading.Event()
        self.log: List[Tuple[int, bytes]] = []
        self.count = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                # Unaligned offsets and lengths on purpose: the mirror tracks whole chunks.
                length = self.rng.randrange(1, self.block)
                offset = self.rng.randrange(self.lo, self.hi - length)
                data = self.rng.randbytes(length)
                self.mirror.write(offset, data)  # type: ignore[attr-defined]
                # Checked after the write returns: a write that started before `record` was
                # set may still have landed after a pivot (on the target only).
                if self.record.is_set():
                    self.log.append((offset, data))
                self.count += 1
                if self.pause_s:
                    self.stop.wait(self.pause_s)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.is_alive(), "writer thread hung"
        if self.error is not None:
            raise self.error


def replay(path: str, writes: List[Tuple[int, bytes]]) -> None:
    """Applies writes to a file in order."""
    with open(path, "r+b") as f:
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
