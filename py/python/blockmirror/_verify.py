"""``blockmirror.verify``: compare two images chunk by chunk, optionally repair the target.

The comparison runs in Rust (chunk digests of both sides in parallel; holes are not read).
It is offline: neither image may be written by anything else meanwhile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Tuple, Union

from blockmirror import _native

DEFAULT_VERIFY_GRANULARITY = 1 << 20


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify`.

    ``differing`` lists the ranges ``(start, end)`` that differed before any repair: whole
    chunks of ``granularity`` bytes (the last one may be short), ascending, adjacent ones
    merged. ``still_differing`` lists what still differs after a repair (empty when it
    worked, and when none was asked for)."""

    length: int
    granularity: int
    chunks: int
    differing: List[Tuple[int, int]]
    differing_bytes: int
    bytes_read: int
    repaired_bytes: int
    still_differing: List[Tuple[int, int]]
    elapsed: float
    equal: bool

    def to_json(self) -> dict:
        """A JSON-ready dict (ranges as ``[start, end]`` lists)."""
        return {
            "length": self.length,
            "granularity": self.granularity,
            "chunks": self.chunks,
            "equal": self.equal,
            "differing": [list(r) for r in self.differing],
            "differing_bytes": self.differing_bytes,
            "bytes_read": self.bytes_read,
            "repaired_bytes": self.repaired_bytes,
            "still_differing": [list(r) for r in self.still_differing],
            "elapsed": self.elapsed,
        }


@dataclass(frozen=True)
class OnlineVerifyReport:
    """The outcome of :meth:`Mirror.verify`: ``differing`` lists ranges found different
    while neither side changed (a real difference); ``skipped`` those that were dirty or
    being written on every try (the mirror copies them anyway)."""

    length: int
    granularity: int
    verified_bytes: int
    differing: List[Tuple[int, int]]
    skipped: List[Tuple[int, int]]
    elapsed: float
    #: With ``repair=True``: the differing ranges the job took to copy again.
    repaired: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """No difference in what could be compared."""
        return not self.differing

    @classmethod
    def from_native(cls, d: dict) -> "OnlineVerifyReport":
        return cls(length=d["length"], granularity=d["granularity"], verified_bytes=d["verified_bytes"],
                   differing=[tuple(r) for r in d["differing"]], skipped=[tuple(r) for r in d["skipped"]],
                   elapsed=d["elapsed"], repaired=[tuple(r) for r in d["repaired"]])


def verify(source: Union[str, os.PathLike], target: Union[str, os.PathLike], *,
           granularity: int = DEFAULT_VERIFY_GRANULARITY, repair: bool = False) -> VerifyReport:
    """Compares ``source`` and ``target`` (same size) in chunks of ``granularity`` bytes (a
    power of two, 512 B to 64 MiB). With ``repair=True`` the differing chunks are copied from
    the source and checked again (``report.equal`` then says whether that worked).

    Raises ``InvalidArgument`` for different sizes or a bad granularity, ``IoError`` when an
    image cannot be opened, read or (repairing) written."""
    d = _native.verify(os.fspath(source), os.fspath(target), granularity, repair)
    return VerifyReport(
        length=d["length"], granularity=d["granularity"], chunks=d["chunks"],
        differing=[tuple(r) for r in d["differing"]], differing_bytes=d["differing_bytes"],
        bytes_read=d["bytes_read"], repaired_bytes=d["repaired_bytes"],
        still_differing=[tuple(r) for r in d["still_differing"]], elapsed=d["elapsed"],
        equal=d["equal"],
    )


__all__ = ["OnlineVerifyReport", "VerifyReport", "verify", "DEFAULT_VERIFY_GRANULARITY"]
