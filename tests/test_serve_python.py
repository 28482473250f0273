"""The Python side of ``serve``: ``blockmirror.NbdClient`` against blockmirror's own export
and against qemu-nbd (the reference server), and in-process job control of a served disk
(``Server.execute`` / ``next_event`` / ``wait_event`` / ``mirror``) with NBD clients writing
through the switch-over."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import threading
from typing import Dict, Iterator, List, Tuple

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

import blockmirror as bm
from _files_util import MiB, make_image, tmpfs

QEMU_NBD = shutil.which("qemu-nbd")
KINDS = ["blockmirror", "qemu-nbd"]
BLOCK = 4096


@contextlib.contextmanager
def qemu_nbd(tmp: str, image: str, read_only: bool = False) -> Iterator[Tuple[str, int]]:
    """qemu-nbd serving ``image`` on a unix socket; yields (URI, pid). ``--fork`` returns
    once the socket listens, so no polling is needed."""
    sock, pid_file = os.path.join(tmp, "qemu-nbd.sock"), os.path.join(tmp, "qemu-nbd.pid")
    args = [QEMU_NBD or "qemu-nbd", "-f", "raw", "-k", sock, "-x", "disk", "-t", "--fork",
            f"--pid-file={pid_file}"] + (["-r"] if read_only else []) + [image]
    subprocess.run(args, check=True, timeout=60)
    with open(pid_file) as f:
        pid = int(f.read())
    try:
        yield f"nbd+unix:///disk?socket={sock}", pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def export(kind: str, tmp: str, image: str, read_only: bool = False) -> Iterator[str]:
    """The URI of ``image`` served by ``kind``."""
    if kind == "blockmirror":
        with bm.serve(image, socket=os.path.join(tmp, "bm.sock"), read_only=read_only) as server:
            yield server.uri
    else:
        with qemu_nbd(tmp, image, read_only) as (uri, _):
            yield uri


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.img")
    make_image(path, 64 * MiB, seed=5)
    return path


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- NbdClient ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_client_method_against_the_server(kind, tmp_path, image):
    before = file_bytes(image)
    with export(kind, str(tmp_path), image) as uri, bm.NbdClient(uri) as c:
        assert c.size == 64 * MiB and c.uri == uri and c.export == "disk"
        assert not c.read_only and c.can_flush and c.can_fua and c.can_trim and c.can_zero
        assert isinstance(c.can_fast_zero, bool) and isinstance(c.can_multi_conn, bool)
        minimum, preferred, maximum = c.block_size
        assert 1 <= minimum <= preferred <= maximum <= 32 * MiB
        # A read longer than the maximum payload is split, and reads what the file holds.
        assert c.read(3 * MiB, 40 * MiB) == before[3 * MiB:43 * MiB]
        c.write(MiB, b"\xab" * MiB)
        c.write(2 * MiB, bytearray(b"\xcd" * BLOCK), fua=True)
        c.write(2 * MiB + BLOCK, memoryview(b"\xef" * BLOCK))
        assert c.read(MiB, MiB) == b"\xab" * MiB
        assert c.read(2 * MiB, 2 * BLOCK) == b"\xcd" * BLOCK + b"\xef" * BLOCK
        c.trim(8 * MiB, MiB)
        if kind == "blockmirror":  # a trim is advisory in NBD; blockmirror's reads as zeroes
            assert c.read(8 * MiB, MiB) == bytes(MiB)
        c.write_zeroes(9 * MiB, MiB)
        c.write_zeroes(10 * MiB, MiB, no_hole=True)
        assert c.read(9 * MiB, 2 * MiB) == bytes(2 * MiB)
        c.flush()
        extents = c.block_status(0, 16 * MiB)
        assert extents[0][0] == 0 and sum(n for _, n, _ in extents) == 16 * MiB
        assert all(a + n == b for (a, n, _), (b, _, _) in zip(extents, extents[1:]))
        assert all(isinstance(flags, int) and flags & ~3 == 0 for _, _, flags in extents)
        assert c.read(0, 0) == b""
    after = file_bytes(image)
    assert after[MiB:2 * MiB] == b"\xab" * MiB and after[9 * MiB:11 * MiB] == bytes(2 * MiB)
    assert after[2 * MiB:2 * MiB + 2 * BLOCK] == b"\xcd" * BLOCK + b"\xef" * BLOCK
    assert after[16 * MiB:] == before[16 * MiB:]


def test_block_status_reports_the_holes_of_a_sparse_disk(tmp_path):
    path = str(tmp_path / "sparse.img")
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(2 * MiB)
        f.write(os.urandom(MiB))
    with bm.serve(path, socket=str(tmp_path / "s.sock")) as server, bm.NbdClient(server.uri) as c:
        extents = c.block_status(0, 8 * MiB)
    data = [(a, n) for a, n, flags in extents if flags == 0]
    holes = [(a, n) for a, n, flags in extents if flags & 1]
    assert data and holes
    assert any(a <= 2 * MiB and 3 * MiB <= a + n for a, n in data)
    assert all(a + n <= 2 * MiB or a >= 3 * MiB for a, n in holes)


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_only_export_refuses_writes_with_eperm(kind, tmp_path, image):
    before = file_bytes(image)
    with export(kind, str(tmp_path), image, read_only=True) as uri, bm.NbdClient(uri) as c:
        assert c.read_only
        for operation, call in [("write", lambda: c.write(0, b"x" * BLOCK)),
                                ("trim", lambda: c.trim(0, BLOCK)),
                                ("zero", lambda: c.write_zeroes(0, BLOCK))]:
            with pytest.raises(bm.IoError) as err:
                call()
            assert err.value.errno == errno.EPERM and err.value.operation == operation
            assert err.value.offset == 0
        assert c.read(0, MiB) == before[:MiB]
    assert file_bytes(image) == before


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_error_reply_is_an_io_error_with_the_nbd_errno(kind, tmp_path):
    """A sparse disk on a full filesystem: the server answers the write with NBD_ENOSPC."""
    with tmpfs(str(tmp_path / "small"), "2m") as mnt:
        assert mnt is not None, "cannot mount a tmpfs here (the tests run as root)"
        path = os.path.join(mnt, "sparse.img")
        with open(path, "wb") as f:
            f.truncate(16 * MiB)
        with export(kind, str(tmp_path), path) as uri, bm.NbdClient(uri) as c:
            with pytest.raises(bm.IoError) as err:
                c.write(4 * MiB, os.urandom(4 * MiB))
            assert err.value.errno == errno.ENOSPC and err.value.operation == "write"
            assert err.value.offset == 4 * MiB
            assert c.read(0, BLOCK) == bytes(BLOCK)  # the connection survives a refused request


def test_out_of_range_requests_are_invalid_arguments(tmp_path, image):
    """The client knows the export's size: a range past its end is refused before anything
    is sent, as ``Mirror.read`` refuses one (``InvalidArgument``, a ``ValueError``)."""
    with bm.serve(image, socket=str(tmp_path / "s.sock")) as server, bm.NbdClient(server.uri) as c:
        end = c.size
        for call in [lambda: c.read(end, 1), lambda: c.read(end - 1, 2), lambda: c.write(end - 1, b"ab"),
                     lambda: c.trim(end, BLOCK), lambda: c.write_zeroes(0, end + 1),
                     lambda: c.block_status(end, 1), lambda: c.read(-1, 1), lambda: c.read(2**64, 1),
                     lambda: c.read("0", 1)]:
            with pytest.raises(bm.InvalidArgument):
                call()
        # Refused before allocating: the limit is checked first, whatever the export's size.
        with pytest.raises(bm.InvalidArgument, match="limit"):
            c.read(0, (64 << 20) + 1)
        assert c.read(end - 1, 1) is not None  # the connection is still usable


def test_connect_failures_are_io_errors_and_bad_uris_invalid_arguments(tmp_path, image):
    with pytest.raises(bm.IoError) as err:
        bm.NbdClient(f"nbd+unix:///disk?socket={tmp_path}/nothing.sock")
    assert err.value.errno == errno.ENOENT and err.value.operation == "connect"
    with bm.serve(image, socket=str(tmp_path / "s.sock")) as server:
        with pytest.raises(bm.IoError) as err:
            bm.NbdClient(server.uri.replace("/disk?", "/other?"))
        assert err.value.operation == "connect"
    for bad in ["http://example/disk", "nbds+unix:///disk?socket=/x", "nbd+unix:///disk", "disk.img"]:
        with pytest.raises(bm.InvalidArgument):
            bm.NbdClient(bad)


def test_a_dead_server_is_an_io_error(tmp_path, image):
    with qemu_nbd(str(tmp_path), image) as (uri, pid):
        c = bm.NbdClient(uri)
        assert len(c.read(0, BLOCK)) == BLOCK
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(bm.IoError) as err:
            # The first call may be sent before the reader thread sees the hang-up; it then
            # fails when the connection's end is seen.
            for _ in range(1000):
                c.read(0, BLOCK)
        assert err.value.operation == "read" and err.value.errno == errno.ENOTCONN
        c.close()
        c.close()  # idempotent


def test_a_closed_client_and_a_closed_server_are_io_errors(tmp_path, image):
    server = bm.serve(image, socket=str(tmp_path / "s.sock"))
    c = bm.NbdClient(server.uri)
    server.close()
    with pytest.raises(bm.IoError) as err:
        c.write(0, b"x")
    assert err.value.operation == "write" and err.value.errno == errno.ENOTCONN
    c.close()
    with pytest.raises(bm.IoError):
        c.flush()


def test_threads_share_one_client(tmp_path, image):
    with bm.serve(image, socket=str(tmp_path / "s.sock")) as server, bm.NbdClient(server.uri) as c:
        def writer(i: int) -> None:
            for k in range(64):
                c.write((i * 64 + k) * BLOCK, bytes([i + 1]) * BLOCK)
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = c.read(0, 8 * 64 * BLOCK)
    assert all(data[j * 64 * BLOCK:(j + 1) * 64 * BLOCK] == bytes([j + 1]) * 64 * BLOCK for j in range(8))


# -- in-process job control -----------------------------------------------------------------

class StripeWriter(threading.Thread):
    """Writes 4 KiB blocks at random into its own stripe (block index ≡ ``lane`` mod
    ``lanes``), so the disk's final content is known: the image, then each writer's last
    write to each of its blocks. Pauses after ``before_ready`` writes until the job is
    ready (so a background job converges), signals ``busy_while_ready`` once it has written
    while the job is ready, and stops ``after_switch`` writes after the switch-over."""

    def __init__(self, client: bm.NbdClient, lane: int, lanes: int, ready: threading.Event,
                 switched: threading.Event, before_ready: int = 200, after_switch: int = 20) -> None:
        super().__init__(name=f"writer-{lane}", daemon=True)
        self.client, self.lane, self.lanes = client, lane, lanes
        self.ready, self.switched = ready, switched
        self.before_ready, self.after_switch = before_ready, after_switch
        self.busy_while_ready = threading.Event()
        self.last: Dict[int, bytes] = {}
        self.rng = random.Random(lane)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            blocks = self.client.size // BLOCK // self.lanes
            written = while_ready = after = 0
            while after < self.after_switch:
                if written == self.before_ready and not self.ready.wait(120):
                    raise AssertionError("the job never got ready")
                switched = self.switched.is_set()
                offset = (self.rng.randrange(blocks) * self.lanes + self.lane) * BLOCK
                data = self.rng.randbytes(BLOCK)
                self.client.write(offset, data, fua=self.rng.random() < 0.1)
                self.last[offset] = data
                written += 1
                if self.ready.is_set():
                    while_ready += 1
                    if while_ready == 20:
                        self.busy_while_ready.set()
                if switched:
                    after += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.busy_while_ready.set()


def expected_content(image_bytes: bytes, writers: List[StripeWriter]) -> bytes:
    content = bytearray(image_bytes)
    for w in writers:
        for offset, data in w.last.items():
            content[offset:offset + len(data)] = data
    return bytes(content)


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
def test_execute_and_events_drive_a_job_while_clients_write(copy_mode, tmp_path, image):
    initial = file_bytes(image)
    target = str(tmp_path / "target.img")
    qmp_path = str(tmp_path / "qmp.sock")
    with bm.serve(image, socket=str(tmp_path / "s.sock"), qmp=qmp_path) as server:
        # A monitor client sees the same events as the in-process queue.
        monitor = QEMUMonitorProtocol(qmp_path)
        monitor.connect(negotiate=True)
        shared = bm.NbdClient(server.uri)
        own = [bm.NbdClient(server.uri) for _ in range(2)]
        clients = [shared, shared] + own
        ready, switched = threading.Event(), threading.Event()
        writers = [StripeWriter(c, i, len(clients), ready, switched) for i, c in enumerate(clients)]
        for w in writers:
            w.start()
        assert server.mirror(target, job_id="j1", copy_mode=copy_mode) == "j1"
        jobs = server.execute("query-block-jobs")
        assert [j["device"] for j in jobs] == ["j1"] and jobs[0]["type"] == "mirror"
        names = []
        while True:
            event = server.next_event(timeout=120)
            assert event is not None, "no event within 120 s"
            assert set(event) == {"event", "data", "timestamp"}
            names.append(event["event"])
            if event["event"] == "BLOCK_JOB_READY":
                assert event["data"]["device"] == "j1"
                break
        ready.set()
        for w in writers:
            assert w.busy_while_ready.wait(120)
        assert server.execute("query-block-jobs")[0]["ready"] is True
        assert server.execute("block-job-complete", {"device": "j1"}) == {}
        completed = server.wait_event("BLOCK_JOB_COMPLETED", timeout=120)
        assert completed["data"]["device"] == "j1" and "error" not in completed["data"]
        assert completed["data"]["offset"] == completed["data"]["len"]
        switched.set()
        for w in writers:
            w.join(120)
            assert not w.is_alive() and w.error is None, w.error
        # Concluded and dismissed: the job is gone once its last event is out.
        assert server.wait_event("JOB_STATUS_CHANGE", timeout=120)["data"]["status"] in ("concluded", "null")
        monitor_names = []
        while True:
            ev = monitor.pull_event(wait=120)
            assert ev is not None
            monitor_names.append(ev["event"])
            if ev["event"] == "BLOCK_JOB_READY":
                break
        assert monitor_names == names
        monitor.close()
        want = expected_content(initial, writers)
        # After the switch the export serves the target.
        with bm.NbdClient(server.uri) as reader:
            got = b"".join(reader.read(at, 16 * MiB) for at in range(0, reader.size, 16 * MiB))
        assert got == want
        for c in own + [shared]:
            c.close()
    assert file_bytes(target) == want


def test_qmp_errors_in_process_match_the_monitor(tmp_path, image):
    """Each refusal is asked in-process and over the monitor socket: same class, same words."""
    target = str(tmp_path / "t.img")
    cases = [
        ("drive-mirror", {"job-id": "j", "device": "nosuch", "target": target, "sync": "full"}),
        ("drive-mirror", {"job-id": "j", "device": "disk", "target": target, "sync": "bogus"}),
        ("drive-mirror", {"job-id": "j", "device": "disk", "target": target, "sync": "full", "speed": -1}),
        ("drive-mirror", {"job-id": "j", "device": "disk", "sync": "full"}),
        ("drive-mirror", {"job-id": "j", "device": "disk", "target": target, "sync": "full", "bogus": 1}),
        ("block-job-complete", {"device": "nosuch"}),
        ("block-job-cancel", {"device": "nosuch"}),
        ("job-pause", {"id": "nosuch"}),
        ("query-version", {"extra": 1}),
        ("qmp_capabilities", {}),
        ("no-such-command", {}),
    ]
    qmp_path = str(tmp_path / "qmp.sock")
    with bm.serve(image, socket=str(tmp_path / "s.sock"), qmp=qmp_path) as server:
        monitor = QEMUMonitorProtocol(qmp_path)
        monitor.connect(negotiate=True)
        for command, arguments in cases:
            with pytest.raises(bm.QmpError) as err:
                server.execute(command, arguments)
            assert isinstance(err.value, bm.BlockMirrorError)
            reply = monitor.cmd_obj({"execute": command, "arguments": arguments})
            assert (err.value.error_class, err.value.desc) == (reply["error"]["class"], reply["error"]["desc"]), command
        for command in ["query-version", "query-commands", "query-jobs"]:
            assert server.execute(command) == monitor.cmd_obj({"execute": command})["return"]
        # A second job on the busy device is refused as QEMU refuses it.
        server.mirror(target, job_id="a", speed=1)
        with pytest.raises(bm.QmpError) as err:
            server.mirror(str(tmp_path / "u.img"), job_id="b")
        assert err.value.error_class == "GenericError" and "busy" in err.value.desc
        with pytest.raises(bm.QmpError) as err:
            server.execute("job-complete", {"id": "a"})
        assert err.value.error_class == "GenericError"
        assert server.execute("block-job-cancel", {"device": "a", "force": True}) == {}
        assert server.wait_event("BLOCK_JOB_CANCELLED", timeout=120)["data"]["device"] == "a"
        monitor.close()
        for bad in [[1], "x", {"device": object()}]:
            with pytest.raises(bm.InvalidArgument):
                server.execute("block-job-complete", bad)  # type: ignore[arg-type]


def test_quit_through_execute_ends_wait_quit(tmp_path, image):
    with bm.serve(image, socket=str(tmp_path / "s.sock")) as server:
        assert server.wait_quit(0) is False
        assert server.execute("quit") == {}
        assert server.wait_quit(60) is True


def test_events_after_close_and_wait_event_timeouts(tmp_path, image):
    server = bm.serve(image, socket=str(tmp_path / "s.sock"))
    assert server.next_event(timeout=0) is None
    with pytest.raises(bm.Timeout):
        server.wait_event("BLOCK_JOB_READY", timeout=0.05)
    server.mirror(str(tmp_path / "t.img"), job_id="j", speed=1)
    assert server.wait_event("JOB_STATUS_CHANGE", timeout=120)["data"] == {"id": "j", "status": "created"}
    # Closing force-cancels the job; its last events are still handed out, then None.
    server.close()
    seen = []
    while (event := server.next_event()) is not None:
        seen.append(event["event"])
    assert "BLOCK_JOB_CANCELLED" in seen
    with pytest.raises(bm.Timeout):
        server.wait_event("BLOCK_JOB_READY")
    with pytest.raises(bm.JobStateError, match="closed"):
        server.execute("query-block-jobs")
