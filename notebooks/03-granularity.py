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
# the job copy the whole chunk again. This notebook measures both, for chunks from 4 KiB to
# 4 MiB under small random writes at a light and a heavier rate, and recommends a
# granularity from the data.

# %%
import matplotlib.pyplot as plt
import numpy as np

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 256 * MIB
COPY_BYTES_PER_SEC = 64 * MIB  # the plain copy takes 4 s
WRITE_BYTES = 4096
WRITES_PER_SEC = [8, 64]  # light: even 4 MiB chunks keep up (8 x 4 MiB/s < 64 MiB/s); heavier
TIME_LIMIT_S = 60
GRANULARITIES = [4096 << i for i in range(11)]  # 4 KiB .. 4 MiB
SEEDS = list(range(1, 9))
RECOPY_BUDGET = 0.01  # recommendation: re-copy at most 1 % of the disk
QEMU_DEFAULT_GRANULARITY = 64 * 1024  # a raw or qcow2 target with 64 KiB clusters

grid = [
    dict(
        length=LENGTH_BYTES,
        granularity=granularity,
        seed=seed,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=writes_per_sec * WRITE_BYTES,
        write_size=WRITE_BYTES,
        pattern="uniform",
        copy_mode="background",
        max_io=max(1 * MIB, granularity),  # a copy holds at least one chunk
        until="ready",
        time_limit_ns=TIME_LIMIT_S * NS_PER_S,
    )
    for writes_per_sec in WRITES_PER_SEC
    for granularity in GRANULARITIES
    for seed in SEEDS
]
results = bm.sweep(grid)
print(f"{len(results)} simulations")

# %% [markdown]
# Re-copied bytes: what the job copied again, until READY, because the guest dirtied a chunk
# it had already copied (the simulator's `bytes_recopied`; the seeds are averaged). A chunk
# size at which any seed was not ready within the time limit gets no value: the job never
# converges there. Bitmap memory: the size of the bitmap's bottom level, as
# `HBitmap.serialize` returns it, for a 1 TiB disk (the upper levels add about 1/64 more).

# %%
recopied = {}  # writes/s -> re-copied bytes per granularity (None: not ready in time)
for writes_per_sec in WRITES_PER_SEC:
    series = []
    for granularity in GRANULARITIES:
        runs = [r for r in results  # result rows carry their parameters
                if r["granularity"] == granularity and r["write_rate"] == writes_per_sec * WRITE_BYTES]
        ready = all(r["time_to_ready_ns"] is not None for r in runs)
        series.append(float(np.mean([r["bytes_recopied"] for r in runs])) if ready else None)
    recopied[writes_per_sec] = series

def bitmap_bytes(length, granularity):
    bitmap = bm.HBitmap(length, granularity=granularity.bit_length() - 1)
    return len(bitmap.serialize(0, length))

memory_1tib = [bitmap_bytes(1 << 40, g) for g in GRANULARITIES]
mib = lambda v: "not ready" if v is None else f"{v / MIB:.2f}"  # noqa: E731
print(f"{'chunk':>8}" + "".join(f"{f're-copied MiB @{w}/s':>22}" for w in WRITES_PER_SEC)
      + f"{'bitmap @1 TiB':>16}")
for i, g in enumerate(GRANULARITIES):
    print(f"{plots.format_bytes(g):>8}" + "".join(f"{mib(recopied[w][i]):>22}" for w in WRITES_PER_SEC)
          + f"{plots.format_bytes(memory_1tib[i]):>16}")

# %%
ax = plots.plot_granularity_tradeoff(
    GRANULARITIES, {f"{w} writes/s": recopied[w] for w in WRITES_PER_SEC}, memory_1tib,
    bitmap_label="bitmap memory for a 1 TiB disk",
    title=f"{LENGTH_BYTES // MIB} MiB disk, random {WRITE_BYTES // 1024} KiB writes, "
          f"{COPY_BYTES_PER_SEC // MIB} MiB/s target",
)
budget_mib = RECOPY_BUDGET * LENGTH_BYTES / MIB
ax.axhline(budget_mib, color="grey", linestyle=":", linewidth=1)
ax.text(GRANULARITIES[0], budget_mib, f" re-copy budget: {RECOPY_BUDGET:.0%} of the disk",
        va="bottom", fontsize="small", color="grey")
# QEMU's default: the target's cluster size clamped to 4-64 KiB, else 64 KiB.
ax.axvline(QEMU_DEFAULT_GRANULARITY, color="#CC79A7", linestyle="-.", linewidth=1)
ax.text(QEMU_DEFAULT_GRANULARITY, 0.02, " QEMU's default (64 KiB)", color="#CC79A7",
        fontsize="small", transform=ax.get_xaxis_transform())
plt.show()

# %% [markdown]
# ## The whole plane: 10,000 simulations on a process pool
#
# The two write rates above are two lines through a plane. To see all of it, sweep chunk
# size against write rate on a small disk (2 MiB, copied in 31 ms at 64 MiB/s): 10 chunk
# sizes x 1,000 write rates. `bm.sweep(..., executor=pool)` cuts the list into batches,
# runs each on a worker process (in parallel there too) and returns the rows in input
# order, with a progress bar as batches come back. A `dask.distributed.Client` in place of
# the pool spreads the same batches over a cluster (`pip install blockmirror[dask]`).

