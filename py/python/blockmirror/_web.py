"""The teaching page over HTTP, with a live view of a :class:`~blockmirror.Server`'s job.

``serve(..., web=("127.0.0.1", port))`` starts a :class:`LiveWeb` beside the NBD export. It
serves the page's files (``wasm/www``) and, at ``/live``, a page that draws the REAL job's
chunk grid and lists its events, fed by ``/events``, a server-sent event stream
(``text/event-stream``):

- ``event: state``: the job as a JSON object: ``job`` (its id, or null when no job runs),
  ``status``, ``current`` / ``total`` (progress bytes), ``length``, ``granularity``,
  ``chunks``, ``dirty_bytes``, ``dirty_chunks`` and ``bits``, the dirty bitmap in base64
  (one bit per chunk, chunk k is bit k % 8 of byte k / 8). Sent on connect, then every
  :data:`STATE_PERIOD` seconds when it changed (and at least every :data:`HEARTBEAT`
  seconds, so a stalled connection shows).
- ``event: qmp``: each job event as QMP sends it (``{"event", "data", "timestamp"}``),
  as it happens; a page that connects late first gets the last :data:`HISTORY` of them.

Loopback only: there is no authentication, and the disk's layout and job are private to
its host, so an address that is not loopback is refused. Everything is the standard
library's (``http.server``), in daemon threads that stop with the server.
"""

from __future__ import annotations

import base64
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

from blockmirror._native import InvalidArgument, NbdServer

#: Seconds between two looks at the job's bitmap and progress.
STATE_PERIOD = 0.15
#: Seconds after which an unchanged state is sent again.
HEARTBEAT = 2.0
#: Job events kept for pages that connect late.
HISTORY = 500


def default_root() -> Path:
    """The page's directory: ``$BLOCKMIRROR_WWW``, else ``wasm/www`` of the source tree this
    package runs from."""
    env = os.environ.get("BLOCKMIRROR_WWW")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "wasm" / "www"


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


def job_state(native: NbdServer) -> Dict[str, Any]:
    """The running job as the stream's ``state`` event carries it (see the module doc)."""
    state = native.job_state()
    if state is None:
        return {"job": None}
    bits: bytes = state.pop("bits")
    state["dirty_chunks"] = int.from_bytes(bits, "little").bit_count() if hasattr(int, "bit_count") \
        else bin(int.from_bytes(bits, "little")).count("1")
    state["bits"] = base64.b64encode(bits).decode("ascii")
    return state


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
        if not (self.root / "live.html").is_file():
            raise InvalidArgument(f"the page is not at {self.root} (set BLOCKMIRROR_WWW to wasm/www)")
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
        def send(name: str, payload: Any) -> None:
            handler.wfile.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
            handler.wfile.flush()

        seq, backlog = self._history.since(0)
        for event in backlog:
            send("qmp", event)
        last_state: Optional[Dict[str, Any]] = None
        last_sent = 0.0
        next_look = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_look:
                state = job_state(self._native)
                if state != last_state or now - last_sent >= HEARTBEAT:
                    send("state", state)
                    last_state, last_sent = state, now
                next_look = now + STATE_PERIOD
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
        if url.path == "/live" or (url.path in ("/", "/index.html") and "live" in query):
            self.path = "/live.html"
        super().do_GET()


__all__ = ["LiveWeb", "check_loopback", "parse_web_address", "job_state"]
