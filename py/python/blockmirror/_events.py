"""Result objects of the file backend (immutable, plain fields); its events are
``blockmirror.Event``, like every face's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from blockmirror._native import Event

__all__ = ["MirrorEvent", "MirrorResult"]


#: The file backend's events are the one event class of every face (``blockmirror.Event``,
#: schema in docs/events.md); this older name stays importable.
MirrorEvent = Event


@dataclass(frozen=True)
class MirrorResult:
    """What a finished mirror did."""

    source: str
    target: str
    length: int
    status: str
    #: The job's ``current`` progress: bytes copied or zeroed, counting re-copies.
    bytes_copied: int
    #: Bytes the sync mode selected at the start (what a copy without guest writes costs).
    initial_bytes: int
    bytes_read: int
    bytes_written: int
    #: Of ``bytes_written``, bytes copied inside the kernel (``copy_file_range``).
    bytes_offloaded: int
    bytes_zeroed: int
    bytes_punched: int
    guest_bytes_written: int
    guest_bytes_mirrored: int
    seconds: float
    seconds_to_ready: Optional[float]
    #: The guest was switched over to the target (``complete``).
    pivoted: bool
    #: The job ended with ``BLOCK_JOB_CANCELLED`` (a forced cancel, or a cancel before ready).
    cancelled: bool
    events: Tuple[MirrorEvent, ...] = field(repr=False, default=())

    @property
    def recopied_bytes(self) -> int:
        """Bytes copied more than once because the guest dirtied them again."""
        return max(0, self.bytes_copied - self.initial_bytes)

    @property
    def bytes_per_sec(self) -> float:
        """Average copy rate (``bytes_copied / seconds``)."""
        return self.bytes_copied / self.seconds if self.seconds > 0 else 0.0
