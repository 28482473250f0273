"""Memory of ``blockmirror serve`` (the CLI process): a 1 TiB sparse disk, 16 NBD clients
connected at once and doing I/O, idle and while a mirror of that disk runs. The bound is
on the process's high-water mark (VmHWM), so it measures memory, not time.

The clients speak NBD themselves (fixed newstyle handshake, NBD_OPT_GO, simple replies),
so that all sixteen are known to be connected at the same moment."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from typing import List

import pytest

from _files_util import MiB
from _serve_util import EXPORT, next_event, wait_until
from qemu.qmp.legacy import QEMUMonitorProtocol

TiB = 1 << 40
CLIENTS = 16
HWM_BOUND_KIB = 100 * 1024

IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_GO, REP_ACK = 7, 1
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the server hung up after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


class NbdClient:
    """One NBD connection, negotiated with NBD_OPT_GO; one request at a time."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        magic, opt_magic, _flags = struct.unpack(">8sQH", _recv_exact(self.sock, 18))
        assert magic == b"NBDMAGIC" and opt_magic == IHAVEOPT
        self.sock.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        name = EXPORT.encode()
        payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(payload)) + payload)
        while True:
            magic, _option, reply, length = struct.unpack(">QIII", _recv_exact(self.sock, 20))
            assert magic == OPT_REPLY_MAGIC
            body = _recv_exact(self.sock, length)
            assert not reply & 0x80000000, f"NBD_OPT_GO refused: {reply:#x} {body!r}"
            if reply == REP_ACK:
                break
        self.cookie = 0

    def _request(self, command: int, offset: int, length: int, data: bytes = b"") -> bytes:
        self.cookie += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self.cookie, offset, length) + data)
        magic, error, cookie = struct.unpack(">IIQ", _recv_exact(self.sock, 16))
        assert magic == SIMPLE_REPLY_MAGIC and cookie == self.cookie and error == 0, (magic, error, cookie)
        return _recv_exact(self.sock, length) if command == CMD_READ else b""

    def write(self, offset: int, data: bytes) -> None:
        self._request(CMD_WRITE, offset, len(data), data)

    def read(self, offset: int, length: int) -> bytes:
        return self._request(CMD_READ, offset, length)

    def flush(self) -> None:
        self._request(CMD_FLUSH, 0, 0)

    def close(self) -> None:
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        self.sock.close()


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _client_threads(pid: int) -> int:
    """Connections the server holds now: it runs one reader thread per client."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                count += f.read().startswith("bm-serve-client")
        except FileNotFoundError:
            pass
    return count


def _round_of_io(clients: List[NbdClient], round_no: int) -> None:
    """Each client, on its own thread, writes 64 KiB blocks spread over the whole disk,
    reads them back, and flushes."""
    errors: List[BaseException] = []

    def work(i: int, client: NbdClient) -> None:
        try:
            for k in range(8):
                offset = ((i * 8 + k) * 8191 + round_no * 4099) % (TiB // (64 << 10)) * (64 << 10)
                data = bytes([(i + k + round_no) % 251 + 1]) * (64 << 10)
                client.write(offset, data)
                assert client.read(offset, len(data)) == data
            client.flush()
        except BaseException as e:  # reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.fixture
def served_terabyte(tmp_path):
    image = str(tmp_path / "big.img")
    with open(image, "wb") as f:
        f.truncate(TiB)
    nbd, qmp = str(tmp_path / "nbd.sock"), str(tmp_path / "qmp.sock")
    proc = subprocess.Popen([sys.executable, "-m", "blockmirror", "serve", image, "--socket", nbd, "--qmp", qmp,
                             "--export", EXPORT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(nbd) and os.path.exists(qmp), "the serve sockets", proc)
        yield proc, nbd, qmp
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_sixteen_clients_on_a_terabyte_disk_idle_and_mirroring_stay_under_100_mib(served_terabyte, tmp_path):
    proc, nbd, qmp_path = served_terabyte
    clients = [NbdClient(nbd) for _ in range(CLIENTS)]
    qmp = QEMUMonitorProtocol(qmp_path)
    qmp.connect()
    try:
        wait_until(lambda: _client_threads(proc.pid) == CLIENTS, "16 connections on the server", proc)
        _round_of_io(clients, 0)
        idle_hwm = _vm_hwm_kib(proc.pid)
        # A mirror of the sparse terabyte: holes are skipped, the written blocks copied at a
        # bounded speed; the clients keep writing through the job meanwhile.
        qmp.cmd("drive-mirror", **{"job-id": "job0", "device": EXPORT, "target": str(tmp_path / "dst.img"),
                                   "sync": "full", "format": "raw", "speed": 16 * MiB})
        next_event(qmp, "JOB_STATUS_CHANGE")
        for round_no in (1, 2):
            _round_of_io(clients, round_no)
        assert qmp.cmd("query-block-jobs"), "the job ended before the clients were done: it measured nothing"
        mirroring_hwm = _vm_hwm_kib(proc.pid)
        qmp.cmd("block-job-cancel", device="job0", force=True)
        next_event(qmp, "BLOCK_JOB_CANCELLED")
        assert _client_threads(proc.pid) == CLIENTS
    finally:
        for c in clients:
            c.close()
        qmp.close()
    assert idle_hwm < HWM_BOUND_KIB, f"VmHWM {idle_hwm} KiB with 16 idle-disk clients"
    assert mirroring_hwm < HWM_BOUND_KIB, f"VmHWM {mirroring_hwm} KiB with 16 clients while mirroring"


def test_the_serve_benchmark_runs_in_quick_mode(tmp_path):
    """benches/bench_serve.py measures this server against qemu-storage-daemon; its quick
    mode (every sub-benchmark, the bitmap file's cost included; tiny sizes) is run here so the script keeps working."""
    missing = [tool for tool in ("fio", "qemu-storage-daemon") if shutil.which(tool) is None]
    assert not missing, f"not installed: {missing} (scripts/setup.sh all installs them)"
    bench = os.path.join(os.path.dirname(__file__), "..", "benches", "bench_serve.py")
    out = subprocess.run([sys.executable, bench, "--quick", "--dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "IOPS ratio" in out.stdout and "time to ready" in out.stdout and "VmHWM" in out.stdout, out.stdout
    assert "bitmap file's cost" in out.stdout and "idle-left-behind" in out.stdout, out.stdout
