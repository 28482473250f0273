"""Type stubs for the native extension."""

__version__: str

class BlockMirrorError(Exception): ...
class InvalidArgument(BlockMirrorError, ValueError): ...
class JobStateError(BlockMirrorError): ...

class IoError(BlockMirrorError, OSError):
    operation: str | None
    offset: int | None
