"""The `blockmirror` command line (placeholder until the file backend lands)."""

from __future__ import annotations

import argparse
import sys

import blockmirror


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blockmirror", description="Live block-device mirroring.")
    parser.add_argument("--version", action="version", version=blockmirror.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the built-in live mirror demo")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"blockmirror {blockmirror.__version__}: demo not built yet", file=sys.stderr)
    return 0
