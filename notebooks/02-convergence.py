# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Convergence: how fast may the guest write before the mirror never gets ready?
#
# An operator planning a live migration asks how long the copy takes while the guest keeps
# writing, and from which write rate a background mirror stops converging (the knee). This
# notebook sweeps the guest write rate, as a fraction of the target's bandwidth, for the two
# copy modes (background, write-blocking) and two workloads (uniform random, hot-spot), and
# measures the time to `BLOCK_JOB_READY` in the deterministic simulator.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 64 * MIB
GRANULARITY_BYTES = 64 * 1024
COPY_BYTES_PER_SEC = 16 * MIB  # the target's bandwidth: a full copy takes 4 s
WRITE_BYTES = 4096  # the guest's writes: small random writes, like a database
TIME_LIMIT_S = 20  # a run that is not ready after 5x the plain copy time counts as "never"
FRACTIONS = [0.0] + list(np.geomspace(0.01, 1.0, 24))  # guest bytes/s / target bytes/s
PATTERNS = ["uniform", "hot-spot"]  # hot-spot: 90 % of writes go to 10 % of the disk
COPY_MODES = ["background", "write-blocking"]
SEEDS = [1, 2]

grid = [
    dict(
        length=LENGTH_BYTES,
        granularity=GRANULARITY_BYTES,
        seed=seed,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=int(fraction * COPY_BYTES_PER_SEC),
        write_size=WRITE_BYTES,
        pattern=pattern,
        copy_mode=copy_mode,
        until="ready",
        time_limit_ns=TIME_LIMIT_S * NS_PER_S,
    )
    for fraction in FRACTIONS
    for pattern in PATTERNS
    for copy_mode in COPY_MODES
    for seed in SEEDS
]
print(f"{len(grid)} simulations")

# %% [markdown]
# Run the whole grid with `blockmirror.sweep`, which runs the simulations in parallel
# (rayon, with the GIL released). The grid must finish in under 30 s on 2 cores.

# %%
started = time.perf_counter()
results = bm.sweep(grid)
sweep_s = time.perf_counter() - started
print(f"sweep: {len(results)} simulations in {sweep_s:.2f} s wall time on {os.cpu_count()} cores")
assert len(results) == len(grid)
assert sweep_s < 30, f"the grid took {sweep_s:.1f} s, the budget is 30 s"

# %% [markdown]
# One row per (pattern, copy mode, write fraction): the seeds are averaged; a run that was
# not ready within the time limit makes the point "not ready" (None).

# %%
def time_to_ready_s(result):
    ns = result["time_to_ready_ns"]
    return None if ns is None else ns / NS_PER_S

rows = []
for pattern in PATTERNS:
    for copy_mode in COPY_MODES:
        for fraction in FRACTIONS:
            runs = [
                r for p, r in zip(grid, results)
                if p["pattern"] == pattern and p["copy_mode"] == copy_mode
                and p["write_rate"] == int(fraction * COPY_BYTES_PER_SEC)
            ]
            times = [time_to_ready_s(r) for r in runs]
            copied = [r["bytes_copied"] for r in runs]
            rows.append(dict(
                pattern=pattern,
                copy_mode=copy_mode,
                fraction=fraction,
                time_to_ready_s=None if None in times else float(np.mean(times)),
                copied_x_disk=float(np.mean(copied)) / LENGTH_BYTES,
            ))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
for ax, pattern in zip(axes, PATTERNS):
    plots.plot_sweep(
        [r for r in rows if r["pattern"] == pattern and r["fraction"] > 0],
        x="fraction", y="time_to_ready_s", group_by=["copy_mode"], ax=ax,
        x_label="guest write rate / target bandwidth (log scale)",
        y_label="time to READY (s, virtual)",
        title=f"{pattern} {WRITE_BYTES // 1024} KiB writes, {GRANULARITY_BYTES // 1024} KiB chunks",
    )
    ax.set_xscale("log")
    ax.axhline(LENGTH_BYTES / COPY_BYTES_PER_SEC, color="grey", linestyle=":", linewidth=1)
plt.show()

# %% [markdown]
# The price of converging: bytes the job copied until READY, as a multiple of the disk size.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
plots.plot_sweep(
    [r for r in rows if r["fraction"] > 0 and r["time_to_ready_s"] is not None],
    x="fraction", y="copied_x_disk", group_by=["pattern", "copy_mode"], ax=ax,
    x_label="guest write rate / target bandwidth (log scale)",
    y_label="bytes copied until READY (x disk size)",
    title="Copy volume until READY",
)
ax.set_xscale("log")
plt.show()

# %% [markdown]
# The knee: the lowest write fraction at which background mode needs more than twice its
# no-write time to get ready, or never gets ready within the limit. A simple model predicts
# it for uniform writes: each 4 KiB write dirties a whole 64 KiB chunk, so near the end of
# the copy the guest dirties `chunk/write` times its write rate; the job can only keep up
# while that stays below the target's bandwidth.

# %%
def knee(pattern, copy_mode):
    series = [r for r in rows if r["pattern"] == pattern and r["copy_mode"] == copy_mode]
    base = series[0]["time_to_ready_s"]  # fraction 0: the plain copy
    for r in series[1:]:
        if r["time_to_ready_s"] is None or r["time_to_ready_s"] > 2 * base:
            return r["fraction"]
    return None

knees = {(p, m): knee(p, m) for p in PATTERNS for m in COPY_MODES}
model_knee = WRITE_BYTES / GRANULARITY_BYTES
for (pattern, mode), k in knees.items():
    text = "none up to 1.0" if k is None else f"{k:.3f}"
    print(f"{pattern:9} {mode:15} knee: {text}")
print(f"model for uniform background: write/chunk = {model_knee:.4f}")
never = {
    (p, m): sum(1 for r in rows if r["pattern"] == p and r["copy_mode"] == m
                and r["time_to_ready_s"] is None)
    for p in PATTERNS for m in COPY_MODES
}

# %%
def describe(k):
    return "never within the grid (up to 1.0)" if k is None else f"at about {k:.3f}"

wb_always = all(never[(p, "write-blocking")] == 0 for p in PATTERNS)
print(
    f"Answer: with {WRITE_BYTES // 1024} KiB guest writes and {GRANULARITY_BYTES // 1024} KiB "
    f"chunks, background mirroring stops converging {describe(knees[('uniform', 'background')])} "
    f"of the target's bandwidth for uniform writes (model: {model_knee:.3f}) and "
    f"{describe(knees[('hot-spot', 'background')])} for hot-spot writes, which re-dirty the "
    f"same chunks and so cost less. Beyond the knee, {never[('uniform', 'background')]} of "
    f"{len(FRACTIONS)} uniform background points never got ready within {TIME_LIMIT_S} s. "
    f"Write-blocking mode "
    f"{'reached READY at every rate tried' if wb_always else 'did NOT reach READY at every rate'}"
    f", so above the knee use write-blocking (or lower the guest's write rate)."
)
