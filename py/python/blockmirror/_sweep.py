"""`blockmirror.sweep`: many simulations in parallel, on this machine or on an executor's workers.

Without an executor the native sweep runs every point here, in parallel (rayon, GIL
released). With one, the points are cut into batches in input order; each batch is one task
that runs the native sweep on a worker (in parallel there too), and the rows come back in
input order whatever order the batches finish in. The simulator is deterministic, so a
point gives the same row wherever it runs.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union, cast

from blockmirror import _native

#: How many batches a sweep is cut into by default: enough for every worker of a small
#: cluster to stay busy while the slowest batch finishes, few enough that each task's
#: overhead (pickling, scheduling) stays small next to its simulations.
DEFAULT_BATCHES = 64

Progress = Union[bool, Callable[[int, int], object], None]

_ITEM = re.compile(r"sweep item (\d+)")


def sweep(
    params: Iterable[dict[str, Any]],
    threads: int | None = None,
    progress: Progress = None,
    executor: Any = None,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Run many simulations and return one plain dict per parameter dict, in order: the
    parameters, plus the ``Simulation.result()`` keys and ``outcome``.

    Each dict holds ``Simulation`` options plus ``length`` and optionally ``until``
    (``"ready"``, ``"concluded"``, ``"not_converging"`` or a time in ns). ``threads``: the
    threads of each native sweep (here, or on each worker; default one per core there).
    ``progress``: ``True`` shows a tqdm bar on stderr, a callable is called as
    ``progress(done, total)`` in the calling thread; an exception it raises stops the sweep.

    ``executor``: a ``concurrent.futures.Executor`` (e.g. ``ProcessPoolExecutor``) or a
    ``dask.distributed.Client``. The points are then cut into batches of ``batch_size``
    (default: about ``DEFAULT_BATCHES`` batches), each run as one task on the executor's
    workers, and progress advances as batches return. A bad parameter dict raises
    ``InvalidArgument`` naming its index in ``params``; when any batch fails, the batches
    not yet started are cancelled and the error propagates.
    """
    if executor is None:
        if batch_size is not None:
            raise _native.InvalidArgument("batch_size needs an executor")
        # The native sweep checks the type itself ("sweep takes a list of dicts").
        return _native.sweep(cast("list[dict[str, Any]]", params), threads=threads, progress=progress)
    points = list(params)
    size = _batch_size(len(points), batch_size)
    batches = [points[start:start + size] for start in range(0, len(points), size)]
    report = _Progress(progress, len(points))
    pool = _as_executor(executor)
    futures: dict[concurrent.futures.Future[list[dict[str, Any]]], int] = {}
    try:
        for index, batch in enumerate(batches):
            futures[pool.submit(_run_batch, index * size, batch, threads)] = index
        rows: list[list[dict[str, Any]] | None] = [None] * len(batches)
        done = 0
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            rows[index] = future.result()
            done += len(batches[index])
            report.advance(done, len(batches[index]))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        report.close()
    return [row for batch_rows in rows for row in batch_rows]  # type: ignore[union-attr]


def _batch_size(points: int, batch_size: int | None) -> int:
    if batch_size is None:
        return max(1, math.ceil(points / DEFAULT_BATCHES))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise _native.InvalidArgument(f"batch_size must be a positive integer, not {batch_size!r}")
    return batch_size


def _as_executor(executor: Any) -> concurrent.futures.Executor:
    """The executor itself, or a dask Client's ``concurrent.futures`` view of its workers."""
    if isinstance(executor, concurrent.futures.Executor):
        return executor
    get_executor = getattr(executor, "get_executor", None)
    if callable(get_executor) and type(executor).__module__.startswith("distributed"):
        return get_executor()  # type: ignore[no-any-return]
    raise _native.InvalidArgument(
        "executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
        f"not {type(executor).__name__}"
    )


def _run_batch(offset: int, batch: Sequence[dict[str, Any]], threads: int | None) -> list[dict[str, Any]]:
    """One task on a worker: the native sweep of `batch`, whose first point is number
    `offset` of the whole sweep (so that an error names the point's index in it)."""
    try:
        return _native.sweep(list(batch), threads=threads)
    except _native.InvalidArgument as error:
        message = _ITEM.sub(lambda m: f"sweep item {offset + int(m.group(1))}", str(error), count=1)
        raise _native.InvalidArgument(message) from None


class _Progress:
    """Reports finished points as batches return: a tqdm bar, a callback, or nothing."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.total = total
        self.callback: Callable[[int, int], object] | None = None
        self.bar: Any = None
        if progress is None or progress is False:
            return
        if progress is True:
            # A dependency of the package; imported by name so that its stubs are optional.
            tqdm = importlib.import_module("tqdm.auto").tqdm
            self.bar = tqdm(total=total, desc="sweep", unit="run", file=sys.stderr)
        elif callable(progress):
            self.callback = progress
        else:
            raise _native.InvalidArgument("progress must be a bool or a callable progress(done, total)")

    def advance(self, done: int, batch: int) -> None:
        if self.bar is not None:
            self.bar.update(batch)
        elif self.callback is not None:
            self.callback(done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
