"""blockmirror.sweep on a dask.distributed cluster (the optional extra `blockmirror[dask]`):
a local cluster of 2 worker processes runs the batches; the rows equal the local sweep's."""

from __future__ import annotations

import distributed
import pytest

import blockmirror as bm

MIB = 1 << 20
SEC = 1_000_000_000
GRID = [
    dict(length=2 * MIB, seed=seed, copy_rate=64 * MIB, write_rate=rate * MIB, time_limit_ns=5 * SEC)
    for seed in range(1, 6)
    for rate in (0, 2, 8)
]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_a_dask_client_runs_the_batches_on_its_workers(client) -> None:
    calls = []
    rows = bm.sweep(GRID, threads=1, executor=client, batch_size=4,
                    progress=lambda done, total: calls.append(done))
    assert rows == bm.sweep(GRID, threads=1)
    assert calls[-1] == len(GRID) and len(calls) == 4  # 15 points in batches of 4


def test_a_bad_point_fails_the_sweep_with_its_index(client) -> None:
    grid = [dict(p) for p in GRID]
    grid[9]["sync"] = "half"
    with pytest.raises(bm.InvalidArgument, match=r"sweep item 9\b"):
        bm.sweep(grid, executor=client, batch_size=4)
