"""blockmirror: live block-device mirroring you can script, study and watch."""

from blockmirror._native import (
    BlockMirrorError,
    HBitmap,
    InvalidArgument,
    IoError,
    JobStateError,
    __version__,
)

__all__ = [
    "BlockMirrorError",
    "HBitmap",
    "InvalidArgument",
    "IoError",
    "JobStateError",
    "__version__",
]
