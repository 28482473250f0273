"""What ``blockmirror mirror`` tells people and machines: phase lines and progress on
stderr, JSON events on stdout.

Repeated errors: an error with the same operation, error and policy action as the one
printed last is counted, not printed (a job ignoring a full disk would otherwise print one
line per retry); the count is printed when a different event comes, every
``_REPEAT_REPORT_S`` seconds while it goes on, and at the end. One `stop` is reported by
every write that was in flight: it is printed once, without a count.
JSON output lists every event the mirror kept (it keeps the first 100 of a run of alike
errors and counts the rest, ``Mirror.errors_not_stored``); the rest of such a run is one
``{"type": "errors_not_listed", "count": N, ...}`` line per report.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Optional, TextIO, Tuple

from blockmirror._events import MirrorEvent
from blockmirror._progress import ProgressBar

__all__ = ["Reporter"]

_REPEAT_REPORT_S = 10.0


class Reporter:
    """One job's output. ``progress_interval`` rate-limits the ``--json`` ``progress``
    events and the plain progress lines written when stderr is not a terminal."""

    def __init__(self, json_out: Optional[TextIO], quiet: bool, err: TextIO,
                 progress_interval: float = 5.0, started: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.json_out = json_out
        self.quiet = quiet
        self.err = err
        self.progress_interval = progress_interval
        self._clock = clock
        # `time_ns` of progress events counts from here, like the job events' (the mirror's start).
        self._started = clock() if started is None else started
        self._last_progress_event: Optional[float] = None
        self.bar = None if quiet else ProgressBar("mirror", file=err, interval=progress_interval,
                                                  clock=clock, started=self._started)
        self._repeat_key: Optional[Tuple[object, ...]] = None
        self._repeats = 0  # errors like the last printed one, not printed yet
        self._unlisted = 0  # of those, errors the mirror did not keep (no JSON line either)
        self._repeat_span: Tuple[int, int] = (0, 0)
        self._repeat_reported = 0.0

    def phase(self, message: str) -> None:
        """A phase line (nothing with ``--quiet``)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.phase(message)
        else:
            print(message, file=self.err, flush=True)

    def event(self, event: MirrorEvent) -> None:
        """One job event: JSON as it is, and the human line it deserves."""
        if self.json_out is not None:
            print(json.dumps(event.to_dict()), file=self.json_out, flush=True)
        if event.type == "BLOCK_JOB_ERROR":
            self._error(event)
            return
        self._flush_repeats()
        if event.type == "BLOCK_JOB_READY":
            # No guest writes through this process: "in sync" is all that can be said.
            self.phase("now in mirroring phase: the target is in sync with the source")
        elif event.type == "BLOCK_JOB_NOT_CONVERGING":
            self.phase("the job is not converging: the bytes left to copy are not shrinking")
        elif event.type == "BLOCK_JOB_AUTO_CONVERGE":
            self.phase("auto-converge: switched to write-blocking copies (the copy was losing the race)")

    def _error(self, event: MirrorEvent) -> None:
        key = (event.operation, event.error, event.action)
        offset = event.offset if event.offset is not None else 0
        if key == self._repeat_key:
            if event.action == "stop":
                return  # one stop, seen by every write that was in flight: said once
            lo, hi = self._repeat_span
            self._repeat_span = (min(lo, offset), max(hi, offset))
            self._add_repeats(event.count or 1)
            return
        self._flush_repeats()
        self._repeat_key = key
        self._repeat_span = (offset, offset)
        self._repeat_reported = self._clock()
        self.phase(f"error: {event.operation} at offset {event.offset}: {event.error} "
                   f"(policy action: {event.action})")
        # The native side folds identical consecutive errors into one event with a count.
        count = event.count or 1
        if event.action != "stop" and count > 1:
            self._add_repeats(count - 1)

    def more_repeats(self, count: int) -> None:
        """``count`` more errors like the last one printed, known only by number (the
        mirror counted them instead of keeping them, so they are in no JSON line either)."""
        if count <= 0 or self._repeat_key is None or self._repeat_key[2] == "stop":
            return
        self._unlisted += count
        self._add_repeats(count)

    def _add_repeats(self, count: int) -> None:
        self._repeats += count
        if self._clock() - self._repeat_reported >= _REPEAT_REPORT_S:
            self._flush_repeats(so_far=True)

    def _flush_repeats(self, so_far: bool = False) -> None:
        if self._repeats:
            lo, hi = self._repeat_span
            self.phase(f"error: the same error {self._repeats} more time{'s' if self._repeats > 1 else ''}"
                       f"{' so far' if so_far else ''} (offsets {lo} to {hi} among those listed)")
            self._repeats = 0
        if self._unlisted and self.json_out is not None:
            operation, error, action = self._repeat_key or (None, None, None)
            line = {"type": "errors_not_listed", "count": self._unlisted, "operation": operation,
                    "error": error, "action": action}
            print(json.dumps(line), file=self.json_out, flush=True)
        self._unlisted = 0
        self._repeat_reported = self._clock()
        if not so_far:
            self._repeat_key = None

    def progress(self, current: int, total: int, status: str, done: bool = False) -> None:
        """The job's progress: the bar, and a rate-limited JSON ``progress`` event."""
        now = self._clock()
        if self.json_out is not None and not done and (
                self._last_progress_event is None or now - self._last_progress_event >= self.progress_interval):
            self._last_progress_event = now
            line = {"type": "progress", "time_ns": int((now - self._started) * 1e9),
                    "status": status, "current": current, "total": total}
            print(json.dumps(line), file=self.json_out, flush=True)
        if self.bar is not None:
            self.bar.set_status(status)
            self.bar.update(current, total, done=done)

    def close(self) -> None:
        """Prints any pending repeat count and leaves the bar on its own line."""
        self._flush_repeats()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def error(self, message: str) -> None:
        """A final error line (printed even with ``--quiet``); closes the bar first."""
        self.close()
        print(f"blockmirror: error: {message}", file=self.err, flush=True)
