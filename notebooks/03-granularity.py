# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Granularity: how big should a chunk of the dirty bitmap be?
#
# A small chunk means a bigger dirty bitmap; a big chunk means every small guest write makes
# the job copy the whole chunk again. This notebook measures both on one simulated disk
# (256 MiB, target bandwidth 64 MiB/s, so the plain copy takes 4,000 ms) under one guest
# input: random 4 KiB writes at 10 %, 25 % and 50 % of the copy bandwidth, the range where
# the choice of chunk size decides whether the mirror finishes at all. Chunks run from
# 4 KiB to 1 MiB; QEMU's default (the target's cluster size clamped to 512 B..64 KiB,
# 64 KiB for a raw target) is marked for comparison. The job copies in background mode, as
# QEMU's `drive-mirror` does unless told `copy-mode=write-blocking`. Amounts of data are in
# MiB, rates in MiB/s, times in ms (chunk sizes are named as such: 4 KiB, 64 KiB, ...).

# %%
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
KIB = 1 << 10
NS_PER_MS = 1_000_000
LENGTH_BYTES = 256 * MIB
COPY_BYTES_PER_SEC = 64 * MIB  # target bandwidth: the plain copy takes 4,000 ms
WRITE_BYTES = 4 * KIB
LOADS = [0.10, 0.25, 0.50]  # guest write rate / copy bandwidth
TIME_LIMIT_MS = 60_000
GRANULARITIES = [4 * KIB << i for i in range(9)]  # 4 KiB .. 1 MiB
SEEDS = list(range(1, 7))
RECOPY_BUDGET = 0.5  # recommendation: re-copy at most half the disk (copy cost x1.5)
QEMU_DEFAULT_GRANULARITY = 64 * KIB  # raw target: no cluster size, QEMU picks 64 KiB

def load_label(load):
    return f"guest {load:.0%} = {load * COPY_BYTES_PER_SEC / MIB:.1f} MiB/s"

# One grid: every chunk size sees the same disk and, per seed, the same guest writes.
grid = [
    dict(
        length=LENGTH_BYTES,
        granularity=granularity,
        seed=seed,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=int(load * COPY_BYTES_PER_SEC),
        write_size=WRITE_BYTES,
        pattern="uniform",
        copy_mode="background",
        max_io=max(1 * MIB, granularity),  # a copy holds at least one chunk
        until="ready",
        time_limit_ns=TIME_LIMIT_MS * NS_PER_MS,
    )
    for load in LOADS
    for granularity in GRANULARITIES
    for seed in SEEDS
]
results = bm.sweep(grid)
print(f"{len(results)} simulations: {len(LOADS)} loads x {len(GRANULARITIES)} chunk sizes "
      f"x {len(SEEDS)} seeds")

# %% [markdown]
# Two measures per chunk size, both of this disk:
#
# * **re-copied MiB**: what the job copied again, until READY, because the guest dirtied a
#   chunk it had already copied (the simulator's `bytes_recopied`). The mean over the seeds
#   with a bootstrap 95 % interval. A chunk size at which some seed did not get ready (the
#   job reported `BLOCK_JOB_NOT_CONVERGING`, or the time limit passed) gets no value: the
#   job does not converge there.
# * **bitmap MiB**: the size of the dirty bitmap's bottom level for this 256 MiB disk, as
#   `HBitmap.serialize` returns it (the upper levels add about 1/64 more).

# %%
RNG = np.random.default_rng(0)

def mean_ci(values, resamples=2000):
    """(mean, low, high): the bootstrap 95 % percentile interval of the mean."""
    values = np.asarray(values, dtype=float)
    means = RNG.choice(values, size=(resamples, len(values))).mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))

def runs_of(load, granularity):
    """The result rows (they carry their parameters) of one load and chunk size."""
    return [r for r in results if r["granularity"] == granularity
            and r["write_rate"] == int(load * COPY_BYTES_PER_SEC)]

def bitmap_bytes(length, granularity):
    bitmap = bm.HBitmap(length, granularity=granularity.bit_length() - 1)
    return len(bitmap.serialize(0, length))

