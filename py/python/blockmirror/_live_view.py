"""What the live page's stream sends of a job: one full snapshot, then only what changed.

A stream's first message about a job is a ``state`` snapshot: the job's status and
progress, its dirty bitmap in full (base64, one bit per chunk: chunk k is bit k % 8 of
byte k / 8) and its operations in flight. After that, each look at the job that finds a
change sends a ``delta``: the new status and progress, the runs of bitmap bytes that
changed (``[byte_offset, base64]``, found :data:`WORD` bytes at a time) and the operations
when they changed. Every message is numbered (``seq``) and carries the CRC-32 of the whole
bitmap as the sender has it, so a page applies a delta only to the message before it and
checks the result; a page that cannot (a gap, a CRC that differs) reconnects, and a new
stream starts with a snapshot: that is the resync, on the page's request.

Bound on bytes: a delta carries the changed words, at most :data:`MAX_OPS` operations and a
few hundred bytes of numbers; when the changed words would cost more than half the
snapshot, a snapshot is sent instead. So a message is never much larger than a snapshot,
and a stream sends at most one per ``STATE_PERIOD``, and on average at most
``MAX_BYTES_PER_SEC`` (see ``_web`` and :class:`Pacer`). For a 1 GiB disk at
64 KiB chunks (16,384 chunks, a 2 KiB bitmap, 2.7 KiB in base64) where a few writes
land, a delta is the few 8-byte words those writes touched (about 20 bytes each) plus
the operations: a few hundred bytes rather than the 2.7 KiB the snapshot costs.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Bytes of bitmap a delta compares (and sends) at once: 64 chunks.
WORD = 8
#: Bytes of bitmap compared before looking for the words that changed within: most of a
#: large bitmap is unchanged between two looks, and one comparison skips a block.
BLOCK = 4096
#: Operations a message lists at most (the job's copies in flight are a handful; guest
#: writes waiting in write-blocking mode may be more), lowest offsets first.
MAX_OPS = 256

#: The job's numbers every message carries.
_NUMBERS = ("status", "current", "total", "length", "granularity", "chunks", "dirty_bytes")


def _popcount(data: bytes) -> int:
    n = int.from_bytes(data, "little")
    return n.bit_count() if hasattr(n, "bit_count") else bin(n).count("1")


@dataclass(frozen=True)
class JobView:
    """One look at the running job (``NbdServer.job_state``), ops as chunk ranges."""

    job: str
    numbers: Tuple[Any, ...]
    bits: bytes
    #: ``[kind, first_chunk, end_chunk]`` of each operation, lowest offset first.
    ops: Tuple[Tuple[str, int, int], ...]

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "JobView":
        granularity = int(state["granularity"])
        ops = sorted(((str(kind), offset // granularity, -(-(offset + length) // granularity))
                      for _id, kind, offset, length in state.get("ops", ())),
                     key=lambda op: (op[1], op[2], op[0]))
        return cls(job=str(state["job"]), numbers=tuple(state[k] for k in _NUMBERS),
                   bits=bytes(state["bits"]), ops=tuple(ops[:MAX_OPS]))

    def layout(self) -> Tuple[Any, ...]:
        """What a delta cannot change: the job, its chunks and the bitmap's size."""
        return (self.job, len(self.bits), self.numbers[_NUMBERS.index("granularity")],
                self.numbers[_NUMBERS.index("chunks")])

    def same_layout(self, other: "JobView") -> bool:
        """Whether a delta from ``other`` can describe this view (the same job and grid)."""
        return self.layout() == other.layout()

    def header(self, seq: int) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"job": self.job, "seq": seq}
        payload.update(zip(_NUMBERS, self.numbers))
        payload["dirty_chunks"] = _popcount(self.bits)
        payload["crc"] = zlib.crc32(self.bits)
        return payload


def changed_runs(old: bytes, new: bytes) -> List[Tuple[int, int]]:
    """The byte ranges ``[start, end)`` of ``new`` that differ from ``old`` (same length),
    in whole :data:`WORD`\\ s (the last one may be short), neighbouring runs one word apart
    merged (a word costs about what a run's offset does)."""
    assert len(old) == len(new)
    runs: List[Tuple[int, int]] = []
    size = len(new)
    for block in range(0, size, BLOCK):
        block_end = min(size, block + BLOCK)
        if old[block:block_end] == new[block:block_end]:
            continue
        for start in range(block, block_end, WORD):
            end = min(block_end, start + WORD)
            if old[start:end] == new[start:end]:
                continue
            if runs and start - runs[-1][1] <= WORD:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
    return runs


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class StreamEncoder:
    """The messages one stream sends: what its page lacks of each new look at the job. It
    compares with what it last SENT (not with the last look), so however slowly the page
    reads, each delta applies to the message before it."""

    def __init__(self) -> None:
        self._sent: Optional[JobView] = None
        self._sent_none = False
        self._seq = 0

    def messages(self, view: Optional[JobView]) -> List[Tuple[str, Dict[str, Any]]]:
        """``(event name, payload)`` to send for ``view`` (None: no job runs); empty when
        the page already shows it."""
        if view is None:
            if self._sent_none:
                return []
            self._sent, self._sent_none = None, True
            return [("state", {"job": None})]
        self._sent_none = False
        sent = self._sent
        if sent is not None and sent == view:
            return []
        self._seq += 1
        self._sent = view
        if sent is None or not view.same_layout(sent):
            return [("state", self._snapshot(view))]
        runs = changed_runs(sent.bits, view.bits)
        if 4 * sum(end - start for start, end in runs) // 3 + 16 * len(runs) > len(view.bits) * 2 // 3:
            return [("state", self._snapshot(view))]
        payload = view.header(self._seq)
        payload["runs"] = [[start, _b64(view.bits[start:end])] for start, end in runs]
        if view.ops != sent.ops:
            payload["ops"] = [list(op) for op in view.ops]
        return [("delta", payload)]

    def _snapshot(self, view: JobView) -> Dict[str, Any]:
        payload = view.header(self._seq)
        payload["bits"] = _b64(view.bits)
        payload["ops"] = [list(op) for op in view.ops]
        return payload


class Pacer:
    """When a stream looks at the job next: every ``period`` seconds, later after a large
    message, so that its messages average at most ``bytes_per_sec``: after ``n`` bytes the
    next look is ``max(period, n / bytes_per_sec)`` seconds on. So over any stretch of
    time, the bytes sent are at most ``bytes_per_sec`` times its length plus one message."""

    def __init__(self, period: float, bytes_per_sec: float) -> None:
        self.period = period
        self.bytes_per_sec = bytes_per_sec

    def next_look(self, now: float, sent_bytes: int) -> float:
        return now + max(self.period, sent_bytes / self.bytes_per_sec)


def apply_delta(bits: bytearray, runs: Sequence[Sequence[Any]]) -> None:
    """Applies a delta's runs to a bitmap, as the page does (for tests and tools)."""
    for start, data in runs:
        raw = base64.b64decode(data)
        bits[start:start + len(raw)] = raw


__all__ = ["JobView", "Pacer", "StreamEncoder", "changed_runs", "apply_delta", "WORD", "BLOCK", "MAX_OPS"]
