"""The teaching page over HTTP, with a live view of a :class:`~blockmirror.Server`'s job.

``serve(..., web=("127.0.0.1", port))`` starts a :class:`LiveWeb` beside the NBD export. It
serves the page's files (``wasm/www``) and, at ``/live``, a page that draws the REAL job's
chunk grid and lists its events, fed by ``/events``, a server-sent event stream
(``text/event-stream``; ``/site.json`` says whether the simulator can run here):

- ``event: state``: a snapshot of the job (see :mod:`blockmirror._live_view`): ``job`` (its
  id, or null when no job runs), ``seq``, ``status``, ``current`` / ``total`` (progress
  bytes), ``length``, ``granularity``, ``chunks``, ``dirty_bytes``, ``dirty_chunks``,
  ``crc``, ``bits`` (the whole dirty bitmap in base64) and ``ops`` (``[kind, first_chunk,
  end_chunk]`` of each operation in flight). Sent on connect and when the job changes.
- ``event: delta``: what changed since the message before (``seq`` one more): the same
  numbers, ``runs`` of changed bitmap bytes, ``ops`` when they changed. Looked for every
  :data:`STATE_PERIOD` seconds.
- ``event: tick``: nothing changed for :data:`HEARTBEAT` seconds (so a stalled connection
  shows).
- ``event: qmp``: each job event as QMP sends it (``{"event", "data", "timestamp"}``),
  as it happens; a page that connects late first gets the last :data:`HISTORY` of them.

The page's files: ``$BLOCKMIRROR_WWW`` if set, else ``wasm/www`` of the source checkout
this package runs from (with the simulator), else the copy of the live page's files the
package ships (``blockmirror/www``: :data:`LIVE_FILES`; the simulator needs the wasm build,
which a wheel does not ship). Missing files are refused when the server starts.

Loopback only: there is no authentication, and the disk's layout and job are private to
its host, so an address that is not loopback is refused. Everything is the standard
library's (``http.server``), in daemon threads that stop with the server.
"""

from __future__ import annotations

import collections
import functools
import http.server
import ipaddress
import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

from blockmirror._live_view import JobView, Pacer, StreamEncoder
from blockmirror._native import InvalidArgument, NbdServer

#: Seconds between two looks at the job's bitmap and progress: a stream sends at most one
#: snapshot or delta per look (the bound on its bytes, see blockmirror._live_view).
STATE_PERIOD = 0.15
#: Bytes per second a stream's snapshots and deltas take at most on average (a large disk
#: whose bitmap churns: a 1 TiB disk at 64 KiB chunks has a 2.7 MB snapshot, sent at most
#: every 2.7 s rather than every STATE_PERIOD); the job's events are not held back.
MAX_BYTES_PER_SEC = 1 << 20
#: Seconds without a message after which a stream sends a ``tick``.
HEARTBEAT = 2.0
#: Job events kept for pages that connect late.
HISTORY = 500
#: The files the live page loads (live.html imports the rest); the package ships these.
LIVE_FILES = ("live.html", "live.js", "live_states.js", "grid.js", "format.js", "style.css")
#: The simulator's wasm module, built by scripts/build-wasm.sh (not in the package).
SIMULATOR_BUILD = "pkg/blockmirror_wasm_bg.wasm"


def packaged_root() -> Path:
    """The live page's files as the package ships them."""
    return Path(__file__).resolve().parent / "www"


def default_root() -> Path:
    """The page's directory (see the module doc)."""
    env = os.environ.get("BLOCKMIRROR_WWW")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3] / "wasm" / "www"
    if not missing_files(checkout):
        return checkout
    return packaged_root()


def missing_files(root: Path) -> List[str]:
    """The :data:`LIVE_FILES` that ``root`` lacks."""
    return [name for name in LIVE_FILES if not (root / name).is_file()]


def check_page_files(root: Path) -> None:
    """Refuses (``InvalidArgument``, naming what lacks) a directory without the live page."""
    missing = missing_files(root)
    if missing:
        raise InvalidArgument(
            f"the live page's files are not in {root} (missing: {', '.join(missing)}): "
            "reinstall blockmirror, or set BLOCKMIRROR_WWW to a directory holding them "
            "(wasm/www of a source checkout)"
        )


def check_loopback(host: str) -> None:
    """Refuses (``InvalidArgument``) a host that is not a loopback address."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise InvalidArgument(
        f"web={host!r}: the live page has no authentication and listens on loopback only "
        "(127.0.0.1, ::1 or localhost)"
    )


def parse_web_address(text: str) -> Tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (``[V6]:PORT``) as ``(host, port)``; a bare port is on
    127.0.0.1. Refuses a host that is not loopback."""
    if text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"--web {text!r} is not PORT or HOST:PORT")
        host = host.strip("[]")
    check_loopback(host)
    return host, int(port)


