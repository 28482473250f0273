"""What the CLI's commands share: exit codes, the SIGTERM exception and the argument types
(sizes, counts, seconds). A module of its own so that ``cli`` (dispatch), ``_cli_mirror``
and ``_demo`` all import it and none of them imports another."""

from __future__ import annotations

import argparse
import re
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

EXIT_CODES = """\
exit codes:
  0    success (mirror: DST was switched to, or with --finish is a consistent copy)
  1    the job failed, stopped on an error, timed out, or SRC changed behind its back
  2    bad arguments, or files that cannot be opened or used as asked
  130  interrupted by Ctrl-C (SIGINT): the job is force-cancelled first
  143  terminated by SIGTERM: handled like Ctrl-C"""

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Sizes and counts reach Rust as u64: larger values are bad arguments, not tracebacks.
_U64_MAX = (1 << 64) - 1


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread like ``KeyboardInterrupt`` for SIGINT."""


def parse_size(text: str) -> int:
    """``"64K"`` → 65536: an integer with an optional binary K/M/G/T suffix (``B``/``iB`` allowed)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 4096, 64K, 16M, 1G)")
    value = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if value > _U64_MAX:
        raise argparse.ArgumentTypeError(f"size {text!r} is too large (at most 2**64 - 1 bytes)")
    return value


def size_text(value: int) -> str:
    """65536 → ``"64K"``: the largest binary unit that divides ``value`` (what ``parse_size`` reads)."""
    for suffix in "TGMK":
        unit = _SIZE_UNITS[suffix.lower()]
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if not 1 <= value <= 1 << 32:
        raise argparse.ArgumentTypeError(f"count {text!r} must be between 1 and 2**32")
    return value


def _seconds_parser(allow_zero: bool) -> Callable[[str], float]:
    """An argparse type for a finite number of seconds, positive or (``allow_zero``)
    non-negative; nan and inf are refused."""
    kind = "non-negative" if allow_zero else "positive"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
        if not (0 <= value if allow_zero else 0 < value) or not value < 1e9:
            raise argparse.ArgumentTypeError(f"seconds must be {kind} and finite, not {text!r}")
        return value

    return parse


_seconds = _seconds_parser(allow_zero=False)
_non_negative_seconds = _seconds_parser(allow_zero=True)


IMAGE_FORMATS = ("raw", "qcow2")


def add_format_arguments(parser: argparse.ArgumentParser, target: bool) -> None:
    """``--format`` (and with ``target``, ``--target-format``): force an image's format as
    QEMU's options do; by default it is probed (a created DST takes SRC's)."""
    parser.add_argument("--format", choices=IMAGE_FORMATS, default=None,
                        help="SRC's format (default: probed; qcow2 is read through its backing chain)")
    if target:
        parser.add_argument("--target-format", choices=IMAGE_FORMATS, default=None,
                            help="DST's format (default: probed, or SRC's for a DST this run creates)")


def is_qcow2(path: str, forced: "str | None") -> bool:
    """Whether ``path`` is (or is forced to be) a qcow2 image; a missing file is not."""
    if forced is not None:
        return forced == "qcow2"
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"QFI\xfb"
    except OSError:
        return False
