"""The ``blockmirror`` command (also ``python -m blockmirror``): arguments and dispatch.

``blockmirror mirror`` runs in :mod:`blockmirror._cli_mirror`, ``blockmirror demo`` in
:mod:`blockmirror._demo`; the exit codes are listed in ``EXIT_CODES`` (and ``--help``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, List, Optional

import blockmirror

from blockmirror._cli_args import (  # noqa: F401  (re-exported: the CLI's public names)
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    _count,
    add_format_arguments,
    _non_negative_seconds,
    _seconds,
    parse_size,
    size_text,
)



SYNC_HELP = ("what to copy: full = everything SRC holds (default); top = only the ranges "
             "SRC allocates (its holes read as zeroes on a new DST); none = only writes made "
             "during the job, which this command makes none of. top with --reuse and none "
             "need --target-holds-base")
COPY_MODE_HELP = ("background = writes during the job only mark chunks dirty (default); "
                  "write-blocking = once a chunk is in sync, a write through the mirror also "
                  "goes to DST before it completes, so the job converges under any write rate")
POLICY_HELP = ("what a {side} error does: report = the job fails (default); ignore = log it, "
               "keep the chunk dirty and retry later; stop = pause the job (this command then "
               "cancels it: nothing can resume it); enospc = stop for 'no space left', report "
               "otherwise")


def add_job_options(p: argparse.ArgumentParser) -> None:
    """The job's knobs, shared by ``mirror`` (the demo takes a few of them)."""
    d = blockmirror.DEFAULTS  # the core's defaults: the help shows what the job uses
    policies = ["report", "ignore", "stop", "enospc"]
    granularity, buf_size, max_io = int(d["granularity"]), int(d["buf_size"]), int(d["max_io"])
    p.add_argument("--granularity", type=parse_size, default=granularity,
                   help=f"chunk size (default {size_text(granularity)})")
    p.add_argument("--buf-size", type=parse_size, default=buf_size,
                   help=f"copy buffers in flight (default {size_text(buf_size)})")
    p.add_argument("--speed", type=parse_size, default=int(d["speed"]),
                   help="speed limit per second (default 0: unlimited)")
    p.add_argument("--max-in-flight", type=_count, default=int(d["max_in_flight"]),
                   help=f"copies in flight (default {d['max_in_flight']})")
    p.add_argument("--max-io", type=parse_size, default=None,
                   help=f"largest single copy (default: {size_text(max_io)}, or the granularity when larger); "
                        "copies are also at most half of --buf-size (raise it for copies above that) "
                        "and 1M in write-blocking mode")
    p.add_argument("--sync", choices=["full", "top", "none"], default=d["sync"], help=SYNC_HELP)
    p.add_argument("--copy-mode", choices=["background", "write-blocking"], default=d["copy_mode"],
                   help=COPY_MODE_HELP)
    p.add_argument("--on-source-error", choices=policies, default=d["on_source_error"],
                   help=POLICY_HELP.format(side="read (source)"))
    p.add_argument("--on-target-error", choices=policies, default=d["on_target_error"],
                   help=POLICY_HELP.format(side="write (target)"))


