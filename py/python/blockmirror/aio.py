"""asyncio facade over :class:`blockmirror.Mirror` and :func:`blockmirror.mirror`.

Every blocking call runs in the event loop's default thread executor, so the loop stays
responsive; the I/O itself runs on the mirror's own Rust threads either way.

    async with await blockmirror.aio.Mirror.open(src, dst) as m:
        await m.write(0, b"...")
        await m.wait_ready()
        result = await m.complete()
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, AsyncIterator, Callable, List, Optional, Tuple, TypeVar, Union

from blockmirror._events import MirrorEvent, MirrorResult
from blockmirror._mirror import Mirror as _SyncMirror
from blockmirror._mirror import mirror as _sync_mirror

__all__ = ["Mirror", "mirror"]

T = TypeVar("T")
PathArg = Union[str, "os.PathLike[str]"]


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))


async def mirror(source: PathArg, target: PathArg, **options: Any) -> MirrorResult:
    """``await``-able :func:`blockmirror.mirror` (same options)."""
    return await _run(_sync_mirror, source, target, **options)


class Mirror:
    """An asyncio view of a :class:`blockmirror.Mirror`; create it with :meth:`open`."""

    def __init__(self, sync_mirror: _SyncMirror) -> None:
        self.sync = sync_mirror

    @classmethod
    async def open(cls, source: PathArg, target: PathArg, **options: Any) -> "Mirror":
        """Opens the files and starts the job (same options as :class:`blockmirror.Mirror`)."""
        return cls(await _run(_SyncMirror, source, target, **options))

    async def write(self, offset: int, data: bytes) -> None:
        """The guest writes ``data`` at ``offset``."""
        await _run(self.sync.write, offset, data)

    async def read(self, offset: int, length: int) -> bytes:
        """The guest reads ``length`` bytes at ``offset``."""
        return await _run(self.sync.read, offset, length)

    async def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Waits for ``BLOCK_JOB_READY`` (see :meth:`blockmirror.Mirror.wait_ready`)."""
        await _run(self.sync.wait_ready, timeout)

    async def complete(self, timeout: Optional[float] = None) -> MirrorResult:
        """Completes and waits for the end."""
        return await _run(self.sync.complete, timeout)

    async def cancel(self, force: bool = False, timeout: Optional[float] = None) -> MirrorResult:
        """Cancels and waits for the end."""
        return await _run(self.sync.cancel, force, timeout)

    async def pause(self) -> None:
        """Pauses the copy."""
        await _run(self.sync.pause)

    async def resume(self) -> None:
        """Resumes the copy."""
        await _run(self.sync.resume)

    async def set_speed(self, bytes_per_sec: int) -> None:
        """Changes the speed limit."""
        await _run(self.sync.set_speed, bytes_per_sec)

    @property
    def status(self) -> str:
        """The job status (a quick, non-blocking read)."""
        return self.sync.status

    @property
    def progress(self) -> Tuple[int, int]:
        """``(current, total)`` bytes."""
        return self.sync.progress

    @property
    def events(self) -> List[MirrorEvent]:
        """The events so far."""
        return self.sync.events

    async def iter_events(self, timeout: Optional[float] = None) -> AsyncIterator[MirrorEvent]:
        """Every event from the first as it arrives; ends after the job's last event."""
        iterator = self.sync.iter_events(timeout)
        sentinel = object()
        while True:
            event = await _run(next, iterator, sentinel)
            if event is sentinel:
                return
            yield event  # type: ignore[misc]

    async def close(self) -> None:
        """Force-cancels a job that has not ended and stops its threads."""
        await _run(self.sync.close)

    async def __aenter__(self) -> "Mirror":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