cells = {}  # (load, granularity) -> dict of the seeds' outcome and the measures' spread
for load in LOADS:
    for g in GRANULARITIES:
        runs = runs_of(load, g)
        assert len(runs) == len(SEEDS)
        ready = [r for r in runs if r["time_to_ready_ns"] is not None]
        all_ready = len(ready) == len(runs)
        cells[load, g] = dict(
            ready=len(ready),
            recopied=mean_ci([r["bytes_recopied"] for r in runs]) if all_ready else None,
            ready_ms=mean_ci([r["time_to_ready_ns"] / NS_PER_MS for r in runs]) if all_ready else None,
        )
bitmap = [bitmap_bytes(LENGTH_BYTES, g) for g in GRANULARITIES]

def show(ci, scale):
    return "not ready" if ci is None else f"{ci[0] / scale:.1f} [{ci[1] / scale:.1f}, {ci[2] / scale:.1f}]"

for load in LOADS:
    print(f"{load_label(load)}: re-copied MiB and time to READY in ms, mean [95 % CI]")
    for i, g in enumerate(GRANULARITIES):
        c = cells[load, g]
        print(f"  {plots.format_bytes(g):>8}  ready {c['ready']}/{len(SEEDS)}  "
              f"re-copied {show(c['recopied'], MIB):>26}  READY after {show(c['ready_ms'], 1):>30} ms"
              f"  bitmap {bitmap[i] / MIB:.6f} MiB")

# %%
def recopied_series(part):
    """Per load: the mean (part 0) or the interval (parts 1:3) per chunk size, None if not ready."""
    return {load_label(load): [None if cells[load, g]["recopied"] is None else cells[load, g]["recopied"][part]
                               for g in GRANULARITIES] for load in LOADS}

ax = plots.plot_granularity_tradeoff(
    GRANULARITIES,
    recopied_series(0),
    bitmap,
    intervals=recopied_series(slice(1, 3)),
    reference=(QEMU_DEFAULT_GRANULARITY, f"QEMU default, {plots.format_bytes(QEMU_DEFAULT_GRANULARITY)}"),
    recopied_label="re-copied until READY",
    bitmap_label=f"bitmap of the {LENGTH_BYTES // MIB} MiB disk",
    title=f"{LENGTH_BYTES // MIB} MiB disk, random {WRITE_BYTES // KIB} KiB writes, "
          f"{COPY_BYTES_PER_SEC // MIB} MiB/s copy bandwidth\n"
          f"mean and 95 % interval over {len(SEEDS)} seeds",
)
budget_mib = RECOPY_BUDGET * LENGTH_BYTES / MIB
ax.axhline(budget_mib, color="grey", linestyle=":", linewidth=1)
ax.text(GRANULARITIES[-1], budget_mib, f"re-copy budget: {RECOPY_BUDGET:.0%} of the disk ",
        va="bottom", ha="right", fontsize="small", color="grey")
plt.show()

# %% [markdown]
# Why the lines stop: with the backlog small, almost every 4 KiB write lands in a clean
# chunk and dirties all of it, so the guest newly dirties about `writes/s x chunk` bytes per
# second. The job can only catch up while that stays below the copy bandwidth, that is while
# `load < write size / chunk size`: below 40 KiB at 10 %, 16 KiB at 25 %, 8 KiB at 50 %.
# Exactly at that size the backlog drifts neither way and the job gets ready only when it
# happens to touch zero; above it, the job reports `BLOCK_JOB_NOT_CONVERGING`.
#
# ## The whole plane: 10,000 simulations on a process pool
#
# The three loads above are three lines through a plane. To see all of it, sweep chunk size
# against write rate: 10 chunk sizes x 1,000 write rates. 10,000 runs of the 256 MiB disk
# would take many minutes, so this section uses a 2 MiB disk (copied in 31 ms at the same
# 64 MiB/s, same 4 KiB random writes, one seed, a 100 ms not-converging window to match the
# short copy). The model's knee has no disk size in it; the last cell compares, load by
# load, which chunk sizes get ready here and on the 256 MiB disk.
# `bm.sweep(..., executor=pool)` cuts the list into batches, runs each on a worker process
# (in parallel there too) and returns the rows in input order, with a progress bar as
# batches come back. A `dask.distributed.Client` in place of the pool spreads the same
# batches over a cluster (`pip install blockmirror[dask]`).