def job_view(native: NbdServer) -> Optional[JobView]:
    """One look at the running job, or None when none runs."""
    state = native.job_state()
    return None if state is None else JobView.from_state(state)


class _EventHistory:
    """Every job event of the server, the last :data:`HISTORY` of them kept, numbered so each
    stream sends each event once."""

    def __init__(self) -> None:
        self._events: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=HISTORY)
        self._next = 0
        self.changed = threading.Condition()

    def add(self, event: Dict[str, Any]) -> None:
        with self.changed:
            self._events.append((self._next, event))
            self._next += 1
            self.changed.notify_all()

    def since(self, seq: int) -> Tuple[int, List[Dict[str, Any]]]:
        """The events numbered ``seq`` and later (those still kept), and the next number."""
        with self.changed:
            return self._next, [e for n, e in self._events if n >= seq]


class _ThreadingHTTPServerV6(http.server.ThreadingHTTPServer):
    """The threading HTTP server on an IPv6 socket (for ``::1``)."""

    address_family = socket.AF_INET6


class LiveWeb:
    """The page and its live stream for one server (see the module doc). Started by
    :func:`blockmirror.serve` with ``web=``; stopped by ``Server.close``."""

    def __init__(self, native: NbdServer, host: str, port: int, root: Optional[Path] = None) -> None:
        check_loopback(host)
        self.root = Path(root) if root is not None else default_root()
        check_page_files(self.root)
        self._native = native
        self._stopping = threading.Event()
        self._history = _EventHistory()
        self._subscription = native.subscribe()
        handler = functools.partial(_Handler, self)
        server_class = _ThreadingHTTPServerV6 if ":" in host else http.server.ThreadingHTTPServer
        try:
            self._http = server_class((host, port), handler)
        except OSError as e:
            raise OSError(e.errno, f"web={host}:{port}: {e.strerror}") from None
        self._http.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._pump_events, name="bm-web-events", daemon=True),
            threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                             name="bm-web-http", daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The live page's address, e.g. ``http://127.0.0.1:8080/live``."""
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/live"

    def _pump_events(self) -> None:
        while not self._stopping.is_set():
            event = self._subscription.next(0.2)
            if event is not None:
                self._history.add(event)
            elif self._native.closed:
                return

    def stream(self, handler: "_Handler") -> None:
        """Writes the event stream to one client until it goes or the server stops."""
        def send(name: str, payload: Any) -> int:
            data = f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()
            handler.wfile.write(data)
            handler.wfile.flush()
            return len(data)

        seq, backlog = self._history.since(0)
        for event in backlog:
            send("qmp", event)
        encoder = StreamEncoder()
        pacer = Pacer(STATE_PERIOD, MAX_BYTES_PER_SEC)
        last_sent = 0.0
        next_look = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_look:
                messages = encoder.messages(job_view(self._native))
                sent = sum(send(name, payload) for name, payload in messages)
                if not messages and now - last_sent >= HEARTBEAT:
                    send("tick", {})
                    last_sent = now
                elif messages:
                    last_sent = now
                next_look = pacer.next_look(now, sent)
            with self._history.changed:
                self._history.changed.wait(max(0.0, next_look - time.monotonic()))
            seq, events = self._history.since(seq)
            for event in events:
                send("qmp", event)

    def close(self) -> None:
        """Stops serving (idempotent): open streams end, the port is released."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._history.changed:
            self._history.changed.notify_all()
        self._http.shutdown()
        self._http.server_close()
        for t in self._threads:
            t.join(timeout=5)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from the page's directory, ``/live`` and the ``/events`` stream."""

    def __init__(self, web: LiveWeb, *args: Any, **kwargs: Any) -> None:
        self.web = web
        super().__init__(*args, directory=str(web.root), **kwargs)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                self.web.stream(self)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return
        simulator = (self.web.root / "index.html").is_file()
        if url.path == "/site.json":
            # What the page may link to: the simulator runs only from a wasm build.
            body = json.dumps({"simulator": simulator and (self.web.root / SIMULATOR_BUILD).is_file()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
        if url.path == "/live" or (url.path in ("/", "/index.html") and ("live" in query or not simulator)):
            # Without the simulator (an installed package ships only the live page), the
            # site's root is the live page rather than a directory listing.
            self.path = "/live.html"
        super().do_GET()


__all__ = ["LiveWeb", "LIVE_FILES", "check_loopback", "check_page_files", "default_root", "job_view", "missing_files",
           "packaged_root", "parse_web_address"]
