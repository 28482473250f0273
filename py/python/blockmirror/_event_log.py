"""A mirror's event log and the thread that fills it from the native mirror (it holds the
native mirror and the log, never the Python ``Mirror``, so a dropped Mirror is collected)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from blockmirror._events import MirrorEvent
from blockmirror._native import FileMirror

EventCallback = Callable[[MirrorEvent], None]

# Poll interval of the event thread when nothing happens (it wakes at once on events).
_EVENT_POLL_S = 0.5
# After close(), the event thread takes the events still queued for at most this long: a
# job that spun on errors can leave a backlog of a million events, and close() must not
# take minutes to convert them (``Mirror.events_truncated`` then says so).
_CLOSE_DRAIN_S = 1.0
# Of a run of BLOCK_JOB_ERROR events alike in operation, error and action (a job retrying a
# full disk), the log keeps this many and counts the rest: memory stays bounded however
# long the job spins. An error of another kind starts a new run, so none goes unseen.
_MAX_ALIKE_ERRORS = 100


class _EventLog:
    """The events of one mirror, appended by its event thread, read by anyone."""

    def __init__(self) -> None:
        self.events: List[MirrorEvent] = []
        self.done = False  # the job ended and its last event is in `events` (or truncated)
        self.truncated = False  # close() cut the draining short: the last events are missing
        self.drain_until: Optional[float] = None  # set by close(): monotonic deadline
        self.errors_not_stored = 0  # BLOCK_JOB_ERRORs counted, not kept (see _MAX_ALIKE_ERRORS)
        self._run_kind: Optional[Tuple[Any, ...]] = None  # (operation, error, action) of this run
        self._run_length = 0
        self.stop: Optional[MirrorEvent] = None  # the first BLOCK_JOB_ERROR with action stop
        self.cond = threading.Condition()
        self.callback_errors: List[BaseException] = []

    def add(self, event: MirrorEvent) -> None:
        with self.cond:
            if event.type == "BLOCK_JOB_ERROR":
                if event.action == "stop" and self.stop is None:
                    self.stop = event
                kind = (event.operation, event.error, event.action)
                if kind != self._run_kind:
                    self._run_kind, self._run_length = kind, 0
                self._run_length += 1
                if self._run_length > _MAX_ALIKE_ERRORS:
                    self.errors_not_stored += event.count or 1  # one event may fold several
                    return
            self.events.append(event)
            self.cond.notify_all()

    def since(self, index: int) -> List[MirrorEvent]:
        with self.cond:
            return self.events[index:]


def _pump_events(native: FileMirror, log: _EventLog, on_event: Optional[EventCallback]) -> None:
    """The event thread: moves native events into ``log`` until the job has ended and
    every event was taken. Holds no reference to the Mirror (see ``Mirror.__init__``)."""
    while True:
        if log.drain_until is not None and time.monotonic() >= log.drain_until:
            log.truncated = not native.wait_end(0) or native.next_event(0) is not None
            break
        event = native.next_event(_EVENT_POLL_S)
        if event is None:
            if native.wait_end(0):
                break
            continue
        log.add(event)
        if on_event is not None:
            try:
                on_event(event)
            except BaseException as exc:  # a callback must not kill the event thread
                log.callback_errors.append(exc)
    with log.cond:
        log.done = True
        log.cond.notify_all()


def _close_native(native: FileMirror, log: _EventLog, pump: threading.Thread) -> None:
    """Closes the native mirror (force-cancel, join its threads) and joins the event thread,
    which then ends within ``_CLOSE_DRAIN_S``. Runs once: from close(), or when the Mirror
    is collected."""
    native.close()
    log.drain_until = time.monotonic() + _CLOSE_DRAIN_S
    # The finalizer may run on the event thread itself (a collection there): no self-join.
    if pump is not threading.current_thread():
        pump.join()