# %%
import concurrent.futures
import time

PLANE_LENGTH_BYTES = 2 * MIB
PLANE_GRANULARITIES = [4 * KIB << i for i in range(10)]  # 4 KiB .. 2 MiB
PLANE_LOADS = np.geomspace(0.001, 1.0, 1000)  # guest write rate / copy bandwidth
plane = [
    dict(length=PLANE_LENGTH_BYTES, granularity=g, seed=1, copy_rate=COPY_BYTES_PER_SEC,
         write_rate=int(f * COPY_BYTES_PER_SEC), write_size=WRITE_BYTES, max_io=max(1 * MIB, g),
         until="ready", time_limit_ns=500 * NS_PER_MS, not_converging_window_ns=100 * NS_PER_MS)
    for g in PLANE_GRANULARITIES for f in PLANE_LOADS
]
started = time.perf_counter()
with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
    plane_rows = bm.sweep(plane, executor=pool, progress=True)
print(f"{len(plane_rows)} simulations on 2 worker processes in {time.perf_counter() - started:.1f} s")

# %%
ready_ms = np.array([np.nan if r["time_to_ready_ns"] is None else r["time_to_ready_ns"] / NS_PER_MS
                     for r in plane_rows]).reshape(len(PLANE_GRANULARITIES), len(PLANE_LOADS))
plane_mib_s = PLANE_LOADS * COPY_BYTES_PER_SEC / MIB
fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
mesh = ax.pcolormesh(plane_mib_s, np.arange(len(PLANE_GRANULARITIES)), ready_ms,
                     shading="nearest", cmap="viridis", norm="log")
bar = fig.colorbar(mesh, ax=ax, label="time to READY (ms, virtual; white: never)")
ax.set_xscale("log")
ax.set_yticks(range(len(PLANE_GRANULARITIES)), [plots.format_bytes(g) for g in PLANE_GRANULARITIES])
ax.set_xlabel(f"guest write rate (MiB/s, log scale; copy bandwidth {COPY_BYTES_PER_SEC // MIB} MiB/s)")
ax.set_ylabel("granularity (chunk size)")
model = [WRITE_BYTES / g * COPY_BYTES_PER_SEC / MIB for g in PLANE_GRANULARITIES]
ax.plot(model, range(len(PLANE_GRANULARITIES)), "w--", linewidth=1,
        label="model knee: write size / chunk size x bandwidth")
for load in LOADS:
    ax.axvline(load * COPY_BYTES_PER_SEC / MIB, color="white", linestyle=":", linewidth=1.2,
               label=f"the loads above: {', '.join(f'{x:.0%}' for x in LOADS)}" if load == LOADS[0] else None)
ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
qemu_row = PLANE_GRANULARITIES.index(QEMU_DEFAULT_GRANULARITY)
ax.axhline(qemu_row, color="#CC79A7", linestyle="-.", linewidth=1.2,
           label=f"QEMU default, {plots.format_bytes(QEMU_DEFAULT_GRANULARITY)}")
ax.legend(loc="lower left", fontsize="small")
ax.set_title(f"{PLANE_LENGTH_BYTES // MIB} MiB disk, {WRITE_BYTES // KIB} KiB random writes, "
             f"{COPY_BYTES_PER_SEC // MIB} MiB/s copy bandwidth: {len(plane_rows)} runs")
plt.show()
plane_knees = {g: next((f for f, t in zip(PLANE_LOADS, row) if np.isnan(t)), None)
               for g, row in zip(PLANE_GRANULARITIES, ready_ms)}
print("lowest load never ready, per chunk size (2 MiB disk): "
      + ", ".join(f"{plots.format_bytes(g)}: {'none' if k is None else f'{k:.1%}'}"
                  for g, k in plane_knees.items()))

