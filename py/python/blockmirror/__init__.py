"""blockmirror: live block-device mirroring you can script, study and watch."""

from blockmirror._native import (
    BlockMirrorError,
    FileMirror,
    HBitmap,
    InvalidArgument,
    IoError,
    JobStateError,
    __version__,
)
from blockmirror._events import MirrorEvent, MirrorResult
from blockmirror._mirror import Mirror, mirror

__all__ = [
    "BlockMirrorError",
    "FileMirror",
    "HBitmap",
    "InvalidArgument",
    "IoError",
    "JobStateError",
    "Mirror",
    "MirrorEvent",
    "MirrorResult",
    "__version__",
    "mirror",
]
