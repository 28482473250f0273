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
LENGTH_BYTES = 80 * MIB
GRANULARITY_BYTES = 64 * 1024
SPEED_BYTES_PER_SEC = 32 * MIB  # the speed limit sets the copy rate on both sides: 2.5 s
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
    """Mirror the real file; returns seconds to READY, bytes copied until then, and bytes
    the guest wrote (until it was stopped, just after READY)."""
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
    return ready.time_ns / NS_PER_S, ready.current, result.guest_bytes_written


def predict(fraction, copy_mode, seed):
    sim = bm.Simulation(
        LENGTH_BYTES, granularity=GRANULARITY_BYTES, seed=seed, speed=SPEED_BYTES_PER_SEC,
        write_rate=int(fraction * SPEED_BYTES_PER_SEC), write_size=WRITE_BYTES,
        write_align=WRITE_BYTES, pattern="uniform", copy_mode=copy_mode,
    )
    outcome = sim.run_until("ready")
    assert outcome == "reached", outcome
    ready = [e for e in sim.events if e.type == "BLOCK_JOB_READY"][0]
    return ready.time_ns / NS_PER_S, ready.current, sim.result()["guest_bytes_written"]

rows = []
for copy_mode in COPY_MODES:
    for fraction in FRACTIONS:
        real_s, real_copied, real_guest = measure(fraction, copy_mode, seed=7)
        sim_s, sim_copied, sim_guest = predict(fraction, copy_mode, seed=7)
        rows.append(dict(copy_mode=copy_mode, fraction=fraction, real_s=real_s, sim_s=sim_s,
                         real_copied=real_copied, sim_copied=sim_copied))
        print(f"{copy_mode:15} writes {fraction:4.2f} x speed: READY real {real_s:5.2f} s, "
              f"simulated {sim_s:5.2f} s; copied real {real_copied / MIB:5.1f} MiB, "
              f"simulated {sim_copied / MIB:5.1f} MiB; guest wrote real "
              f"{real_guest / MIB:5.1f} MiB, simulated {sim_guest / MIB:5.1f} MiB")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
width = 0.35
labels = [f"{'bg' if r['copy_mode'] == 'background' else 'wb'} {r['fraction']:.2f}" for r in rows]
x = np.arange(len(rows))
axes[0].bar(x - width / 2, [r["real_s"] for r in rows], width, label="real files")
axes[0].bar(x + width / 2, [r["sim_s"] for r in rows], width, label="simulator")
axes[0].set_ylabel("time to READY (s)")
axes[1].bar(x - width / 2, [r["real_copied"] / MIB for r in rows], width, label="real files")
axes[1].bar(x + width / 2, [r["sim_copied"] / MIB for r in rows], width, label="simulator")
axes[1].set_ylabel("bytes copied until READY (MiB)")
for ax in axes:
    ax.set_xticks(x, labels, fontsize="small")
    ax.set_xlabel("copy mode (bg: background, wb: write-blocking), guest writes / speed limit")
    ax.legend()
plt.show()

# %% [markdown]
# Two parts of the difference: a fixed cost (the run without guest writes), and the time the
# guest's writes add on top of it, real against simulated.

# %%
base = {r["copy_mode"]: r for r in rows if r["fraction"] == 0}
fixed_s = {mode: b["real_s"] - b["sim_s"] for mode, b in base.items()}
added = [
    (r, (r["real_s"] - base[r["copy_mode"]]["real_s"]), (r["sim_s"] - base[r["copy_mode"]]["sim_s"]))
    for r in rows if r["fraction"] > 0
]
for r, real_added, sim_added in added:
    print(f"{r['copy_mode']:15} {r['fraction']:.2f}: writes added {real_added:+.2f} s real, "
          f"{sim_added:+.2f} s simulated")
errors = [abs(r["real_s"] - r["sim_s"]) / r["sim_s"] for r in rows]
worst = rows[int(np.argmax(errors))]
worst_added = max(abs(a - b) for _, a, b in added)
copied_error = max(abs(r["real_copied"] - r["sim_copied"]) / r["sim_copied"] for r in rows)

# %%
print(
    f"Answer: across {len(rows)} runs on a {LENGTH_BYTES // MIB} MiB file at "
    f"{SPEED_BYTES_PER_SEC // MIB} MiB/s, the simulator predicted the real time to READY within "
    f"{100 * np.median(errors):.0f} % (median) and {100 * max(errors):.0f} % at worst "
    f"({worst['copy_mode']}, writes at {worst['fraction']:.2f} x the speed limit: "
    f"{worst['real_s']:.2f} s real vs {worst['sim_s']:.2f} s simulated), and the bytes copied "
    f"within {100 * copied_error:.0f} %. Without guest writes the real mirror needed "
    + " and ".join(f"{fixed_s[m]:+.2f} s ({m})" for m in COPY_MODES)
    + f" more than the simulation (costs the simulator does not model, such as thread "
    f"start-up and the target flush); the time the guest's writes added was predicted within "
    f"{worst_added:.2f} s."
)
workdir.cleanup()
