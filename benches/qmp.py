"""A small QMP client and a QEMU launcher for the mirror benchmark (no dependencies).

QEMU runs with ``-machine none`` (no guest CPU): only the block layer and its jobs, driven
over a QMP unix socket. Events are collected by a reader thread.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional


class QmpError(RuntimeError):
    pass


class Qemu:
    """``qemu-system-x86_64 -machine none`` with a QMP socket."""

    def __init__(self, workdir: str, extra_args: Optional[List[str]] = None) -> None:
        self.sock_path = os.path.join(workdir, f"qmp-{os.getpid()}-{time.monotonic_ns()}.sock")
        self._start(self.command(self.sock_path) + (extra_args or []))

    @staticmethod
    def command(sock_path: str) -> List[str]:
        """The program and arguments that start the QEMU with its QMP socket at ``sock_path``."""
        return ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                "-qmp", f"unix:{sock_path},server=on,wait=off"]

    def _start(self, args: List[str]) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise QmpError(f"qemu did not start: {err}")
            time.sleep(0.01)
        while True:  # the socket file appears at bind(), before listen(): retry briefly
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(self.sock_path)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.replies: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.lock = threading.Lock()
        json.loads(self.file.readline())  # greeting
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.cmd("qmp_capabilities")

    def _read(self) -> None:
        try:
            for line in iter(self.file.readline, b""):
                msg = json.loads(line)
                (self.events if "event" in msg else self.replies).put(msg)
        except OSError:
            pass  # QEMU quit

    def cmd(self, name: str, **arguments: Any) -> Any:
        with self.lock:
            msg: Dict[str, Any] = {"execute": name}
            if arguments:
                msg["arguments"] = arguments
            self.file.write(json.dumps(msg).encode() + b"\n")
            reply = self.replies.get(timeout=60)
        if "error" in reply:
            raise QmpError(f"{name}: {reply['error']}")
        return reply.get("return")

    def hmp(self, command_line: str) -> str:
        out = self.cmd("human-monitor-command", **{"command-line": command_line})
        if out and ("error" in out.lower() or "failed" in out.lower()):
            raise QmpError(f"hmp {command_line!r}: {out.strip()}")
        return out

    def wait_event(self, name: str, timeout: float) -> Optional[Dict[str, Any]]:
        """The next event named ``name`` (others are dropped), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if ev["event"] == name:
                return ev
            if ev["event"] == "BLOCK_JOB_ERROR":
                raise QmpError(f"QEMU job error: {ev}")

    def close(self) -> None:
        try:
            self.cmd("quit")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)


def file_node(node_name: str, path: str, direct: bool) -> Dict[str, Any]:
    """blockdev-add arguments for a raw image file."""
    return {"node-name": node_name, "driver": "raw",
            "file": {"driver": "file", "filename": path, "cache": {"direct": direct},
                     "aio": "native" if direct else "threads"},
            "cache": {"direct": direct}}
