"""``blockmirror.serve``: a live disk exported over NBD, mirror jobs driven over QMP.

Clients (a VM, fio, qemu-io, any NBD client) read and write the disk through the export;
management code (``qemu.qmp``, qmp-shell, scripts written for QEMU) starts and controls
mirror jobs over the QMP socket with QEMU's commands (``drive-mirror``,
``block-job-complete``, ...). After a job's switch-over the export serves the target, with
no client disconnected.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from blockmirror._native import NbdServer

PathLike = Union[str, "os.PathLike[str]"]


class Server:
    """A running server (returned by :func:`serve`). A context manager: leaving the block
    closes it (a running job is force-cancelled, requests in flight are answered, the disk
    is flushed, the sockets are removed)."""

    def __init__(self, native: NbdServer, qmp: Optional[str]) -> None:
        self._native = native
        self.qmp_path = qmp

    @property
    def uri(self) -> str:
        """The export's NBD URI, e.g. ``nbd+unix:///disk?socket=/run/bm.sock``."""
        return self._native.uri

    @property
    def address(self) -> str:
        """Where clients connect: ``unix:PATH`` or ``tcp:HOST:PORT``."""
        return self._native.address

    @property
    def client_count(self) -> int:
        """NBD clients connected now."""
        return self._native.client_count

    @property
    def closed(self) -> bool:
        return self._native.closed

    def wait_quit(self, timeout: Optional[float] = None) -> bool:
        """Waits until a QMP client sends ``quit`` (True) or ``timeout`` seconds pass (False)."""
        return self._native.wait_quit(timeout)

    def close(self) -> None:
        """Stops serving (idempotent)."""
        self._native.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.client_count} clients"
        return f"<blockmirror.Server {self.uri} qmp={self.qmp_path!r} {state}>"


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
) -> Server:
    """Exports ``source`` (a raw image or block device) over NBD and returns the running
    :class:`Server`.

    ``socket`` is a unix socket path (created mode 0600), ``listen`` a ``HOST:PORT`` for TCP
    (give one). ``qmp`` is the path of a QMP monitor socket (mode 0600) that takes QEMU's
    commands. ``direct`` opens the files of jobs started over QMP with O_DIRECT. The source
    is locked as QEMU locks images: a QEMU (or qemu-nbd) writing it is refused, and it
    refuses this disk while it is served."""
    qmp_path = os.fspath(qmp) if qmp is not None else None
    native = NbdServer(
        os.fspath(source),
        socket=os.fspath(socket) if socket is not None else None,
        listen=listen,
        export=export,
        qmp=qmp_path,
        read_only=read_only,
        max_clients=max_clients,
        direct=direct,
    )
    return Server(native, qmp_path)


__all__ = ["Server", "serve"]
