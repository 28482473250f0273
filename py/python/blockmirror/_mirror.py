"""Live mirroring of real disk images: ``Mirror`` (a live mirror the guest writes through)
and ``mirror`` (copy and complete, blocking).

The I/O runs in Rust (``blockmirror._native.FileMirror``) on its own threads with the GIL
released; this module adds events as objects, the context manager, timeouts and errors.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Union, cast

from blockmirror._event_log import EventCallback, _EventLog, _close_native, _pump_events
from blockmirror._events import MirrorEvent, MirrorResult
from blockmirror._target_files import CreatedTarget, PathArg, bitmap_path_for, open_tracking_creation
from blockmirror._types import CopyMode, ErrorPolicy, ImageFormat, SyncMode

if TYPE_CHECKING:
    from blockmirror._verify import OnlineVerifyReport
from blockmirror._native import (
    DEFAULTS, ERRNO_BY_NAME, FileMirror, InvalidArgument, IoError, JobStateError, Timeout,
)

# The core's job defaults (blockmirror.DEFAULTS), typed for the signatures below.
_GRANULARITY = int(DEFAULTS["granularity"])
_BUF_SIZE = int(DEFAULTS["buf_size"])
_MAX_IN_FLIGHT = int(DEFAULTS["max_in_flight"])
_MAX_IO = int(DEFAULTS["max_io"])
_SPEED = int(DEFAULTS["speed"])
_SYNC = cast(SyncMode, DEFAULTS["sync"])
_COPY_MODE = cast(CopyMode, DEFAULTS["copy_mode"])
_ON_SOURCE_ERROR = cast(ErrorPolicy, DEFAULTS["on_source_error"])
_ON_TARGET_ERROR = cast(ErrorPolicy, DEFAULTS["on_target_error"])
_NOT_CONVERGING_WINDOW = int(DEFAULTS["not_converging_window_ns"]) / 1e9

__all__ = ["CreatedTarget", "Mirror", "mirror"]

# The longest a run_to_end() waits in the native mirror at a time: between two waits the
# main thread runs Python, so Ctrl-C, SIGTERM and the deadline act within this.
_TICK_S = 0.1
# How long a force-cancel may take before run_to_end() gives up waiting (closing the mirror
# still waits for I/O already submitted).
_CANCEL_WAIT_S = 30.0


def _io_error(failure: Dict[str, Any]) -> IoError:
    err = IoError(failure["errno"], f"mirror job failed: {failure['message']}")
    err.operation = failure.get("operation")
    err.offset = failure.get("offset")
    return err


class Mirror:
    """A live mirror of ``source`` onto ``target`` (raw image files or block devices).

    The guest's I/O goes through this object: :meth:`write` writes the source and marks
    the range dirty (``background``), or also writes the target before returning
    (``write-blocking``, once the chunk is in sync); after :meth:`complete` has pivoted,
    :meth:`read` and :meth:`write` go to the target. Safe to call from several threads.

    The mirror never writes the source itself; the target is created sparse with the
    source's size, or reused with ``reuse=True`` (its size must match). Leaving a ``with``
    block before the job ended force-cancels it (the source is untouched by the mirror).

    Verbs after the job ended raise :class:`JobStateError`; guest I/O keeps working until
    :meth:`close` (on the target after a pivot, else on the source).

    ``offload`` (default on) lets ranges that hold data be copied inside the kernel
    (``copy_file_range``: one memory copy instead of two) when both sides are regular files
    and ``direct`` is off; each range's first 4 KiB is still read, so all-zero ranges are
    still found and written as zeroes.

    ``io_uring`` (default on) submits the copy path's O_DIRECT reads and writes through
    io_uring from one thread; it only applies with ``direct=True`` and falls back to the
    worker threads where the kernel refuses io_uring.

    ``auto_converge``: in ``background`` mode, switch to ``write-blocking`` as soon as the
    job reports ``BLOCK_JOB_NOT_CONVERGING`` (dirty bytes did not shrink for
    ``not_converging_window`` seconds; 0 turns the watch off), so a guest that writes faster
    than the copy no longer keeps the job from ever becoming ready.

    ``lock`` (default on) takes QEMU-compatible image locks on both files for as long as
    the mirror is open: a VM, ``qemu-nbd`` or ``qemu-io`` opening either image read-write
    is refused meanwhile, and the mirror refuses (``IoError``, operation ``"lock"``) an
    image such a program writes. Readers that share writes (``qemu-img info``,
    ``qemu-img compare``, anything with ``-U``) keep working. Turn it off only when this
    process already holds an image's lock on a descriptor of its own.

    ``format`` / ``target_format`` (``"raw"`` or ``"qcow2"``; default: probed, a created
    target taking the source's) force the images' formats, as QEMU's options do. A qcow2
    source is read through its backing chain; the sync mode decides the target's backing
    file as QEMU's drive-mirror does: ``full`` makes it standalone, ``top`` copies only the
    top layer's clusters and gives a created target the source's backing file (an existing
    one must already have it), ``none`` copies only new writes onto a target whose backing
    file is the source. A chain that cannot be used raises :class:`ImageError` (``.kind``)
    before anything is written.
    ``bitmap`` keeps a persistent write-intent bitmap file (``True``: ``TARGET.bmbitmap``
    beside a local target; or a path, required for an NBD target): every write through
    :meth:`write` is marked in it, durably, before it reaches the source, and chunks are
    cleared once their copy is on the target and flushed. After a crash (even ``kill -9``)
    ``resume=True`` (implies ``reuse=True`` and the default bitmap path when none is given)
    copies only what the file marks. A bitmap file that exists without ``resume``, or one
    that is damaged or made for another source, target, size or granularity, raises
    :class:`BitmapError` (``.reason`` says which). The file is removed when the job
    completes with the switch-over. ``bitmap_interval`` is the seconds between clearing
    rounds (also how long a written chunk stays marked). ``bitmap_granularity``: bytes per
    bit of the file (a power of two, at least ``granularity``; default the larger of
    ``granularity`` and 1 MiB): coarser keeps more of the guest's working set marked, so
    fewer writes wait for the file, and makes a resume copy whole bitmap chunks.
    ``bitmap_min_generation``: refuse (``BitmapError``, reason ``stale_generation``) a file
    whose newest generation is below this, e.g. an old copy restored from a backup; remember
    :attr:`bitmap_generation` (or ``read_bitmap(path)["generation"]``) to pass it.

    ``on_event`` is called from a background thread for every event, in order.
    ``faults``: a list of dicts ``{"side": "source"|"target", "op": "read"|"write"|"zero"|
    "flush"|"any", "nth": 1, "count": 1, "error": "nospace"|"io"|"readonly"|errno}``: the
    ``nth`` matching operation (and ``count - 1`` more; ``count=0``: all) fail, for tests.
    """

    def __init__(
        self,
        source: PathArg,
        target: PathArg,
        *,
        granularity: int = _GRANULARITY,
        sync: SyncMode = _SYNC,
        copy_mode: CopyMode = _COPY_MODE,
        on_source_error: ErrorPolicy = _ON_SOURCE_ERROR,
        on_target_error: ErrorPolicy = _ON_TARGET_ERROR,
        speed: int = _SPEED,
        buf_size: int = _BUF_SIZE,
        max_in_flight: int = _MAX_IN_FLIGHT,
        max_io: int = _MAX_IO,
        direct: bool = False,
        reuse: bool = False,
        unmap: bool = True,
        offload: bool = True,
        io_uring: bool = True,
        auto_converge: bool = False,
        not_converging_window: float = _NOT_CONVERGING_WINDOW,
        faults: Optional[Sequence[Dict[str, Any]]] = None,
        on_event: Optional[EventCallback] = None,
        guest_writes: bool = True,
        lock: bool = True,
        format: Optional[ImageFormat] = None,
        target_format: Optional[ImageFormat] = None,
        bitmap: Union[None, bool, PathArg] = None,
        resume: bool = False,
        bitmap_interval: float = 1.0,
        bitmap_granularity: Optional[int] = None,
        bitmap_min_generation: Optional[int] = None,
    ) -> None:
        self.source = os.fspath(source)
        self.target = os.fspath(target)
        self.bitmap_path = bitmap_path_for(self.target, bitmap, resume)
        reuse = reuse or resume
        self._native = FileMirror(
            self.source, self.target, granularity=granularity, sync=sync, copy_mode=copy_mode,
            on_source_error=on_source_error, on_target_error=on_target_error, speed=speed,
            buf_size=buf_size, max_in_flight=max_in_flight, max_io=max_io, direct=direct,
            reuse=reuse, unmap=unmap, guest_writes=guest_writes, offload=offload, io_uring=io_uring,
            auto_converge=auto_converge, not_converging_window=not_converging_window,
            faults=list(faults) if faults is not None else None, lock=lock,
            format=format, target_format=target_format,
            bitmap=self.bitmap_path, resume=resume, bitmap_interval=bitmap_interval,
            bitmap_granularity=bitmap_granularity, bitmap_min_generation=bitmap_min_generation,
        )
        self._started = time.monotonic()
        self._log = _EventLog()
        self.callback_errors = self._log.callback_errors
        # The event thread and the finalizer hold the native mirror and the log, never
        # `self`: a Mirror dropped without close() is then collectable, and collecting it
        # closes the native mirror (its threads and files) through the finalizer.
        self._pump = threading.Thread(target=_pump_events, args=(self._native, self._log, on_event),
                                      name="blockmirror-events", daemon=True)
        self._pump.start()
        self._finalizer = weakref.finalize(self, _close_native, self._native, self._log, self._pump)

    # -- events -------------------------------------------------------------------------

    @property
    def events(self) -> List[MirrorEvent]:
        """The events so far, oldest first (a copy)."""
        return self._log.since(0)

    @property
    def events_truncated(self) -> bool:
        """close() stopped taking events before the last one (a backlog it would have
        taken more than a second to convert); ``events`` then lacks the newest ones."""
        return self._log.truncated

    @property
    def errors_not_stored(self) -> int:
        """``BLOCK_JOB_ERROR`` events left out of ``events``: of a run of errors alike in
        operation, error and action, only the first 100 are kept (``on_event`` still sees
        every one). A job retrying a full disk would otherwise fill memory."""
        return self._log.errors_not_stored

    def events_since(self, index: int) -> List[MirrorEvent]:
        """The events from number ``index`` on (a copy of that tail only: cheap to poll)."""
        return self._log.since(index)

    def iter_events(self, timeout: Optional[float] = None) -> Iterator[MirrorEvent]:
        """Every event from the first, blocking for new ones; ends after the job's last
        event. Raises :class:`Timeout` (a ``TimeoutError``) when no new event arrives within
        ``timeout`` seconds."""
        _check_timeout(timeout)
        log = self._log
        index = 0
        while True:
            with log.cond:
                if not log.cond.wait_for(lambda: index < len(log.events) or log.done, timeout=timeout):
                    raise Timeout(f"no mirror event within {timeout} s")
                if index >= len(log.events):
                    return
                event = log.events[index]
            index += 1
            yield event

    def _wait_events_drained(self, timeout: float = 10) -> bool:
        with self._log.cond:
            return self._log.cond.wait_for(lambda: self._log.done, timeout=timeout)

    # -- guest I/O ----------------------------------------------------------------------

    def write(self, offset: int, data: Union[bytes, bytearray, memoryview]) -> None:
        """The guest writes ``data`` (a bytes-like object) at ``offset`` (GIL released
        during the I/O). Raises ``TypeError`` for anything else: ``bytes(5)`` would be five
        zero bytes and ``bytes([1, 2, 3])`` a list's values, never what a guest meant."""
        try:
            memoryview(data)
        except TypeError:
            raise TypeError(f"data must be a bytes-like object (bytes, bytearray, memoryview), "
                            f"not {type(data).__name__}") from None
        self._native.write(offset, data)

    def verify(self, granularity: int = 1 << 20, repair: bool = False) -> "OnlineVerifyReport":
        """Compares the source and the target now, while writes go on, in segments of
        ``granularity`` bytes (a power of two, 4 KiB to 64 MiB). A segment is compared only
        while it is clean, no copy or write is on it and no write was announced on it during
        its reads; one that stays busy is reported in ``skipped``. So ``differing`` never
        holds a range a concurrent write explains. Each side is read as the guest sees it (a
        qcow2 image through its chain, an NBD target over NBD). With ``repair=True`` the job
        copies the differing segments again (``repaired``); wait for the job to be clean
        (``dirty_bytes`` 0) before checking again."""
        from blockmirror._verify import OnlineVerifyReport

        return OnlineVerifyReport.from_native(self._native.verify(granularity, repair))

    def read(self, offset: int, length: int) -> bytes:
        """The guest reads ``length`` bytes at ``offset``."""
        return self._native.read(offset, length)

    # -- state --------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """The disk length in bytes."""
        return self._native.length

    @property
    def bitmap_generation(self) -> Optional[int]:
        """The generation of the bitmap file's newest slot: pass it as
        ``bitmap_min_generation`` when resuming to refuse an older copy of the file. None
        without a bitmap, once the file was removed, or once the mirror is closed."""
        return self._native.bitmap_generation

    @property
    def status(self) -> str:
        """The job status (``running``, ``ready``, ``concluded``, ...)."""
        return self._native.status

    @property
    def progress(self) -> tuple[int, int]:
        """``(current, total)`` bytes; ``total`` grows while the guest writes."""
        return self._native.progress

    @property
    def ended(self) -> bool:
        """The job has ended and every I/O has finished (``events`` is then complete)."""
        if not self._native.wait_end(0):
            return False
        self._wait_events_drained()
        return True

    def stats(self) -> Dict[str, Any]:
        """Status, progress, byte counters and failure, read together."""
        return self._native.snapshot()

    def _raise_if_failed(self) -> None:
        snap = self._native.snapshot()
        if snap["internal_error"]:
            raise RuntimeError(f"blockmirror internal error: {snap['internal_error']}")
        if snap["failure"] is not None:
            raise _io_error(snap["failure"])

    # -- verbs --------------------------------------------------------------------------

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Waits for ``BLOCK_JOB_READY``. Raises :class:`Timeout`, ``IoError`` if the job
        failed, or ``JobStateError`` if it ended otherwise before ready."""
        _check_timeout(timeout)
        outcome = self._native.wait_ready(timeout)
        if outcome == "ready":
            return
        if outcome == "timeout":
            raise Timeout(f"mirror not ready within {timeout} s (status {self.status})")
        self._wait_events_drained()  # the job ended: make `events` complete first
        self._raise_if_failed()
        raise JobStateError(f"the job ended in status {self.status} before it was ready")

    def _wait_end(self, timeout: Optional[float]) -> MirrorResult:
        if not self._native.wait_end(timeout):
            raise Timeout(f"mirror did not end within {timeout} s (status {self.status})")
        self._wait_events_drained()
        self._raise_if_failed()
        return self.result()

    @property
    def started(self) -> float:
        """``time.monotonic()`` when the mirror started: event ``time_ns`` counts from here."""
        return self._started

    def run_to_end(
        self,
        *,
        pivot: bool = True,
        timeout: Optional[float] = None,
        on_tick: Optional[Callable[[], None]] = None,
    ) -> MirrorResult:
        """Runs the job to its end, the way ``blockmirror.mirror`` and ``blockmirror mirror``
        do: once ready, :meth:`complete` (``pivot=False``: cancel in ready, which leaves the
        target a consistent copy without switching over); returns the result when the job
        has ended.

        Never waits more than a tenth of a second at a time, so signals (Ctrl-C) and
        ``timeout`` act within that; ``on_tick`` is called after every wait while the job
        has not ended (to show events or progress). Raises :class:`Timeout` once ``timeout`` seconds pass and
        ``IoError`` when the job failed; both after force-cancelling and waiting for the
        end (at most 30 s, in the same short waits). A ``stop`` error policy also ends the
        run (nobody resumes a blocking call): ``IoError`` whose ``event`` attribute is the
        ``BLOCK_JOB_ERROR`` that stopped it."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        native = self._native
        ending = False
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            tick = _TICK_S if left is None else min(_TICK_S, left)
            if not ending:
                # Returns at once when ready, so the switch starts without polling delay.
                if native.wait_ready(tick) == "ready":
                    try:
                        if pivot:
                            native.complete()
                        else:
                            native.cancel(False)  # in ready: drain, flush, no pivot
                        ending = True
                    except JobStateError:
                        pass  # e.g. standby after a `stop` error: handled below
            else:
                native.wait_end(tick)
            if native.wait_end(0):
                break
            if on_tick is not None:
                on_tick()
            stop = self._log.stop
            if stop is not None:
                self._force_cancel()
                err = IoError(_errno_of(stop.error),
                              f"mirror job stopped on a {stop.operation} error ({stop.error})")
                err.operation, err.offset = stop.operation, stop.offset
                setattr(err, "event", stop)  # only this IoError has one: read with getattr
                raise err
            if deadline is not None and time.monotonic() >= deadline:
                self._force_cancel()
                raise Timeout(f"mirror did not finish within {timeout} s")
        return self._wait_end(_CANCEL_WAIT_S)

    def _force_cancel(self) -> None:
        """Force-cancels and waits for the end in short waits (signals act between them)."""
        try:
            self._native.cancel(True)
        except JobStateError:
            pass  # it ended (or is ending) already
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while not self._native.wait_end(_TICK_S) and time.monotonic() < deadline:
            pass

    def complete(self, timeout: Optional[float] = None) -> MirrorResult:
        """Switches over (only when ready): quiesces the guest, copies what is dirty, flushes
        the target and pivots. Returns once the job has ended. Raises ``IoError`` if it failed."""
        _check_timeout(timeout)
        self._native.complete()
        return self._wait_end(timeout)

    def cancel(self, force: bool = False, timeout: Optional[float] = None) -> MirrorResult:
        """Cancels: in ready (not forced) the target ends as a consistent copy; otherwise the
        job stops at once (``BLOCK_JOB_CANCELLED``). Returns once the job has ended."""
        _check_timeout(timeout)
        self._native.cancel(force)
        return self._wait_end(timeout)

    def pause(self) -> None:
        """Pauses the copy (guest writes are still tracked)."""
        self._native.pause()

    def resume(self) -> None:
        """Resumes after a pause or a ``stop`` error."""
        self._native.resume()

    def set_speed(self, bytes_per_sec: int) -> None:
        """Changes the speed limit (0 = unlimited)."""
        self._native.set_speed(bytes_per_sec)

    def set_copy_mode(self, mode: CopyMode) -> None:
        """Switches between ``background`` and ``write-blocking`` while running."""
        self._native.set_copy_mode(mode)

    def result(self) -> MirrorResult:
        """What the mirror did so far (final once the job has ended)."""
        snap = self._native.snapshot()
        events = tuple(self.events)
        end_ns = snap["end_ns"]
        seconds = end_ns / 1e9 if end_ns is not None else time.monotonic() - self._started
        ready_ns = snap["ready_ns"]
        return MirrorResult(
            source=self.source, target=self.target, length=self.length, status=snap["status"],
            bytes_copied=snap["current"], initial_bytes=snap["initial_total"],
            bytes_read=snap["bytes_read"], bytes_written=snap["bytes_written"],
            bytes_offloaded=snap["bytes_offloaded"],
            bytes_zeroed=snap["bytes_zeroed"], bytes_punched=snap["bytes_punched"],
            guest_bytes_written=snap["guest_bytes_written"],
            guest_bytes_mirrored=snap["guest_bytes_mirrored"], seconds=seconds,
            seconds_to_ready=ready_ns / 1e9 if ready_ns is not None else None,
            pivoted=snap["pivoted"],
            cancelled=any(e.type == "BLOCK_JOB_CANCELLED" for e in events), events=events,
        )

    def close(self) -> None:
        """Force-cancels a job that has not ended, waits for it, stops every thread.
        Idempotent; afterwards every call raises ``JobStateError``. Dropping the last
        reference to a Mirror does the same (a finalizer)."""
        self._finalizer()

    def __enter__(self) -> "Mirror":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        current, total = self.progress
        return f"<Mirror {self.source!r} -> {self.target!r} {self.status} {current}/{total}>"


def mirror(
    source: PathArg,
    target: PathArg,
    *,
    granularity: int = _GRANULARITY,
    sync: SyncMode = _SYNC,
    copy_mode: CopyMode = _COPY_MODE,
    on_source_error: ErrorPolicy = _ON_SOURCE_ERROR,
    on_target_error: ErrorPolicy = _ON_TARGET_ERROR,
    speed: int = _SPEED,
    buf_size: int = _BUF_SIZE,
    max_in_flight: int = _MAX_IN_FLIGHT,
    max_io: int = _MAX_IO,
    direct: bool = False,
    progress: bool = False,
    reuse: bool = False,
    unmap: bool = True,
    offload: bool = True,
    io_uring: bool = True,
    auto_converge: bool = False,
    not_converging_window: float = _NOT_CONVERGING_WINDOW,
    timeout: Optional[float] = None,
    keep_partial: bool = False,
    faults: Optional[Sequence[Dict[str, Any]]] = None,
    on_event: Optional[EventCallback] = None,
    lock: bool = True,
    format: Optional[ImageFormat] = None,
    target_format: Optional[ImageFormat] = None,
    bitmap: Union[None, bool, PathArg] = None,
    resume: bool = False,
) -> MirrorResult:
    """Copies ``source`` to ``target`` and completes (the target is then the new image).

    Blocks until done; ``progress=True`` shows a ``tqdm`` bar. The job options are
    :class:`Mirror`'s (the same defaults, the core's). Raises ``IoError`` (with
    ``errno``, ``operation``, ``offset``) when the job fails, and also when an error policy
    stopped it (``stop``/``enospc``: nobody can resume a blocking call; use ``Mirror``).
    Raises :class:`Timeout` (a ``TimeoutError``; after force-cancelling) when ``timeout``
    seconds pass.

    A target this call created is removed when it raises (a failure, a timeout, a
    ``KeyboardInterrupt``), unless ``keep_partial=True``: a partial copy is not an image,
    and on a full filesystem it keeps the space taken. A reused target is never removed.

    ``bitmap`` / ``resume`` are :class:`Mirror`'s: with a bitmap file, a target this call
    created is kept when it raises (with the file, it is what a later ``resume=True`` call
    continues from).
    """
    _check_timeout(timeout)
    # A partial target with its bitmap file is a resumable copy, not debris.
    resumable = bool(bitmap) or resume
    keep_partial = keep_partial or resumable
    bar = None
    if progress:
        from blockmirror._progress import ProgressBar

        bar = ProgressBar("mirror")
    m, created = open_tracking_creation(
        lambda: Mirror(source, target, granularity=granularity, sync=sync, copy_mode=copy_mode,
                       on_source_error=on_source_error, on_target_error=on_target_error,
                       speed=speed, buf_size=buf_size, max_in_flight=max_in_flight, max_io=max_io,
                       direct=direct, reuse=reuse, unmap=unmap, offload=offload,
                       io_uring=io_uring, auto_converge=auto_converge,
                       not_converging_window=not_converging_window, faults=faults,
                       on_event=on_event, guest_writes=False, lock=lock, format=format,
                       target_format=target_format, bitmap=bitmap, resume=resume),
        os.fspath(target), remove_on_interrupt=not keep_partial)

    def show_progress() -> None:
        if bar is not None:
            current, total = m.progress
            bar.update(current, total)
            bar.set_status(m.status)

    succeeded = False
    try:
        result = m.run_to_end(timeout=timeout, on_tick=show_progress)
        if bar is not None:
            bar.update(result.bytes_copied, result.bytes_copied, done=True)
        succeeded = True
        return result
    finally:
        if bar is not None:
            bar.close()
        m.close()
        if not succeeded and created is not None and not keep_partial:
            created.remove()


def _check_timeout(timeout: Optional[float]) -> None:
    """``timeout=``: None or a non-negative number of seconds, else ``InvalidArgument``
    (the native waits check theirs the same way)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgument(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not timeout >= 0:  # NaN too
        raise InvalidArgument(f"timeout must be a non-negative number of seconds, not {timeout}")


def _errno_of(name: Optional[str]) -> int:
    # Event error names come from the core's table (ERRNO_BY_NAME); other errnos are decimal.
    if name is None:
        return ERRNO_BY_NAME["io"]
    if name in ERRNO_BY_NAME:
        return ERRNO_BY_NAME[name]
    try:
        return int(name)
    except ValueError:
        return ERRNO_BY_NAME["io"]
