"""``blockmirror mirror SRC DST``: one job from start to end, with a terminal as its face.

What must stay true:

- Responsive: the main thread only waits in ``Mirror.run_to_end``, which waits in the
  native mirror a tenth of a second at a time, so ``--timeout``, Ctrl-C
  (``KeyboardInterrupt``) and SIGTERM (``Terminated``) are acted on within a tick, even
  while the job is busy failing and retrying.
- Honest: "pivoted" is printed only after a successful switch-over; a source whose
  modification time changed during the job (written by another program, which this
  process cannot see) makes the run fail; ``--sync none`` and ``--sync top --reuse``, which
  leave DST's old contents wherever they copy nothing, are refused unless the user says
  DST holds them (``--target-holds-base``).
- Tidy: a DST this run created is removed when the run does not succeed, unless
  ``--keep-partial``; the removal checks the path still names the file it created.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable, List, Optional, Tuple, Union

from blockmirror._mirror import Mirror
from blockmirror._target_files import open_tracking_creation
from blockmirror._native import DEFAULTS, BitmapError, BlockMirrorError, InvalidArgument, IoError, Timeout, read_bitmap
from blockmirror._progress import format_bytes, format_rate
from blockmirror._report import Reporter
from blockmirror._cli_args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, Terminated
from blockmirror._cli_args import is_qcow2

__all__ = ["run_mirror"]

_DEFAULT_MAX_IO = int(DEFAULTS["max_io"])  # the core's default

# Messages from the library name Python parameters; the command's users know its flags.
_FLAG_NAMES: List[Tuple["re.Pattern[str]", Union[str, Callable[["re.Match[str]"], str]]]] = [
    (re.compile(r"reuse=True(?: \(--reuse\))?"), "--reuse"),
    (re.compile(r"resume=True(?: \(--resume\))?"), "--resume"),
    (re.compile(r"\bbitmap granularity\b"), "--bitmap-granularity"),
    (re.compile(r"bitmap=PATH(?:, --bitmap PATH)?"), "--bitmap PATH"),
    (re.compile(r"\b(max_io|buf_size|max_in_flight|on_source_error|on_target_error|copy_mode|"
                r"not_converging_window)\b"), lambda m: "--" + m.group(1).replace("_", "-")),
]
_OS_ERROR_SUFFIX = re.compile(r"\s*\(os error \d+\)$")


def cli_message(text: str) -> str:
    """A library message in the command's words: flag names, the errno said once."""
    for pattern, replacement in _FLAG_NAMES:
        text = pattern.sub(replacement, text)
    return _OS_ERROR_SUFFIX.sub("", text)


def _io_message(exc: IoError) -> str:
    return cli_message(exc.strerror or str(exc))


def _sync_refusal(args: argparse.Namespace) -> Optional[str]:
    """Why this sync mode would leave DST different from SRC, or None."""
    if args.target_holds_base and not args.reuse:
        return "--target-holds-base needs --reuse: a DST this run creates holds nothing yet"
    if args.target_holds_base:
        return None
    # A qcow2 DST gets (or must already have) the backing file the mode needs, which is what
    # makes top and none whole images: the library checks it.
    target_format = getattr(args, "target_format", None)
    source_qcow2 = is_qcow2(args.source, getattr(args, "format", None))
    if is_qcow2(args.target, target_format) or (
            source_qcow2 and target_format is None and not os.path.exists(args.target)):
        return None
    if args.sync == "none":
        return ("--sync none copies only writes made during the job, and this command makes "
                "none: DST would keep whatever it holds (zeroes when new). Use --sync full, or "
                "--reuse --target-holds-base when DST already holds all of SRC's data")
    if args.sync == "top" and args.reuse:
        return ("--sync top copies only the ranges SRC allocates; with --reuse, DST keeps its old "
                "contents everywhere else. Use --sync full, or add --target-holds-base when DST "
                "already holds what SRC's unallocated ranges read as")
    return None


def _stamp(path: str) -> Optional[Tuple[int, int]]:
    """A regular file's (mtime_ns, size): changes when another program writes it."""
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size) if os.path.isfile(path) else None


