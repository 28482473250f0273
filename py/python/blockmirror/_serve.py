"""``blockmirror.serve``: a live disk exported over NBD, mirror jobs driven over QMP.

Clients (a VM, fio, qemu-io, any NBD client) read and write the disk through the export;
management code (``qemu.qmp``, qmp-shell, scripts written for QEMU) starts and controls
mirror jobs over the QMP socket with QEMU's commands (``drive-mirror``,
``block-job-complete``, ...). After a job's switch-over the export serves the target, with
no client disconnected.

The same jobs can be driven from this process, without a QMP socket:
:meth:`Server.execute` runs a QMP command through the monitor's own parser and job
controller (same answers, same :class:`~blockmirror.QmpError` classes), and
:meth:`Server.next_event` / :meth:`Server.wait_event` hand out the events a monitor client
would see::

    with blockmirror.serve("disk.img", socket="/run/bm.sock") as s:
        s.mirror("/srv/new.img")                      # drive-mirror
        s.wait_event("BLOCK_JOB_READY", timeout=60)
        s.execute("block-job-complete", {"device": "job0"})
        s.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Tuple, Union

from blockmirror._native import NbdServer, Timeout
from blockmirror._types import CopyMode, ErrorPolicy, SyncMode
from blockmirror._web import LiveWeb, check_loopback

if TYPE_CHECKING:
    from blockmirror._verify import OnlineVerifyReport

PathLike = Union[str, "os.PathLike[str]"]


class Server:
    """A running server (returned by :func:`serve`). A context manager: leaving the block
    closes it (a running job is force-cancelled, requests in flight are answered, the disk
    is flushed, the sockets are removed)."""

    def __init__(self, native: NbdServer, qmp: Optional[str], web: Optional[LiveWeb] = None,
                 bitmap: Optional[str] = None) -> None:
        self._native = native
        self.qmp_path = qmp
        self._web = web
        self.bitmap = bitmap
        """The bitmap file's path (:func:`serve`'s ``bitmap``), or None."""

    @property
    def web_url(self) -> Optional[str]:
        """The live page's address (``http://127.0.0.1:PORT/live``), or None without ``web=``."""
        return self._web.url if self._web is not None else None

    @property
    def uri(self) -> str:
        """The export's NBD URI, e.g. ``nbd+unix:///disk?socket=/run/bm.sock``."""
        return self._native.uri

    @property
    def address(self) -> str:
        """Where clients connect: ``unix:PATH`` or ``tcp:HOST:PORT``."""
        return self._native.address

    @property
    def resumable(self) -> bool:
        """Whether the server's bitmap file holds what a job that did not finish left to
        copy: client writes are marked in it, and :meth:`mirror` with ``resume=True``
        copies only what it marks."""
        return self._native.resumable

    @property
    def bitmap_generation(self) -> Optional[int]:
        """The newest generation of the server's bitmap file (QMP
        ``x-blockmirror-query-bitmap``): the running job's file, or the one an unfinished job
        left. None when the server keeps no bitmap or no file is there. Remember it to
        refuse a stale copy of the file later: :meth:`mirror`'s ``bitmap_min_generation``,
        or :func:`serve`'s."""
        if self.bitmap is None:
            return None
        return self.execute("x-blockmirror-query-bitmap").get("generation")

    @property
    def client_count(self) -> int:
        """NBD clients connected now."""
        return self._native.client_count

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def export(self) -> str:
        """The export's name, which is also the QMP ``device`` of its disk."""
        return self._native.export

    def wait_quit(self, timeout: Optional[float] = None) -> bool:
        """Waits until ``quit`` is asked, by a QMP client or through :meth:`execute` (True),
        or ``timeout`` seconds pass (False)."""
        return self._native.wait_quit(timeout)

    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None) -> Any:
        """Runs the QMP command ``command`` with ``arguments`` (QMP's names, e.g.
        ``{"device": "job0"}``) exactly as the monitor would, and returns its ``return``
        value (``query-block-jobs``: a list of dicts; most verbs: ``{}``). A refusal raises
        :class:`~blockmirror.QmpError` (``.error_class``, ``.desc``); arguments that are not
        a JSON-like dict raise :class:`~blockmirror.InvalidArgument`."""
        return self._native.execute(command, arguments)

    def next_event(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next job event, as QMP sends it: ``{"event", "data", "timestamp"}``. Every
        event since the server started is kept until taken here. Waits up to ``timeout``
        seconds (None: until one comes); None on timeout, or once the server is closed and
        no event is left."""
        return self._native.next_event(timeout)

    def wait_event(self, name: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Takes events until one called ``name`` (``BLOCK_JOB_READY``...) comes and returns
        it; the events before it are consumed. Raises :class:`~blockmirror.Timeout` when
        ``timeout`` seconds pass first, or when the server is closed without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = self.next_event(left)
            if event is None:
                if self.closed:
                    raise Timeout(f"the server closed before a {name} event")
                if left is not None and time.monotonic() >= deadline:  # type: ignore[operator]
                    raise Timeout(f"no {name} event within {timeout} s")
                continue
            if event["event"] == name:
                return event

    def mirror(
        self,
        target: PathLike,
        *,
        job_id: str = "job0",
        sync: SyncMode = "full",
        copy_mode: CopyMode = "background",
        speed: int = 0,
        mode: Literal["absolute-paths", "existing"] = "absolute-paths",
        granularity: Optional[int] = None,
        buf_size: Optional[int] = None,
        on_source_error: Optional[ErrorPolicy] = None,
        on_target_error: Optional[ErrorPolicy] = None,
        unmap: Optional[bool] = None,
        resume: bool = False,
        bitmap_min_generation: Optional[int] = None,
    ) -> str:
        """Starts a mirror of the served disk into ``target`` (QMP ``drive-mirror``) and
        returns the job id, which names the job in ``block-job-*`` (``device``) and
        ``job-*`` (``id``) commands and in its events. ``mode="absolute-paths"`` creates
        the target; ``"existing"`` mirrors into an existing file of the disk's size. Options
        left None take QEMU's defaults. ``resume=True`` (with ``mode="existing"`` and the
        target of the job that did not finish) copies only what the server's bitmap file
        marks (see :func:`serve`'s ``bitmap``); with ``bitmap_min_generation`` it refuses a
        file whose newest generation is older (a stale copy; see :attr:`bitmap_generation`).
        Refusals raise :class:`~blockmirror.QmpError`."""
        arguments: Dict[str, Any] = {
            "job-id": job_id,
            "device": self.export,
            "target": os.fspath(target),
            "format": "raw",
            "sync": sync,
            "mode": mode,
            "copy-mode": copy_mode,
            "speed": speed,
        }
        optional = {"granularity": granularity, "buf-size": buf_size, "on-source-error": on_source_error,
                    "on-target-error": on_target_error, "unmap": unmap}
        arguments.update({k: v for k, v in optional.items() if v is not None})
        if resume:
            arguments["resume"] = True
        if bitmap_min_generation is not None:
            arguments["bitmap-min-generation"] = bitmap_min_generation
        self.execute("drive-mirror", arguments)
        return job_id

    def verify(self, job_id: str = "job0", granularity: Optional[int] = None,
               repair: bool = False) -> "OnlineVerifyReport":
        """Compares the running job's source and target while clients keep writing (QMP
        ``x-blockmirror-verify``), in segments of ``granularity`` bytes (default 1 MiB): a
        segment that was written during its comparison is tried again, or reported in
        ``skipped``, never as a false difference. Works on every target the job writes
        (file, qcow2 image, NBD export). With ``repair=True`` the job copies the differing
        segments again (``repaired``). Refusals raise :class:`~blockmirror.QmpError`."""
        from blockmirror._verify import OnlineVerifyReport

        arguments: Dict[str, Any] = {"id": job_id}
        if granularity is not None:
            arguments["granularity"] = granularity
        if repair:
            arguments["repair"] = True
        r = self.execute("x-blockmirror-verify", arguments)
        return OnlineVerifyReport(length=r["length"], granularity=r["granularity"],
                                  verified_bytes=r["verified-bytes"], differing=_start_end(r["differing"]),
                                  skipped=_start_end(r["skipped"]), elapsed=r["elapsed-secs"],
                                  repaired=_start_end(r["repaired"]))

    def close(self) -> None:
        """Stops serving (idempotent)."""
        if self._web is not None:
            self._web.close()
        self._native.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.client_count} clients"
        return f"<blockmirror.Server {self.uri} qmp={self.qmp_path!r} {state}>"


def _start_end(ranges: List[Dict[str, int]]) -> List[Tuple[int, int]]:
    """QMP's ``{offset, length}`` ranges as ``(start, end)`` pairs."""
    return [(r["offset"], r["offset"] + r["length"]) for r in ranges]