# %% [markdown]
# Recommendation rule: per load, the coarsest chunk size at which every seed got ready and
# the upper end of the 95 % interval of the re-copied bytes stays within half the disk.
# Coarser chunks save bitmap memory, but past that point the re-copy grows steeply and then
# the job stops converging at all.

# %%
def recommend(load):
    within = [g for g in GRANULARITIES if cells[load, g]["recopied"] is not None
              and cells[load, g]["recopied"][2] <= RECOPY_BUDGET * LENGTH_BYTES]
    return max(within) if within else None

def coarsest_ready(load):
    ready = [g for g in GRANULARITIES if cells[load, g]["recopied"] is not None]
    return max(ready) if ready else None

def plane_coarsest_ready(load):
    """The coarsest chunk size the 2 MiB plane got ready at, at the plane's load nearest `load`."""
    column = int(np.argmin(np.abs(PLANE_LOADS - load)))
    ready = [g for g, row in zip(PLANE_GRANULARITIES, ready_ms) if not np.isnan(row[column])]
    return max(ready) if ready else None

def size_or_none(g):
    return "none" if g is None else plots.format_bytes(g)

answers = []
for load in LOADS:
    best, top = recommend(load), coarsest_ready(load)
    text = f"at {load_label(load)}"
    if top is None:
        text += " no chunk size got ready"
    else:
        first = cells[load, GRANULARITIES[0]]["recopied"]
        last = cells[load, top]["recopied"]
        never = [g for g in GRANULARITIES if cells[load, g]["ready"] == 0]
        text += (f" re-copy grows from {show(first, MIB)} MiB at {plots.format_bytes(GRANULARITIES[0])} "
                 f"to {show(last, MIB)} MiB at {plots.format_bytes(top)}")
        if never and never == GRANULARITIES[-len(never):]:
            text += f"; from {plots.format_bytes(never[0])} up no seed got ready"
        elif never:
            text += f"; at {', '.join(plots.format_bytes(g) for g in never)} no seed got ready"
    if best is None:
        text += "; no chunk size kept re-copy within the budget"
    else:
        text += (f"; recommended {plots.format_bytes(best)} ({show(cells[load, best]['recopied'], MIB)} MiB "
                 f"re-copied, READY after {show(cells[load, best]['ready_ms'], 1)} ms)")
    answers.append(text)
bests = [recommend(load) for load in LOADS]
chosen = [b for b in bests if b is not None]
falls = len(chosen) > 1 and all(a > b for a, b in zip(chosen, chosen[1:]))
qemu_ready = [load for load in LOADS if cells[load, QEMU_DEFAULT_GRANULARITY]["recopied"] is not None]
print(
    "Answer: " + "; ".join(answers) + ". "
    + ("The right chunk size falls as the guest's write rate rises: size it for the busiest "
       "load the guest is expected to sustain. " if falls else "")
    + f"Over the chunk sizes tried the bitmap of this disk shrinks from {bitmap[0] / MIB:.4f} MiB "
    f"to {bitmap[-1] / MIB:.6f} MiB ({bitmap[0] * (1 << 40) / LENGTH_BYTES / MIB:.0f} MiB to "
    f"{bitmap[-1] * (1 << 40) / LENGTH_BYTES / MIB:.1f} MiB scaled to a 1 TiB disk). "
    f"QEMU's default of {plots.format_bytes(QEMU_DEFAULT_GRANULARITY)} got ready at "
    + (", ".join(f"{load:.0%}" for load in qemu_ready) if qemu_ready else "none")
    + f" of the {', '.join(f'{load:.0%}' for load in LOADS)} loads in background mode"
    + ("" if len(qemu_ready) == len(LOADS) else
       " (there the guest needs copy-mode=write-blocking, or throttling, to let the mirror finish)")
    + ". Coarsest chunk size that got ready, 256 MiB disk (all seeds) against the 2 MiB plane: "
    + ", ".join(f"{size_or_none(coarsest_ready(load))} against {size_or_none(plane_coarsest_ready(load))} "
                f"at {load:.0%}" for load in LOADS)
    + "."
)
