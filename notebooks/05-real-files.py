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
# # Real files against the simulator: can the simulation be trusted?
#
# The other notebooks answer questions with the simulator; this one checks that its answers
# hold on real files. It mirrors a real image with the file backend while a guest thread
# writes at several rates, and compares the measured time to READY and bytes copied with the
# simulator's prediction for the same size, speed, granularity and write rate.

# %%
import random
import tempfile
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import blockmirror as bm

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 48 * MIB
GRANULARITY_BYTES = 64 * 1024
SPEED_BYTES_PER_SEC = 32 * MIB  # the speed limit sets the copy rate on both sides: 1.5 s
WRITE_BYTES = 64 * 1024  # one write per chunk keeps the guest thread's pace easy to hold
FRACTIONS = [0.0, 0.25, 0.5]  # guest bytes/s as a fraction of the speed limit
COPY_MODES = ["background", "write-blocking"]

workdir = tempfile.TemporaryDirectory(prefix="blockmirror-real-")
source = Path(workdir.name) / "source.img"
rng = random.Random(5)
with open(source, "wb") as f:
    f.write(rng.randbytes(LENGTH_BYTES))  # all data: no holes, so every chunk is copied

# %% [markdown]
# A paced guest: uniform random writes of one chunk, at `rate` bytes per second, through
# `Mirror.write`, until READY.

# %%
def guest(mirror, rate, stop, seed):
    if rate == 0:
        return
    g = random.Random(seed)
    data = g.randbytes(WRITE_BYTES)
    start, n = time.monotonic(), 0
    while not stop.is_set():
        offset = g.randrange(LENGTH_BYTES // WRITE_BYTES) * WRITE_BYTES
        mirror.write(offset, data)
        n += 1
        time.sleep(max(0.0, start + n * WRITE_BYTES / rate - time.monotonic()))


def measure(fraction, copy_mode, seed):
    """Mirror the real file; returns seconds to READY and bytes copied until then."""
    target = Path(workdir.name) / f"target-{copy_mode}-{fraction}.img"
    rate = int(fraction * SPEED_BYTES_PER_SEC)
    stop = threading.Event()
    with bm.Mirror(source, target, granularity=GRANULARITY_BYTES, speed=SPEED_BYTES_PER_SEC,
                   copy_mode=copy_mode) as m:
        thread = threading.Thread(target=guest, args=(m, rate, stop, seed))
        thread.start()
        try:
            m.wait_ready(timeout=30)
        finally:
            stop.set()
            thread.join()
        # Cancel in ready: the target is a consistent copy; only the timing was wanted.
        result = m.cancel(timeout=30)
    ready = [e for e in result.events if e.type == "BLOCK_JOB_READY"][0]
    target.unlink()
    return ready.time_ns / NS_PER_S, ready.current


def predict(fraction, copy_mode, seed):
    sim = bm.Simulation(
        LENGTH_BYTES, granularity=GRANULARITY_BYTES, seed=seed, speed=SPEED_BYTES_PER_SEC,
        write_rate=int(fraction * SPEED_BYTES_PER_SEC), write_size=WRITE_BYTES,
        pattern="uniform", copy_mode=copy_mode,
    )
    sim.run_until("ready")
    ready = [e for e in sim.events if e.type == "BLOCK_JOB_READY"][0]
    return sim.now_ns / NS_PER_S, ready.current

rows = []
for copy_mode in COPY_MODES:
    for fraction in FRACTIONS:
        real_s, real_copied = measure(fraction, copy_mode, seed=7)
        sim_s, sim_copied = predict(fraction, copy_mode, seed=7)
        rows.append(dict(copy_mode=copy_mode, fraction=fraction, real_s=real_s, sim_s=sim_s,
                         real_copied=real_copied, sim_copied=sim_copied))
        print(f"{copy_mode:15} writes {fraction:4.2f} x speed: READY real {real_s:5.2f} s, "
              f"simulated {sim_s:5.2f} s; copied real {real_copied / MIB:6.1f} MiB, "
              f"simulated {sim_copied / MIB:6.1f} MiB")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
width = 0.35
labels = [f"{r['copy_mode']}\n{r['fraction']:.2f}" for r in rows]
x = np.arange(len(rows))
axes[0].bar(x - width / 2, [r["real_s"] for r in rows], width, label="real files")
axes[0].bar(x + width / 2, [r["sim_s"] for r in rows], width, label="simulator")
axes[0].set_ylabel("time to READY (s)")
axes[1].bar(x - width / 2, [r["real_copied"] / MIB for r in rows], width, label="real files")
axes[1].bar(x + width / 2, [r["sim_copied"] / MIB for r in rows], width, label="simulator")
axes[1].set_ylabel("bytes copied until READY (MiB)")
for ax in axes:
    ax.set_xticks(x, labels, fontsize="small")
    ax.set_xlabel("copy mode / guest write rate (fraction of the speed limit)")
    ax.legend()
plt.show()

# %%
errors = [abs(r["real_s"] - r["sim_s"]) / r["sim_s"] for r in rows]
worst = rows[int(np.argmax(errors))]
print(
    f"Answer: across {len(rows)} runs on a {LENGTH_BYTES // MIB} MiB file at "
    f"{SPEED_BYTES_PER_SEC // MIB} MiB/s, the simulator predicted the real time to READY within "
    f"{100 * np.median(errors):.0f} % (median) and {100 * max(errors):.0f} % at worst "
    f"({worst['copy_mode']}, writes at {worst['fraction']:.2f} x the speed limit: "
    f"{worst['real_s']:.2f} s real vs {worst['sim_s']:.2f} s simulated)."
)
workdir.cleanup()
