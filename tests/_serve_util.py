"""Helpers for the tests of ``blockmirror serve`` against real peers: the server under test
and qemu-storage-daemon (the reference) behind one interface, QMP sessions, fio runs."""

from __future__ import annotations

import contextlib
import os
import socket
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import blockmirror as bm
from qemu.qmp.legacy import QEMUMonitorProtocol

EXPORT = "disk"
QSD = shutil.which("qemu-storage-daemon")
FIO = shutil.which("fio")


def wait_until(condition: Callable[[], bool], what: str, proc: Optional[subprocess.Popen] = None,
               tries: int = 2000) -> None:
    """Polls ``condition`` (a socket appearing, a client leaving) a bounded number of times,
    failing at once if ``proc`` died meanwhile."""
    for _ in range(tries):
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"{what}: the process exited with {proc.returncode}: {out}")
        time.sleep(0.005)
    raise AssertionError(f"gave up waiting for {what}")


def accepts(path: str) -> bool:
    """Whether a unix socket at ``path`` accepts a connection now (closed at once)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def holds_qemu_write_lock(image: str) -> bool:
    """Whether some process holds QEMU's "write" permission lock (byte 101) on ``image``,
    read off /proc/locks (qemu-nbd creates its socket before it locks the image)."""
    inode = os.stat(image).st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "2: OFDLCK ADVISORY READ -1 fe:00:1234 100 101": one lock may span several bytes.
            if len(fields) >= 8 and fields[1] == "OFDLCK" and fields[5].rsplit(":", 1)[-1] == str(inode) \
                    and fields[6].isdigit() and fields[7].isdigit() and int(fields[6]) <= 101 <= int(fields[7]):
                return True
    return False


@dataclass
class Peer:
    """A server of one disk: an NBD export and a QMP monitor."""

    name: str
    nbd_uri: str
    qmp_path: str
    nbd_socket: str

    def qmp(self) -> QEMUMonitorProtocol:
        """A negotiated QMP session (QEMU's own client, in its synchronous form)."""
        session = QEMUMonitorProtocol(self.qmp_path)
        session.connect(negotiate=True)
        session.settimeout(60)
        return session


@contextlib.contextmanager
def blockmirror_peer(tmp: str, image: str, **options: Any) -> Iterator[Peer]:
    nbd_socket, qmp_path = os.path.join(tmp, "bm-nbd.sock"), os.path.join(tmp, "bm-qmp.sock")
    with bm.serve(image, socket=nbd_socket, qmp=qmp_path, export=EXPORT, **options) as server:
        yield Peer("blockmirror", server.uri, qmp_path, nbd_socket)


@contextlib.contextmanager
def qsd_peer(tmp: str, image: str) -> Iterator[Peer]:
    nbd_socket, qmp_path = os.path.join(tmp, "qsd-nbd.sock"), os.path.join(tmp, "qsd-qmp.sock")
    proc = subprocess.Popen(
        [QSD or "qemu-storage-daemon",
         "--blockdev", f"driver=file,node-name=file0,filename={image}",
         "--blockdev", f"driver=raw,node-name={EXPORT},file=file0",
         "--nbd-server", f"addr.type=unix,addr.path={nbd_socket}",
         "--export", f"type=nbd,id=exp0,node-name={EXPORT},name={EXPORT},writable=on",
         "--chardev", f"socket,path={qmp_path},server=on,wait=off,id=mon0",
         "--monitor", "chardev=mon0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # A socket's path exists from bind(), before listen(): wait until both accept.
        wait_until(lambda: accepts(nbd_socket) and accepts(qmp_path), "qemu-storage-daemon's sockets", proc)
        yield Peer("qemu-storage-daemon", f"nbd+unix:///{EXPORT}?socket={nbd_socket}", qmp_path, nbd_socket)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def peer(kind: str, tmp: str, image: str) -> "contextlib.AbstractContextManager[Peer]":
    return blockmirror_peer(tmp, image) if kind == "blockmirror" else qsd_peer(tmp, image)


def next_event(qmp: QEMUMonitorProtocol, name: str, timeout: float = 120.0) -> Dict[str, Any]:
    """The next event called ``name`` (earlier others are skipped); fails after ``timeout``
    seconds without one (a hang guard, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {name} event within {timeout} s")
        event = qmp.pull_event(wait=left)
        if event is not None and event["event"] == name:
            return event


def events_until(qmp: QEMUMonitorProtocol, name: str, timeout: float = 120.0) -> List[Dict[str, Any]]:
    """Every event up to and including the first called ``name``."""
    seen: List[Dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {name} event within {timeout} s; saw {[e['event'] for e in seen]}")
        event = qmp.pull_event(wait=left)
        if event is None:
            continue
        seen.append(event)
        if event["event"] == name:
            return seen


def fio_args(name: str, size: int, extra: List[str]) -> List[str]:
    """A 4 KiB random-write job with crc32c verification (same layout for every engine)."""
    return [FIO or "fio", f"--name={name}", "--rw=randwrite", "--bs=4k", f"--size={size}",
            "--verify=crc32c", "--verify_fatal=1", "--randrepeat=1", "--output-format=terse",
            # No verify-state file in the working directory (fio writes one by default).
            "--verify_state_save=0"] + extra


def qemu_io(uri: str, *commands: str, read_only: bool = False) -> subprocess.CompletedProcess:
    args = ["qemu-io", "-f", "raw"] + (["-r"] if read_only else [])
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args + [uri], capture_output=True, text=True, timeout=120)


def fio_across_a_switch_over(p: Peer, target: str, size: int, rate: str, **mirror: Any) -> None:
    """Starts ``drive-mirror`` of the export onto ``target`` (``mirror`` adds arguments),
    runs fio writing and verifying through the export (rate-limited, so it is still writing
    at READY), issues the switch while fio writes, and requires fio's own verify pass
    (through the switched export) to succeed; then fio's ``verify_only`` pass over the
    target file must find every block (``target`` may be a URI: ``mirror["verify_file"]``
    names the file behind it)."""
    verify_file = mirror.pop("verify_file", target)
    qmp = p.qmp()
    try:
        qmp.cmd("drive-mirror", **{"job-id": "job0", "device": EXPORT, "target": target, "sync": "full",
                                   "format": "raw", **mirror})
        fio = subprocess.Popen(fio_args("guest", size, ["--ioengine=nbd", f"--uri={p.nbd_uri}", "--iodepth=8",
                                                         f"--rate={rate}"]),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            next_event(qmp, "BLOCK_JOB_READY")
            assert fio.poll() is None, "fio ended before the switch: the test would prove nothing"
            qmp.cmd("block-job-complete", device="job0")
            assert "error" not in next_event(qmp, "BLOCK_JOB_COMPLETED")["data"]
            out, _ = fio.communicate(timeout=300)
        finally:
            if fio.poll() is None:
                fio.kill()
        assert fio.returncode == 0, out
    finally:
        qmp.close()
    fio_verify_file(verify_file, size)


def fio_verify_file(path: str, size: int) -> None:
    """fio's ``verify_only`` pass of the :func:`fio_args` job over a file: every block intact."""
    check = subprocess.run(fio_args("guest", size, ["--ioengine=psync", f"--filename={path}", "--verify_only"]),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
