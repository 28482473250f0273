"""A one-line progress bar that never shows 100 % before the job is done.

The job's total may grow while the guest writes, so the bar's total follows it, and the
shown position is held at 99 % of the total at most until the job has really ended.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO


class ProgressBar:
    """Wraps ``tqdm.auto.tqdm`` (bytes, on stderr by default)."""

    def __init__(self, description: str = "mirror", file: Optional[TextIO] = None) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        self._file = file if file is not None else sys.stderr
        self._bar: Any = tqdm(
            total=1, unit="B", unit_scale=True, unit_divisor=1024, desc=description,
            file=self._file, dynamic_ncols=True, leave=True, mininterval=0.2,
        )

    def update(self, current: int, total: int, done: bool = False) -> None:
        """Shows ``current`` of ``total`` bytes; below 100 % unless ``done``."""
        total = max(total, current, 1)
        # tqdm rounds the percentage, so hold below 99.5 % (shown as "99%") until done.
        shown = current if done else min(current, total * 99 // 100)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = shown
        self._bar.refresh()

    def phase(self, message: str) -> None:
        """Prints a phase line above the bar."""
        self._bar.write(message, file=self._file)

    def set_status(self, status: str) -> None:
        """Shows the job status after the bar."""
        self._bar.set_postfix_str(status, refresh=False)

    def close(self) -> None:
        """Leaves the bar as it is on its own line."""
        self._bar.close()
