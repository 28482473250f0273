"""blockmirror: live block-device mirroring you can script, study and watch."""

from blockmirror._native import (
    CHUNK_STATE_NAMES,
    Action,
    BlockMirrorError,
    Event,
    FileMirror,
    HBitmap,
    InvalidArgument,
    IoError,
    JobStateError,
    MirrorJob,
    Simulation,
    SimulationJob,
    __version__,
    sweep,
)
from blockmirror._events import MirrorEvent, MirrorResult
from blockmirror._mirror import Mirror, mirror

__all__ = [
    "CHUNK_STATE_NAMES",
    "Action",
    "BlockMirrorError",
    "Event",
    "FileMirror",
    "HBitmap",
    "InvalidArgument",
    "IoError",
    "JobStateError",
    "Mirror",
    "MirrorEvent",
    "MirrorJob",
    "MirrorResult",
    "Simulation",
    "SimulationJob",
    "__version__",
    "mirror",
    "sweep",
]