# %%
import concurrent.futures
import time

PLANE_GRANULARITIES = [4096 << i for i in range(10)]  # 4 KiB .. 2 MiB
PLANE_FRACTIONS = np.geomspace(0.001, 1.0, 1000)  # guest bytes/s / target bytes/s
PLANE_COPY = 64 * MIB
plane = [
    dict(length=2 * MIB, granularity=g, seed=1, copy_rate=PLANE_COPY,
         write_rate=int(f * PLANE_COPY), write_size=WRITE_BYTES, max_io=max(1 * MIB, g),
         until="ready", time_limit_ns=NS_PER_S // 2, not_converging_window_ns=NS_PER_S // 10)
    for g in PLANE_GRANULARITIES for f in PLANE_FRACTIONS
]
started = time.perf_counter()
with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
    plane_rows = bm.sweep(plane, executor=pool, progress=True)
print(f"{len(plane_rows)} simulations on 2 worker processes in {time.perf_counter() - started:.1f} s")

# %%
ready_ms = np.array([np.nan if r["time_to_ready_ns"] is None else r["time_to_ready_ns"] / 1e6
                     for r in plane_rows]).reshape(len(PLANE_GRANULARITIES), len(PLANE_FRACTIONS))
fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
mesh = ax.pcolormesh(PLANE_FRACTIONS, np.arange(len(PLANE_GRANULARITIES)), ready_ms,
                     shading="nearest", cmap="viridis", norm="log")
fig.colorbar(mesh, ax=ax, label="time to READY (ms, virtual; white: never)")
ax.set_xscale("log")
ax.set_yticks(range(len(PLANE_GRANULARITIES)), [plots.format_bytes(g) for g in PLANE_GRANULARITIES])
ax.set_xlabel("guest write rate / target bandwidth (log scale)")
ax.set_ylabel("chunk size")
model = [WRITE_BYTES / g for g in PLANE_GRANULARITIES]
ax.plot(model, range(len(PLANE_GRANULARITIES)), "w--", linewidth=1, label="model knee: write / chunk")
ax.legend(loc="lower left", fontsize="small")
ax.set_title(f"2 MiB disk, {WRITE_BYTES // 1024} KiB random writes, 64 MiB/s target: "
             f"{len(plane_rows)} runs")
plt.show()
plane_knees = {g: next((f for f, t in zip(PLANE_FRACTIONS, row) if np.isnan(t)), None)
               for g, row in zip(PLANE_GRANULARITIES, ready_ms)}
print("first write rate never ready, per chunk size: "
      + ", ".join(f"{plots.format_bytes(g)}: {'none' if k is None else f'{k:.3f}'}"
                  for g, k in plane_knees.items()))

# %% [markdown]
# Recommendation rule: the coarsest granularity whose re-copied bytes stay within 1 % of the
# disk (and that converges at all). Coarser chunks save bitmap memory, but past that point
# the re-copy grows with the chunk size, because a 4 KiB write makes the job copy the whole
# chunk again.

# %%
def recommend(series):
    within = [g for g, r in zip(GRANULARITIES, series)
              if r is not None and r <= RECOPY_BUDGET * LENGTH_BYTES]
    return max(within) if within else None

answers = []
for w in WRITES_PER_SEC:
    series, best = recopied[w], recommend(recopied[w])
    never = [g for g, r in zip(GRANULARITIES, series) if r is None]
    text = f"at {w} writes/s re-copy grows from {mib(series[0])} MiB at 4 KiB chunks"
    done = [(g, r) for g, r in zip(GRANULARITIES, series) if r is not None]
    text += f" to {mib(done[-1][1])} MiB at {plots.format_bytes(done[-1][0])}"
    if never:
        text += f", and from {plots.format_bytes(min(never))} up the job never got ready"
    if best is None:
        text += "; no chunk size kept re-copy within the budget"
    else:
        i = GRANULARITIES.index(best)
        text += (f"; the coarsest chunk within the {RECOPY_BUDGET:.0%} budget is "
                 f"{plots.format_bytes(best)} ({mib(series[i])} MiB re-copied, bitmap "
                 f"{plots.format_bytes(memory_1tib[i])} per TiB)")
    answers.append(text)
bests = {w: recommend(recopied[w]) for w in WRITES_PER_SEC}
picks = [f"{plots.format_bytes(b)} at {w} writes/s" for w, b in bests.items() if b is not None]
chosen = [b for b in bests.values() if b is not None]
falls = len(chosen) > 1 and all(a > b for a, b in zip(chosen, chosen[1:]))
print(
    "Answer: " + "; ".join(answers) + f". Over the same range the bitmap shrinks from "
    f"{plots.format_bytes(memory_1tib[0])} to {plots.format_bytes(memory_1tib[-1])} per TiB. "
    + ("The right chunk size falls as the guest's write rate rises: " if falls
       else "Recommended chunk sizes: ")
    + (", ".join(picks) if picks else "none of the sizes tried met the budget")
    + " - size the bitmap for the busiest write rate the guest is expected to sustain. "
    f"QEMU's default of {plots.format_bytes(QEMU_DEFAULT_GRANULARITY)} is "
    + " and ".join(("within" if b is not None and QEMU_DEFAULT_GRANULARITY <= b else "outside")
                   + f" the budget at {w} writes/s" for w, b in bests.items())
    + "."
)