def serve(
    source: PathLike,
    *,
    socket: Optional[PathLike] = None,
    listen: Optional[str] = None,
    export: str = "disk",
    qmp: Optional[PathLike] = None,
    read_only: bool = False,
    max_clients: int = 64,
    direct: bool = False,
    not_converging_window: float = 10.0,
    format: Optional[str] = None,
    web: Optional[Tuple[str, int]] = None,
    bitmap: Optional[PathLike] = None,
    bitmap_min_generation: int = 0,
) -> Server:
    """Exports ``source`` (a raw image or block device) over NBD and returns the running
    :class:`Server`.

    ``socket`` is a unix socket path (created mode 0600), ``listen`` a ``HOST:PORT`` for TCP
    (give one). ``qmp`` is the path of a QMP monitor socket (mode 0600) that takes QEMU's
    commands. ``direct`` opens the files of jobs started over QMP with O_DIRECT;
    ``not_converging_window`` is their seconds without progress before a
    ``BLOCK_JOB_NOT_CONVERGING`` event (0: never). The source
    is locked as QEMU locks images: a QEMU (or qemu-nbd) writing it is refused, and it
    refuses this disk while it is served. ``format`` (``"raw"``/``"qcow2"``, default probed)
    forces the disk's format: a qcow2 disk is served through its backing chain.

    ``bitmap`` is the path of a crash-safe write-intent bitmap that every job started on
    this server keeps: if the server (or the machine) dies in mid-mirror, serve again with
    the same ``bitmap`` and start the job with ``resume=True`` (QMP ``drive-mirror`` with
    ``"resume": true``): only the chunks it marks are copied again. While a file left by an
    unfinished job is there, every client write is marked in it first, job or no job. A
    file made for another disk, or a damaged one, raises :class:`~blockmirror.BitmapError`,
    as does one whose generation is below ``bitmap_min_generation`` (an old copy of the
    file; :func:`~blockmirror.read_bitmap` tells a file's generation).

    ``web=(host, port)`` also serves the teaching page over HTTP, with a live view of the
    running job at ``/live`` (its chunk grid and events, streamed): loopback hosts only
    (127.0.0.1, ::1, localhost), anything else raises ``InvalidArgument``; port 0 picks a
    free one (see :attr:`Server.web_url`)."""
    if web is not None:
        check_loopback(web[0])
    qmp_path = os.fspath(qmp) if qmp is not None else None
    bitmap_path = os.fspath(bitmap) if bitmap is not None else None
    native = NbdServer(
        os.fspath(source),
        socket=os.fspath(socket) if socket is not None else None,
        listen=listen,
        export=export,
        qmp=qmp_path,
        read_only=read_only,
        max_clients=max_clients,
        direct=direct,
        not_converging_window=not_converging_window,
        format=format,
        bitmap=bitmap_path,
        bitmap_min_generation=bitmap_min_generation,
    )
    live = None
    if web is not None:
        try:
            live = LiveWeb(native, web[0], int(web[1]))
        except BaseException:
            native.close()
            raise
    return Server(native, qmp_path, live, bitmap_path)


__all__ = ["Server", "serve"]
