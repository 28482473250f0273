"""``blockmirror verify SRC DST``: compare two images, print the differing ranges, and with
``--repair`` copy them from SRC. Exit 0 when equal (or repaired), 1 when they differ, 2 on
an error (bad arguments, an image that cannot be opened or read, different sizes)."""

from __future__ import annotations

import argparse
import json
import sys

from blockmirror._cli_args import parse_size, size_text

VERIFY_EXIT_EQUAL, VERIFY_EXIT_DIFFER, VERIFY_EXIT_ERROR = 0, 1, 2

VERIFY_DESCRIPTION = """\
Compare SRC and DST chunk by chunk (digests of both sides read in parallel; holes are not
read) and list the byte ranges that differ. With --repair, copy those chunks from SRC onto
DST and check them again. Neither image may be written by another program meanwhile."""

VERIFY_EXIT_CODES = """\
exit codes:
  0    the images are equal (with --repair: equal after the repair)
  1    the images differ (with --repair: still differ after it)
  2    an error: bad arguments, an image that cannot be opened or read, different sizes"""


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    from blockmirror._verify import DEFAULT_VERIFY_GRANULARITY

    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p.add_argument("--granularity", type=parse_size, default=DEFAULT_VERIFY_GRANULARITY,
                   help=f"chunk size, the precision of the reported ranges (default "
                   f"{size_text(DEFAULT_VERIFY_GRANULARITY)})")
    p.add_argument("--repair", action="store_true", help="copy the differing chunks from SRC onto DST")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_verify(args: argparse.Namespace) -> int:
    import blockmirror
    from blockmirror._verify import verify

    try:
        report = verify(args.source, args.target, granularity=args.granularity, repair=args.repair)
    except blockmirror.BlockMirrorError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"blockmirror verify: {exc}", file=sys.stderr)
        return VERIFY_EXIT_ERROR
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for start, end in report.differing:
            print(f"differ: {start}-{end} ({end - start} bytes)")
        verdict = "equal" if report.equal else "differ"
        extra = f", repaired {report.repaired_bytes} bytes" if report.repaired_bytes else ""
        print(f"{verdict}: {len(report.differing)} differing ranges, {report.differing_bytes} bytes{extra} "
              f"({report.length} bytes compared in {report.elapsed:.2f} s)")
    return VERIFY_EXIT_EQUAL if report.equal else VERIFY_EXIT_DIFFER
