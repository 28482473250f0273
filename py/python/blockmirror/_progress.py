"""Human progress on stderr: a one-line bar on a terminal, plain periodic lines elsewhere.

What stays true: the bar never shows 100 % before the job is done (the job's total may
grow while the guest writes, so the shown percentage is held at 99 until ``done``); nothing
is drawn before the first real update (no made-up "0/1" frame); sizes and rates are in
binary units with their real names (MiB, MiB/s); and a file that is not a terminal (a log,
a pipe) never receives carriage-return frames, only whole lines at most every
``interval`` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

__all__ = ["ProgressBar", "format_bytes", "format_rate"]

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
# A terminal line is redrawn at most this often.
_TTY_REDRAW_S = 0.2


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``: binary units, three significant digits or so."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the last unit always returns")


def format_rate(bytes_per_sec: float) -> str:
    """``format_bytes`` per second, e.g. ``"12.0 MiB/s"``."""
    return f"{format_bytes(bytes_per_sec)}/s"


class ProgressBar:
    """Progress of one job in bytes, on ``file`` (stderr by default).

    ``tty`` (default: ``file.isatty()``) picks the form: a line redrawn in place, or a
    plain line every ``interval`` seconds (0: on every update) plus the last state on
    :meth:`close`.
    """

    def __init__(self, description: str = "mirror", file: Optional[TextIO] = None,
                 tty: Optional[bool] = None, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, started: Optional[float] = None) -> None:
        self._file = file if file is not None else sys.stderr
        isatty = getattr(self._file, "isatty", None)
        self.tty = bool(isatty()) if tty is None and isatty is not None else bool(tty)
        self.description = description
        self.interval = interval
        self._clock = clock
        self._started = clock() if started is None else started
        self._current = 0
        self._total = 0
        self._done = False
        self._status = ""
        self._have_update = False
        # A terminal shows the first update at once; a log gets its first line after an
        # interval (a short job then logs only its final state, from close()).
        self._last_draw: Optional[float] = None if self.tty else self._started
        self._drawn_width = 0  # characters of the bar now on the terminal line
        self._unprinted = False  # an update not yet shown as a plain line

    def update(self, current: int, total: int, done: bool = False) -> None:
        """Shows ``current`` of ``total`` bytes; below 100 % unless ``done``."""
        self._current, self._total = current, max(total, current)
        self._done = self._done or done
        self._have_update = True
        self._unprinted = True
        self._maybe_draw(force=done)

    def set_status(self, status: str) -> None:
        """Shows the job status after the numbers (on the next draw)."""
        self._status = status

    def percent(self) -> int:
        """The shown percentage: floor, held at 99 until done."""
        if self._total <= 0:
            return 100 if self._done else 0
        shown = self._current * 100 // self._total
        return shown if self._done else min(shown, 99)

    def text(self) -> str:
        """The bar's current line, without any terminal control characters."""
        elapsed = self._clock() - self._started
        rate = self._current / elapsed if elapsed > 0 else 0.0
        line = (f"{self.description}: {self.percent():3d}% {format_bytes(self._current)} of "
                f"{format_bytes(self._total)}, {format_rate(rate)}")
        return f"{line}, {self._status}" if self._status else line

    def phase(self, message: str) -> None:
        """Prints a whole line (a phase message) above the bar."""
        self._clear()
        print(message, file=self._file, flush=True)
        if self.tty and self._have_update:
            self._draw()

    def close(self) -> None:
        """Leaves the last state on its own line."""
        if not self._have_update:
            return
        if self.tty:
            self._draw()
            print(file=self._file, flush=True)
            self._drawn_width = 0
        elif self._unprinted:
            self._draw()
        self._have_update = False

    def _maybe_draw(self, force: bool) -> None:
        now = self._clock()
        every = _TTY_REDRAW_S if self.tty else self.interval
        if force or self._last_draw is None or now - self._last_draw >= every:
            self._draw()

    def _draw(self) -> None:
        self._last_draw = self._clock()
        line = self.text()
        if self.tty:
            pad = " " * max(0, self._drawn_width - len(line))
            self._file.write(f"\r{line}{pad}")
            self._file.flush()
            self._drawn_width = len(line)
        else:
            print(line, file=self._file, flush=True)
            self._unprinted = False

    def _clear(self) -> None:
        if self.tty and self._drawn_width:
            self._file.write("\r" + " " * self._drawn_width + "\r")
            self._drawn_width = 0
