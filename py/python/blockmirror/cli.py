"""The ``blockmirror`` command (also ``python -m blockmirror``).

Exit codes: 0 success, 1 the job failed (or timed out), 2 bad arguments (including files
that cannot be opened), 130 interrupted (Ctrl-C force-cancels the job first).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import List, Optional, TextIO

import blockmirror
from blockmirror._events import MirrorEvent
from blockmirror._mirror import Mirror
from blockmirror._native import InvalidArgument, IoError, JobStateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"64K"`` → 65536: an integer with an optional binary K/M/G/T suffix (``B``/``iB`` allowed)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 4096, 64K, 16M, 1G)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return value


def _add_job_options(p: argparse.ArgumentParser) -> None:
    policies = ["report", "ignore", "stop", "enospc"]
    p.add_argument("--granularity", type=parse_size, default=65536, help="chunk size (default 64K)")
    p.add_argument("--buf-size", type=parse_size, default=16 << 20, help="copy buffers in flight (default 16M)")
    p.add_argument("--speed", type=parse_size, default=0, help="speed limit per second (default 0: unlimited)")
    p.add_argument("--max-in-flight", type=int, default=16, help="copies in flight (default 16)")
    p.add_argument("--max-io", type=parse_size, default=1 << 20, help="largest single copy (default 1M)")
    p.add_argument("--sync", choices=["full", "top", "none"], default="full")
    p.add_argument("--copy-mode", choices=["background", "write-blocking"], default="background")
    p.add_argument("--on-source-error", choices=policies, default="report")
    p.add_argument("--on-target-error", choices=policies, default="report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockmirror", description="Live block-device mirroring.")
    parser.add_argument("--version", action="version", version=f"blockmirror {blockmirror.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{mirror,demo}")

    m = sub.add_parser("mirror", help="mirror SRC onto DST (a raw image or block device)",
                       description="Copy SRC to DST and complete (DST becomes the new image), "
                       "or with --finish stop at ready with DST a consistent copy.")
    m.add_argument("source", metavar="SRC")
    m.add_argument("target", metavar="DST")
    _add_job_options(m)
    m.add_argument("--direct", action="store_true", help="O_DIRECT on both files")
    m.add_argument("--reuse", action="store_true", help="mirror into an existing DST of the same size")
    m.add_argument("--no-unmap", dest="unmap", action="store_false",
                   help="write zero ranges as allocated zeroes instead of punching holes")
    m.add_argument("--auto-converge", action="store_true",
                   help="switch to write-blocking when the job reports it is not converging")
    m.add_argument("--no-io-uring", dest="io_uring", action="store_false",
                   help="with --direct: blocking worker threads instead of io_uring")
    m.add_argument("--no-offload", dest="offload", action="store_false",
                   help="copy through user space even where copy_file_range could be used")
    m.add_argument("--finish", action="store_true",
                   help="cancel at ready: DST is a consistent copy, no switch-over")
    m.add_argument("--timeout", type=_seconds, default=None, help="give up after S seconds (exit 1)")
    m.add_argument("--json", action="store_true", help="print one JSON event per line on stdout")
    m.add_argument("--quiet", action="store_true", help="no progress bar or phase lines")

    from blockmirror._demo import add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="a live mirror of a generated image with a guest writing",
                                      description="Mirror a generated raw image while a simulated "
                                      "guest writes to it, complete, verify, summarise."))
    return parser


class Reporter:
    """Phase lines and the progress bar on stderr; JSON events on stdout."""

    def __init__(self, json_out: bool, quiet: bool, err: TextIO) -> None:
        self.json_out = json_out
        self.quiet = quiet
        self.err = err
        self.bar = None
        if not quiet:
            from blockmirror._progress import ProgressBar

            self.bar = ProgressBar("mirror", file=err)

    def phase(self, message: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.phase(message)
        else:
            print(message, file=self.err)

    def event(self, event: MirrorEvent) -> None:
        if self.json_out:
            print(json.dumps(event.to_dict()), flush=True)
        if event.type == "BLOCK_JOB_READY":
            self.phase("now in mirroring phase (target in sync; the guest may keep writing)")
        elif event.type == "BLOCK_JOB_ERROR":
            self.phase(f"error: {event.operation} at offset {event.offset}: {event.error} "
                       f"(policy action: {event.action})")

    def progress(self, current: int, total: int, status: str, done: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_status(status)
            self.bar.update(current, total, done=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _mib_per_sec(nbytes: int, seconds: float) -> float:
    return nbytes / (1 << 20) / seconds if seconds > 0 else 0.0


def run_mirror(args: argparse.Namespace) -> int:
    err = sys.stderr
    rep = Reporter(args.json, args.quiet, err)
    stopped: List[MirrorEvent] = []

    def on_event(event: MirrorEvent) -> None:
        if event.type == "BLOCK_JOB_ERROR" and event.action == "stop":
            stopped.append(event)

    try:
        m = Mirror(args.source, args.target, granularity=args.granularity, sync=args.sync,
                   copy_mode=args.copy_mode, on_source_error=args.on_source_error,
                   on_target_error=args.on_target_error, speed=args.speed, buf_size=args.buf_size,
                   max_in_flight=args.max_in_flight, max_io=args.max_io, direct=args.direct,
                   reuse=args.reuse, unmap=args.unmap, offload=args.offload, io_uring=args.io_uring,
                   auto_converge=args.auto_converge,
                   on_event=on_event,
                   guest_writes=False)
    except (InvalidArgument, IoError) as exc:
        rep.close()
        print(f"blockmirror: error: {exc}", file=err)
        return EXIT_USAGE
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = 0
    try:
        with m:
            ending = False
            while True:
                events = m.events
                for event in events[shown:]:
                    rep.event(event)
                shown = len(events)
                if m.ended:
                    break
                if stopped:
                    m.cancel(force=True)
                    ev = stopped[0]
                    rep.close()
                    print(f"blockmirror: error: the job stopped on a {ev.operation} error ({ev.error}) "
                          f"at offset {ev.offset}; nothing can resume it from the command line",
                          file=err)
                    _flush_events(m, rep, shown)
                    return EXIT_FAILED
                if deadline is not None and time.monotonic() > deadline:
                    m.cancel(force=True)
                    _flush_events(m, rep, shown)
                    rep.close()
                    print(f"blockmirror: error: timed out after {args.timeout} s; cancelled", file=err)
                    return EXIT_FAILED
                if not ending:
                    # Returns at once when ready: the switch starts without polling delay.
                    if m._native.wait_ready(0.1) == "ready":
                        try:
                            if args.finish:
                                m._native.cancel(False)
                            else:
                                m._native.complete()
                            ending = True
                        except JobStateError:
                            m._native.wait_end(0.1)  # e.g. standby after a `stop`: checked above
                else:
                    m._native.wait_end(0.1)
                current, total = m.progress
                rep.progress(current, total, m.status)
            try:
                result = m._wait_end(None)
            except IoError as exc:
                _flush_events(m, rep, shown)
                rep.close()
                where = f" at offset {exc.offset}" if exc.offset is not None else ""
                print(f"blockmirror: error: job failed: {exc.operation or 'I/O'} error{where}: "
                      f"{exc.strerror}", file=err)
                return EXIT_FAILED
            _flush_events(m, rep, shown)
            rep.progress(result.bytes_copied, result.bytes_copied, result.status, done=True)
            rep.close()
            rate = _mib_per_sec(result.bytes_copied, result.seconds)
            if not args.quiet:
                if result.pivoted:
                    print("pivoted: the target is the new image", file=err)
                verb = "copied" if not result.cancelled else "cancelled"
                print(f"{verb}: {result.bytes_copied} bytes in {result.seconds:.2f} s "
                      f"({rate:.0f} MiB/s; {result.bytes_zeroed} bytes zeroed)", file=err)
            return EXIT_OK if not result.cancelled else EXIT_FAILED
    except KeyboardInterrupt:
        # `with m` has force-cancelled and waited; the mirror never wrote the source.
        _flush_events(m, rep, shown)
        rep.close()
        print("\ncancelled (interrupted)", file=err)
        return EXIT_INTERRUPTED


def _flush_events(m: Mirror, rep: Reporter, shown: int) -> None:
    m._wait_events_drained()
    for event in m.events[shown:]:
        rep.event(event)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "mirror":
            return run_mirror(args)
        from blockmirror._demo import run_demo

        return run_demo(args)
    except KeyboardInterrupt:
        print("\ncancelled (interrupted)", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["main", "parse_size", "build_parser"]
