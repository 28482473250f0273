"""blockmirror.sweep on an executor: batches run on the workers, rows come back in input
order and equal to the local sweep's, progress advances per returned batch, errors name
the point and cancel the rest."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

import blockmirror as bm

MIB = 1 << 20
SEC = 1_000_000_000

# Small, varied points: different seeds, modes and write rates, so that their rows differ
# and an order mix-up shows.
GRID = [
    dict(length=2 * MIB, seed=seed, copy_rate=64 * MIB, write_rate=rate * MIB,
         copy_mode=mode, time_limit_ns=5 * SEC)
    for seed in range(1, 5)
    for rate in (0, 1, 4)
    for mode in ("background", "write-blocking")
]


@pytest.fixture(scope="module")
def processes():
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.mark.parametrize("batch_size", [None, 1, 5, len(GRID), 10 * len(GRID)])
def test_rows_equal_the_local_sweep_in_input_order(processes, batch_size) -> None:
    local = bm.sweep(GRID, threads=1)
    remote = bm.sweep(GRID, threads=1, executor=processes, batch_size=batch_size)
    assert remote == local
    assert [(r["seed"], r["write_rate"], r["copy_mode"]) for r in remote] == [
        (p["seed"], p["write_rate"], p["copy_mode"]) for p in GRID
    ]


def test_batches_finishing_out_of_order_keep_the_input_order() -> None:
    # Threads: the first batch is slow (a long run), the later ones return before it.
    slow = dict(length=64 * MIB, copy_rate=16 * MIB, write_rate=MIB, time_limit_ns=20 * SEC)
    grid = [slow] + GRID
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        rows = bm.sweep(grid, executor=pool, batch_size=1, threads=1)
    assert rows == bm.sweep(grid, threads=1)


def test_progress_advances_per_batch_in_the_calling_thread(processes) -> None:
    calls = []
    caller = threading.get_ident()
    bm.sweep(GRID, threads=1, executor=processes, batch_size=5,
             progress=lambda done, total: calls.append((done, total, threading.get_ident())))
    assert [c[1] for c in calls] == [len(GRID)] * len(calls)
    assert {c[2] for c in calls} == {caller}
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and dones[-1] == len(GRID)
    # Batches of 5 of 24 points (5, 5, 5, 5, 4), reported as each returns, in whatever
    # order they finish: one report per batch, each advancing by one batch's size.
    steps = [b - a for a, b in zip([0] + dones, dones)]
    assert sorted(steps) == [4, 5, 5, 5, 5], dones


def test_progress_bar_goes_to_stderr(processes, capsys: pytest.CaptureFixture[str]) -> None:
    bm.sweep(GRID[:6], executor=processes, batch_size=2, progress=True)
    captured = capsys.readouterr()
    assert "sweep" in captured.err and "6/6" in captured.err


def test_a_bad_point_names_its_index_in_the_whole_sweep(processes) -> None:
    grid = [dict(p) for p in GRID]
    grid[13]["copy_mode"] = "sideways"
    with pytest.raises(bm.InvalidArgument, match=r"sweep item 13\b"):
        bm.sweep(grid, executor=processes, batch_size=5)
    with pytest.raises(bm.InvalidArgument, match="sweep item 2 has no length"):
        bm.sweep([*GRID[:2], dict(seed=1)], executor=processes, batch_size=2)


def test_bad_arguments_are_refused_before_any_work() -> None:
    class Submitting(concurrent.futures.ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):  # type: ignore[override]
            Submitting.submitted += 1
            return super().submit(*args, **kwargs)

    with Submitting(max_workers=1) as pool:
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(bm.InvalidArgument, match="batch_size"):
                bm.sweep(GRID, executor=pool, batch_size=bad)  # type: ignore[arg-type]
        with pytest.raises(bm.InvalidArgument, match="progress"):
            bm.sweep(GRID, executor=pool, progress="yes")  # type: ignore[arg-type]
    assert Submitting.submitted == 0
    with pytest.raises(bm.InvalidArgument, match="executor"):
        bm.sweep(GRID, executor=object())
    with pytest.raises(bm.InvalidArgument, match="batch_size needs an executor"):
        bm.sweep(GRID, batch_size=4)


def test_an_exception_in_the_progress_callback_stops_the_sweep() -> None:
    started = []

    def boom(done, total):
        raise RuntimeError("stop here")

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        original = pool.submit

        def counting_submit(*args, **kwargs):
            future = original(*args, **kwargs)
            future.add_done_callback(lambda f: started.append(not f.cancelled()))
            return future

        pool.submit = counting_submit  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="stop here"):
            bm.sweep(GRID, executor=pool, batch_size=1, progress=boom)
    # The batches still queued behind the single worker were cancelled, not run.
    assert started.count(False) > 0


def test_an_empty_sweep_submits_nothing(processes) -> None:
    assert bm.sweep([], executor=processes) == []
