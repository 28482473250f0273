"""Event and result objects of the file backend (immutable, plain fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ["MirrorEvent", "MirrorResult"]


@dataclass(frozen=True)
class MirrorEvent:
    """One job event. ``type`` is the shared QMP-style name (``BLOCK_JOB_READY``, ...);
    ``time_ns`` counts nanoseconds since the mirror started; the other fields are set for
    the event types that carry them and ``None`` otherwise."""

    type: str
    time_ns: int
    status: Optional[str] = None
    current: Optional[int] = None
    total: Optional[int] = None
    error: Optional[str] = None
    pivoted: Optional[bool] = None
    operation: Optional[str] = None
    action: Optional[str] = None
    offset: Optional[int] = None
    length: Optional[int] = None
    dirty_bytes: Optional[int] = None
    dirty_bytes_per_sec: Optional[int] = None
    copy_bytes_per_sec: Optional[int] = None
    #: ``BLOCK_JOB_ERROR``: how many identical consecutive errors (same operation, action
    #: and error) this event stands for; ``offset``/``length`` are the first one's.
    count: Optional[int] = None

    @classmethod
    def from_native(cls, d: Dict[str, Any]) -> "MirrorEvent":
        """Builds an event from the native dict, ignoring fields this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> Dict[str, Any]:
        """The fields that are set, for JSON output."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


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
