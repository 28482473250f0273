"""blockmirror: live block-device mirroring you can script, study and watch."""

from blockmirror._native import (
    CHUNK_STATE_NAMES,
    DEFAULTS,
    Action,
    BitmapError,
    BlockMirrorError,
    Event,
    FileMirror,
    HBitmap,
    ImageError,
    InvalidArgument,
    IoError,
    JobStateError,
    MirrorJob,
    NbdClient,
    NbdServer,
    QmpError,
    Simulation,
    SimulationJob,
    Timeout,
    __version__,
    read_bitmap,
)
from blockmirror._events import MirrorEvent, MirrorResult
from blockmirror._mirror import Mirror, mirror
from blockmirror._serve import Server, serve
from blockmirror._sweep import sweep
from blockmirror._verify import VerifyReport, verify

# Submodules loaded on first use: `blockmirror.aio` (asyncio facade) and `blockmirror.plots`
# (matplotlib) must work after a bare `import blockmirror`, without costing every import.
_LAZY_SUBMODULES = ("aio", "plots")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"blockmirror.{name}")
    raise AttributeError(f"module 'blockmirror' has no attribute {name!r}")

__all__ = [
    "CHUNK_STATE_NAMES",
    "DEFAULTS",
    "Action",
    "BitmapError",
    "BlockMirrorError",
    "Event",
    "FileMirror",
    "HBitmap",
    "ImageError",
    "InvalidArgument",
    "IoError",
    "JobStateError",
    "Mirror",
    "MirrorEvent",
    "MirrorJob",
    "MirrorResult",
    "NbdClient",
    "NbdServer",
    "QmpError",
    "Simulation",
    "Server",
    "SimulationJob",
    "Timeout",
    "VerifyReport",
    "__version__",
    "read_bitmap",
    "mirror",
    "serve",
    "sweep",
    "verify",
]
