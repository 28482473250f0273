"""``blockmirror demo --serve``: the demo with its disk behind an NBD export.

The generated image is served on a unix socket in the demo's private temp dir; the guest
writes over NBD; the job is started, watched and completed with QMP commands run
in-process (:meth:`blockmirror.Server.execute`) and its QMP events
(:meth:`blockmirror.Server.next_event`), exactly as a management tool would over the monitor
socket. Verification after the switch-over, with the guest still connected:

- ``--guest nbd`` (blockmirror's NBD client): the guest logs its writes from the moment
  ``block-job-complete`` is sent; replaying them on the source gives "the disk as the guest
  last wrote it" (the source lacks only writes made after the switch, all in that log). The
  whole disk read back through the export, and the target file once the server is closed,
  must equal it.
- ``--guest fio``: fio writes with crc32c headers and re-reads every block it wrote a
  moment later (``verify_backlog``), so blocks written before the switch are checked on the
  target after it; fio must report no error, and the export read back must equal the
  target file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from blockmirror._demo import Guest, _mib, files_equal

if TYPE_CHECKING:
    from blockmirror._serve import Server

JOB_ID = "demo"
_READ_PIECE = 8 << 20


class FioGuest(threading.Thread):
    """fio's ``nbd`` engine writing ``block``-sized random writes at ``rate`` until stopped,
    verifying each block a little after writing it."""

    def __init__(self, uri: str, size: int, rate: int, block: int, seed: int, workdir: str) -> None:
        super().__init__(name="demo-fio", daemon=True)
        self.workdir = workdir  # fio's cwd: anything it leaves goes with the temp dir
        self.args = [shutil.which("fio") or "fio", "--name=guest", "--ioengine=nbd", f"--uri={uri}",
                     "--rw=randwrite", f"--bs={block}", f"--size={size}", "--time_based", "--runtime=86400",
                     "--verify=crc32c", "--verify_backlog=64", "--verify_fatal=1", "--verify_state_save=0",
                     f"--randseed={seed}",
                     "--output-format=terse"] + ([f"--rate={rate}"] if rate > 0 else [])
        self.proc: Optional[subprocess.Popen[str]] = None
        self.output = ""
        self.started = threading.Event()
        self.error: Optional[BaseException] = None
        self.bytes_written = 0

    def run(self) -> None:
        try:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         cwd=self.workdir)
            self.started.set()
            self.output, _ = self.proc.communicate()
        except BaseException as exc:
            self.error = exc
            self.started.set()

    def wait_connected(self, server: "Server", limit: float = 60.0) -> None:
        """Waits until fio has connected to the export (a loaded machine starts it slowly:
        a job started before would run without its guest), or it ended, or ``limit`` s."""
        self.started.wait()
        deadline = time.monotonic() + limit
        while server.client_count == 0 and time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        """Ends fio the way Ctrl-C does (it then reports what it did)."""
        self.started.wait()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.join()

    def verdict(self) -> Optional[str]:
        """None when fio wrote and verified without error, else what went wrong."""
        if self.error is not None:
            return f"fio did not run: {self.error}"
        terse = [line.split(";") for line in self.output.splitlines() if line.startswith("3;")]
        if not terse:
            return f"fio printed no result: {self.output.strip()[-500:]}"
        fields = terse[-1]
        # Terse v3: field 4 is the job's error number, field 5 the KiB it wrote.
        self.bytes_written = int(fields[5]) * 1024 if fields[5].isdigit() else 0
        if fields[4] != "0" or "verify:" in self.output:
            return "fio reported an error: " + " ".join(
                line for line in self.output.splitlines() if not line.startswith("3;"))[-500:]
        return None


def _export_matches(uri: str, path: str) -> bool:
    """The disk read back through the export equals the file at ``path``."""
    from blockmirror._native import NbdClient

    with NbdClient(uri) as reader, open(path, "rb") as f:
        for at in range(0, reader.size, _READ_PIECE):
            n = min(_READ_PIECE, reader.size - at)
            if reader.read(at, n) != f.read(n):
                return False
    return True


def _job_progress(server: Any) -> Optional[Dict[str, Any]]:
    jobs = server.execute("query-block-jobs")
    return jobs[0] if jobs else None


def run_served(args: argparse.Namespace, source: str, target: str, pool: bytes,
               bar: Any, say: Callable[[str], None]) -> int:
    """The served demo (see the module doc); returns the exit code."""
    from blockmirror._native import NbdClient
    from blockmirror._serve import serve

    err = sys.stderr
    phase: Callable[[str], None] = (lambda msg: None) if bar is None else bar.phase
    socket_path = os.path.join(os.path.dirname(source), "nbd.sock")

    def show() -> Optional[Dict[str, Any]]:
        job = _job_progress(server)
        if bar is not None and job is not None:
            bar.update(job["offset"], job["len"])
            bar.set_status(job["status"])
        return job

    guest: Any = None

    def stop_guest() -> None:
        """Stops the guest and waits for it (idempotent)."""
        if isinstance(guest, FioGuest):
            guest.stop()
        elif guest is not None:
            guest.stop_event.set()
            guest.join()

    with serve(source, socket=socket_path, not_converging_window=args.not_converging_window) as server:
        say(f"serving {source} over NBD at {server.uri}")
        client: Optional[NbdClient] = None
        if args.guest == "fio":
            guest = FioGuest(server.uri, args.size, args.rate, args.block, args.seed + 1, os.path.dirname(source))
        else:
            client = NbdClient(server.uri)
            guest = Guest(client, args.size, args.rate, args.block, args.seed + 1, pool)
        guest.start()
        try:
            if isinstance(guest, FioGuest):
                guest.wait_connected(server)
            t0 = time.monotonic()
            server.mirror(target, job_id=JOB_ID, copy_mode=args.copy_mode, speed=args.speed,
                          granularity=args.granularity)
            phase(f"drive-mirror {JOB_ID}: {args.guest} guest writing {_mib(args.rate)}/s over NBD in "
                  f"{args.block // 1024} KiB blocks, copy mode {args.copy_mode}"
                  f"{', auto-converge' if args.auto_converge else ''}")
            events: List[str] = []
            give_up = t0 + args.time_limit

            def take_events(timeout: float) -> Optional[Dict[str, Any]]:
                """Handles the job's events for up to ``timeout`` seconds; returns the first
                final one (BLOCK_JOB_COMPLETED / BLOCK_JOB_CANCELLED) or None."""
                end = time.monotonic() + timeout
                while True:
                    event = server.next_event(max(0.0, end - time.monotonic()))
                    if event is None:
                        return None
                    events.append(event["event"])
                    if event["event"] == "BLOCK_JOB_NOT_CONVERGING" and args.auto_converge:
                        server.execute("block-job-change", {"id": JOB_ID, "type": "mirror",
                                                            "copy-mode": "write-blocking"})
                        phase("not converging: block-job-change copy-mode=write-blocking")
                    if event["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
                        return event

            ready = False
            while not ready:
                final = take_events(0.1)
                if final is not None:
                    stop_guest()
                    print(f"blockmirror demo: the job ended before it was ready: {final}", file=err)
                    return 1
                ready = "BLOCK_JOB_READY" in events
                job = show()
                if not ready and time.monotonic() >= give_up:
                    left = job["len"] - job["offset"] if job else 0
                    server.execute("block-job-cancel", {"device": JOB_ID, "force": True})
                    stop_guest()
                    if bar is not None:
                        bar.close()
                    print(f"blockmirror demo: not ready after {args.time_limit:g} s ({_mib(left)} still to copy); "
                          f"a guest that dirties the disk as fast as it is copied keeps a background mirror from "
                          f"converging: try --auto-converge, --copy-mode write-blocking, a higher --speed or a "
                          f"lower --rate", file=err)
                    return 1
            t_ready = time.monotonic() - t0
            phase("BLOCK_JOB_READY: the target is in sync and kept in sync")
            in_sync_until = time.monotonic() + args.in_sync_seconds
            while time.monotonic() < in_sync_until:
                take_events(min(0.1, max(0.0, in_sync_until - time.monotonic())))
                show()
            phase("block-job-complete: quiesce the guest's writes, copy what is dirty, flush, switch over")
            if isinstance(guest, Guest):
                guest.log_writes.set()
            server.execute("block-job-complete", {"device": JOB_ID})
            final = take_events(max(args.time_limit, 60.0))
            if final is None:
                stop_guest()
                print(f"blockmirror demo: block-job-complete: the job did not end within "
                      f"{max(args.time_limit, 60.0):g} s", file=err)
                return 1
            t_done = time.monotonic() - t0
            if bar is not None:
                bar.update(final["data"]["offset"], final["data"]["len"], done=True)
                bar.set_status("concluded")
                bar.close()
            if final["event"] != "BLOCK_JOB_COMPLETED" or "error" in final["data"]:
                stop_guest()
                print(f"blockmirror demo: the job did not complete: {final}", file=err)
                return 1
            say(f"BLOCK_JOB_COMPLETED: the export now serves the target; the {args.guest} guest is still "
                f"connected and writing ({server.client_count} NBD clients)")
            # Let the guest write a little to the target, then stop it.
            if isinstance(guest, Guest):
                guest.wait_written(guest.bytes_written + 8 * guest.block, timeout=2.0)
            else:
                time.sleep(min(1.0, max(0.3, args.in_sync_seconds)))
            stop_guest()
            if client is not None:
                client.close()
            if guest.error is not None:
                raise guest.error
            fio_problem = guest.verdict() if isinstance(guest, FioGuest) else None
            if isinstance(guest, Guest):
                guest.replay_log(source)
                expected = source
            else:
                expected = target  # fio's writes are not logged: fio verified them itself
            export_same = _export_matches(server.uri, expected)
            uri = server.uri
        finally:
            # Also on Ctrl-C, SIGTERM or an error: no guest (fio) left writing to a closed export.
            stop_guest()
    target_same = files_equal(expected, target)
    same = export_same and target_same and fio_problem is None
    if fio_problem is not None:
        print(f"MISMATCH: {fio_problem}", file=err)
    if same:
        what = "fio verified its writes; " if args.guest == "fio" else ""
        print(f"verified: {what}the export after the switch-over == the target == what the guest wrote", file=err)
    else:
        print(f"MISMATCH: export after the switch-over {'==' if export_same else '!='} expected, "
              f"target file {'==' if target_same else '!='} expected", file=err)
    src_alloc = os.stat(source).st_blocks * 512
    dst_alloc = os.stat(target).st_blocks * 512
    print(
        f"summary: {_mib(args.size)} image served at {uri}, ready after {t_ready:.2f} s, completed after "
        f"{t_done:.2f} s; {_mib(final['data']['len'])} copied, {_mib(guest.bytes_written)} written by the "
        f"{args.guest} guest over NBD; {len(events)} QMP events; allocated: source {_mib(src_alloc)}, "
        f"target {_mib(dst_alloc)}",
        file=err,
    )
    return 0 if same else 1