def run_mirror(args: argparse.Namespace) -> int:
    err = sys.stderr
    refusal = _sync_refusal(args)
    if refusal is not None:
        print(f"blockmirror: error: {refusal}", file=err)
        return EXIT_USAGE
    max_io = args.max_io if args.max_io is not None else max(_DEFAULT_MAX_IO, args.granularity)
    bitmap = getattr(args, "bitmap", None)
    resume = getattr(args, "resume", False)
    # With a bitmap, a run that does not succeed leaves DST for --resume to finish.
    keep_partial = args.keep_partial or bitmap is not None or resume
    try:
        stamp = _stamp(args.source) if os.path.exists(args.source) else None
        m, created = open_tracking_creation(lambda: Mirror(
            args.source, args.target, granularity=args.granularity, sync=args.sync,
            copy_mode=args.copy_mode, on_source_error=args.on_source_error,
            on_target_error=args.on_target_error, speed=args.speed, buf_size=args.buf_size,
            max_in_flight=args.max_in_flight, max_io=max_io, direct=args.direct,
            reuse=args.reuse, unmap=args.unmap, offload=args.offload, io_uring=args.io_uring,
            auto_converge=args.auto_converge, guest_writes=False,
            format=getattr(args, "format", None), target_format=getattr(args, "target_format", None),
            bitmap=bitmap, resume=resume, bitmap_granularity=getattr(args, "bitmap_granularity", None),
            bitmap_min_generation=getattr(args, "bitmap_generation", None)),
            args.target, remove_on_interrupt=not keep_partial)
    except BitmapError as exc:
        print(f"blockmirror: error: {cli_message(str(exc))}", file=err)
        return EXIT_USAGE
    except InvalidArgument as exc:
        print(f"blockmirror: error: {cli_message(str(exc))}", file=err)
        return EXIT_USAGE
    except IoError as exc:
        print(f"blockmirror: error: {_io_message(exc)}", file=err)
        return EXIT_USAGE
    code = EXIT_FAILED
    rep: Optional[Reporter] = None
    # From here every way out, an interrupt included, passes the `finally` that tidies up.
    try:
        rep = Reporter(sys.stdout if args.json else None, args.quiet, err, args.progress_interval,
                       started=m.started)
        feed = _Feed(m, rep)
        try:
            with m:  # leaving it un-ended force-cancels and waits
                code = _drive(m, args, feed, stamp)
        except (KeyboardInterrupt, Terminated) as exc:
            code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_TERMINATED
            feed.drain()
            rep.close()
            how = "interrupted" if code == EXIT_INTERRUPTED else "terminated by SIGTERM"
            print(f"\ncancelled ({how})", file=err, flush=True)
    finally:
        if rep is not None:
            rep.close()
        m.close()  # idempotent: for an interrupt that came before `with m`
        if code != EXIT_OK and m.bitmap_path is not None:
            bitmap_flag = "" if m.bitmap_path == args.target + ".bmbitmap" else f" --bitmap {m.bitmap_path}"
            try:
                # Passing it back refuses an older copy of the file put in its place.
                bitmap_flag += f" --bitmap-generation {read_bitmap(m.bitmap_path)['generation']}"
            except BlockMirrorError:
                pass
            print(f"blockmirror: {args.target} and its bitmap {m.bitmap_path} are kept; resume with: "
                  f"blockmirror mirror {args.source} {args.target} --resume{bitmap_flag}", file=err)
        elif code != EXIT_OK and created is not None:
            if args.keep_partial:
                print(f"blockmirror: the partial target is kept at {created.path} (not a usable "
                      f"copy; a re-run into it needs --reuse)", file=err)
            elif created.remove():
                print(f"blockmirror: removed the partial target {created.path}", file=err)
    return code


class _Feed:
    """Moves the mirror's new events to the reporter."""

    def __init__(self, m: Mirror, rep: Reporter) -> None:
        self.m, self.rep = m, rep
        self.shown = 0
        self.not_stored = 0

    def pump(self) -> None:
        events = self.m.events_since(self.shown)
        self.shown += len(events)
        for event in events:
            self.rep.event(event)
        # Errors the mirror counted instead of keeping are repeats of the latest kept one
        # (give or take the order of a change of kind between two pumps).
        not_stored = self.m.errors_not_stored
        self.rep.more_repeats(not_stored - self.not_stored)
        self.not_stored = not_stored

    def drain(self) -> None:
        """The rest, once the job has ended. Closing the mirror first bounds the wait: a job
        that spun on errors can leave more events queued than a second can convert, and
        then the newest are cut off (and said to be)."""
        self.m.close()
        self.pump()
        if self.m.events_truncated:
            self.rep.phase("(the newest events are not shown: too many were queued)")


def _drive(m: Mirror, args: argparse.Namespace, feed: _Feed, stamp: Optional[Tuple[int, int]]) -> int:
    rep = feed.rep

    def tick() -> None:
        feed.pump()
        current, total = m.progress
        rep.progress(current, total, m.status)

    try:
        result = m.run_to_end(pivot=not args.finish, timeout=args.timeout, on_tick=tick)
    except Timeout:
        feed.drain()
        rep.error(f"timed out after {args.timeout:g} s; cancelled")
        return EXIT_FAILED
    except IoError as exc:
        feed.drain()
        stop = getattr(exc, "event", None)
        if stop is not None:
            rep.error(f"the job stopped on a {stop.operation} error ({stop.error}) at offset "
                      f"{stop.offset}; nothing can resume it from the command line")
        else:
            where = f" at offset {exc.offset}" if exc.offset is not None else ""
            rep.error(f"job failed: {exc.operation or 'I/O'} error{where}: {_io_message(exc)}")
        return EXIT_FAILED
    feed.drain()
    rep.progress(result.bytes_copied, result.bytes_copied, result.status, done=True)
    rep.close()
    if stamp is not None and _stamp(args.source) != stamp:
        rep.error(f"{args.source} was modified during the mirror by another program; blockmirror "
                  f"sees only writes made through it, so {args.target} may differ from it")
        return EXIT_FAILED
    if result.cancelled:
        rep.error("the job was cancelled")
        return EXIT_FAILED
    if not args.quiet:
        if result.pivoted:
            trust = " (on the word of --target-holds-base)" if args.target_holds_base else ""
            print(f"pivoted: {args.target} is the new image{trust}", file=rep.err)
        elif args.finish:
            print(f"finished: {args.target} is a consistent copy of {args.source}", file=rep.err)
        print(f"copied: {format_bytes(result.bytes_copied)} in {result.seconds:.2f} s "
              f"({format_rate(result.bytes_per_sec)}; {format_bytes(result.bytes_zeroed)} zeroed)",
              file=rep.err)
    return EXIT_OK
