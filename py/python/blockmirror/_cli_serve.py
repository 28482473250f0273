"""``blockmirror serve``: export a live disk over NBD, with a QMP monitor for mirror jobs."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from blockmirror._cli_args import EXIT_OK, EXIT_USAGE, Terminated, add_format_arguments

SERVE_DESCRIPTION = """\
Export SOURCE (a raw image, a qcow2 image with its backing chain, or a block device) over NBD so that real programs (a VM, fio,
qemu-io, a filesystem through nbd-client) use it while blockmirror mirrors it. Control is
over QMP, QEMU's monitor protocol: qemu.qmp, qmp-shell or scripts written for QEMU send
drive-mirror, query-block-jobs, block-job-complete, block-job-cancel, ... to --qmp PATH.
After a job's switch-over the export serves the target, with no client disconnected.

NBD has no authentication: the unix sockets are created mode 0600, and TCP listens on
127.0.0.1 unless --listen names another address. SOURCE is locked as QEMU locks images.
Stop with Ctrl-C, SIGTERM or QMP quit: a running job is cancelled, requests in flight are
answered, the disk is flushed, exit 0."""


def _listen_address(text: str) -> str:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``; a bare port listens on 127.0.0.1."""
    if text.isdigit():
        return f"127.0.0.1:{text}"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not PORT or HOST:PORT")
    return text


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="NBD on this unix socket (mode 0600)")
    where.add_argument("--listen", metavar="[HOST:]PORT", type=_listen_address,
                       help="NBD on TCP (HOST defaults to 127.0.0.1)")
    p.add_argument("--export", default="disk", metavar="NAME", help="export name, also the QMP device (default disk)")
    p.add_argument("--qmp", metavar="PATH", help="QMP monitor on this unix socket (mode 0600)")
    p.add_argument("--read-only", action="store_true", help="clients may only read")
    p.add_argument("--max-clients", type=int, default=64, metavar="N",
                   help="connections beyond N are refused (default 64)")
    p.add_argument("--direct", action="store_true", help="jobs open their files with O_DIRECT")
    p.add_argument("--web", metavar="[HOST:]PORT",
                   help="also serve the teaching page on HTTP, with a live view of the job at /live "
                        "(loopback only; HOST defaults to 127.0.0.1)")
    p.add_argument("--bitmap", metavar="PATH",
                   help="jobs keep a crash-safe bitmap of what is left to copy at PATH; after a crash "
                        "or kill, serve again with the same --bitmap and start the job with QMP "
                        "drive-mirror \"mode\": \"existing\", \"resume\": true to copy only that")
    p.add_argument("--bitmap-generation", type=int, default=0, metavar="N",
                   help="refuse a --bitmap file whose generation is below N (an old copy of it)")
    add_format_arguments(p, target=False)


def _is_loopback(hostport: str) -> bool:
    host = hostport.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    import blockmirror
    from blockmirror._web import check_page_files, default_root, parse_web_address

    try:
        web = parse_web_address(args.web) if args.web else None
        if web is not None:
            # Before anything listens: a server whose page cannot load would only show 404s.
            check_page_files(default_root())
    except blockmirror.InvalidArgument as exc:
        print(f"blockmirror serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.listen and not _is_loopback(args.listen):
        print(f"blockmirror serve: warning: NBD has no authentication: anyone who reaches "
              f"{args.listen} can read and write {args.source}", file=sys.stderr)
    try:
        server = blockmirror.serve(args.source, socket=args.socket, listen=args.listen, export=args.export,
                                   qmp=args.qmp, read_only=args.read_only, max_clients=args.max_clients,
                                   direct=args.direct, format=args.format, web=web, bitmap=args.bitmap,
                                   bitmap_min_generation=args.bitmap_generation)
    except blockmirror.BitmapError as exc:
        print(f"blockmirror serve: error: {exc} (remove the file to start over)", file=sys.stderr)
        return EXIT_USAGE
    with server:
        reason = "quit over QMP"
        # The whole wait is inside the try: a signal may arrive as soon as the line is out.
        try:
            qmp = f", QMP on {args.qmp}" if args.qmp else ""
            qmp += f", live page at {server.web_url}" if server.web_url else ""
            if server.resumable:
                print(f"blockmirror serve: {args.bitmap} is from a mirror that did not finish: writes "
                      "are marked in it; resume with drive-mirror \"mode\": \"existing\", \"resume\": true",
                      file=sys.stderr, flush=True)
            print(f"blockmirror serve: exporting {args.source} as {server.uri}{qmp}; "
                  "stop with Ctrl-C, SIGTERM or QMP quit", file=sys.stderr, flush=True)
            while not server.wait_quit(0.5):
                pass
        except KeyboardInterrupt:
            reason = "interrupted"
        except Terminated:
            reason = "terminated"
        print(f"blockmirror serve: stopping ({reason}): draining and flushing", file=sys.stderr, flush=True)
    return EXIT_OK