MIRROR_DESCRIPTION = """\
Copy SRC to DST and switch over (DST becomes the image to use), or with --finish stop at
ready with DST a consistent copy.

This command is for disks written only through blockmirror. SRC must not be written by any
other program while it runs: blockmirror tracks only the writes made through it (the Python
Mirror API), and this command makes none, so a write by another program (a VM, dd, ...)
during the copy is never copied. To mirror a disk that other programs use, export it with
`blockmirror serve` and let them write through the export. SRC and DST are locked as QEMU
locks images: a QEMU, qemu-nbd or qemu-io writing either makes this command fail at once.
When SRC is a regular file whose modification time changes during the job, the command
fails (exit 1).

A DST this run creates is removed when the job fails, times out or is interrupted, unless
--keep-partial is given (then the command says where it is)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockmirror", description="Live block-device mirroring.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"blockmirror {blockmirror.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{mirror,serve,verify,demo}")

    m = sub.add_parser("mirror", help="mirror SRC onto DST (a raw image or block device)",
                       description=MIRROR_DESCRIPTION, epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("source", metavar="SRC")
    m.add_argument("target", metavar="DST")
    add_job_options(m)
    m.add_argument("--direct", action="store_true", help="O_DIRECT on both files")
    add_format_arguments(m, target=True)
    m.add_argument("--reuse", action="store_true", help="mirror into an existing DST of the same size")
    m.add_argument("--target-holds-base", action="store_true",
                   help="with --reuse: DST already holds what SRC's unallocated ranges (--sync top) "
                   "or all of SRC (--sync none) read as; required for those modes")
    m.add_argument("--keep-partial", action="store_true",
                   help="keep a DST this run created when the job does not succeed")
    m.add_argument("--no-unmap", dest="unmap", action="store_false",
                   help="write zero ranges as allocated zeroes instead of punching holes")
    m.add_argument("--auto-converge", action="store_true",
                   help="switch to write-blocking when the job reports it is not converging")
    m.add_argument("--no-io-uring", dest="io_uring", action="store_false",
                   help="with --direct: blocking worker threads instead of io_uring")
    m.add_argument("--no-offload", dest="offload", action="store_false",
                   help="copy through user space even where copy_file_range could be used")
    m.add_argument("--bitmap", metavar="PATH", default=None,
                   help="keep a crash-safe bitmap of the chunks left to copy at PATH (default with "
                   "--resume: DST.bmbitmap; required for an NBD DST); an interrupted or killed run "
                   "then keeps DST and resumes with --resume")
    m.add_argument("--bitmap-granularity", type=parse_size, default=None, metavar="N",
                   help="bytes per bit of the bitmap (a power of two, at least --granularity; "
                   "default the larger of --granularity and 1M; a resume must use the same)")
    m.add_argument("--bitmap-generation", type=int, default=None, metavar="N",
                   help="with --resume: refuse a bitmap whose generation is below N (an old copy "
                   "of the file); the generation a run left is printed when it keeps the bitmap")
    m.add_argument("--resume", action="store_true",
                   help="resume an interrupted mirror from its bitmap (implies --reuse): copy only "
                   "the chunks it marks")
    m.add_argument("--finish", action="store_true",
                   help="cancel at ready: DST is a consistent copy, no switch-over")
    m.add_argument("--timeout", type=_seconds, default=None, help="give up after S seconds (exit 1)")
    m.add_argument("--json", action="store_true",
                   help="print one JSON event per line on stdout, and a 'progress' line "
                   "every --progress-interval seconds")
    m.add_argument("--progress-interval", type=_non_negative_seconds, default=5.0, metavar="S",
                   help="seconds between progress lines when stderr is not a terminal, and "
                   "between --json progress events (default 5)")
    m.add_argument("--quiet", action="store_true", help="no progress bar or phase lines")

    from blockmirror._cli_serve import SERVE_DESCRIPTION, add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="export a live disk over NBD, mirror it under QMP control",
                                       description=SERVE_DESCRIPTION, epilog=EXIT_CODES,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))

    from blockmirror._cli_verify import VERIFY_DESCRIPTION, VERIFY_EXIT_CODES, add_verify_arguments

    add_verify_arguments(sub.add_parser("verify", help="compare SRC and DST chunk by chunk (and repair DST)",
                                        description=VERIFY_DESCRIPTION, epilog=VERIFY_EXIT_CODES,
                                        formatter_class=argparse.RawDescriptionHelpFormatter))

    from blockmirror._demo import add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="a live mirror of a generated image with a guest writing",
                                      description="Mirror a generated raw image while a simulated "
                                      "guest writes to it, complete, verify, summarise.",
                                      epilog=EXIT_CODES,
                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class _sigterm_as_exception:
    """While active, SIGTERM raises :class:`Terminated` in the main thread, so the runner
    cleans up as it does for Ctrl-C instead of dying with the job half done."""

    def __enter__(self) -> None:
        # Only the main thread may set handlers (main() can be called from elsewhere).
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._previous)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _sigterm_as_exception():
            if args.command == "mirror":
                from blockmirror._cli_mirror import run_mirror

                return run_mirror(args)
            if args.command == "serve":
                from blockmirror._cli_serve import run_serve

                return run_serve(args)
            if args.command == "verify":
                from blockmirror._cli_verify import run_verify

                return run_verify(args)
            from blockmirror._demo import run_demo

            return run_demo(args)
    except KeyboardInterrupt:
        print("\ncancelled (interrupted)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("\ncancelled (terminated)", file=sys.stderr)
        return EXIT_TERMINATED


__all__ = ["main", "parse_size", "build_parser", "EXIT_CODES", "Terminated"]
