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
# # Convergence: how fast may the guest write before the mirror never gets ready?
#
# An operator planning a live migration asks how long the copy takes while the guest keeps
# writing, and from which write rate a background mirror stops converging (the knee). This
# notebook sweeps the guest write rate, as a fraction of the target's bandwidth, for three
# strategies (background, write-blocking, and background that switches to write-blocking on
# `BLOCK_JOB_NOT_CONVERGING`) and two workloads (uniform random, hot-spot), with several
# seeds per point, and measures the time to `BLOCK_JOB_READY` in the deterministic
# simulator. Every curve carries a 95 % confidence interval over the seeds, and every
# conclusion printed at the end is computed from the runs, with its uncertainty.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import blockmirror as bm

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 64 * MIB
GRANULARITY_BYTES = 64 * 1024
COPY_BYTES_PER_SEC = 16 * MIB  # the target's bandwidth: a full copy takes 4 s
WRITE_BYTES = 4096  # the guest's writes: small random writes, like a database
TIME_LIMIT_S = 20  # a run that is not ready after 5x the plain copy time counts as "never"
# guest bytes/s / target bytes/s: dense around the knee the model predicts (0.0625)
FRACTIONS = sorted({0.01, 0.02, 0.035, *np.round(np.geomspace(0.05, 0.085, 6), 4), 0.16, 0.4, 1.0})
PATTERNS = ["uniform", "hot-spot"]  # hot-spot: 90 % of writes go to 10 % of the disk
NOT_CONVERGING_WINDOW_S = 2  # "switch": the window of BLOCK_JOB_NOT_CONVERGING
STRATEGIES = {
    "background": dict(copy_mode="background"),
    "write-blocking": dict(copy_mode="write-blocking"),
    "switch": dict(copy_mode="background", auto_converge=True,
                   not_converging_window_ns=NOT_CONVERGING_WINDOW_S * NS_PER_S),
}
# Colour-blind-safe (Okabe-Ito), with line styles and markers that tell them apart in grey too.
COLOURS = {"background": "#0072B2", "write-blocking": "#D55E00", "switch": "#009E73"}
LINES = {"background": "-", "write-blocking": "--", "switch": "-."}
MARKERS = {"background": "o", "write-blocking": "s", "switch": "^"}
SEEDS = list(range(1, 9))

grid = [
    dict(
        length=LENGTH_BYTES,
        granularity=GRANULARITY_BYTES,
        seed=seed,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=int(fraction * COPY_BYTES_PER_SEC),
        write_size=WRITE_BYTES,
        pattern=pattern,
        **STRATEGIES[strategy],
        until="ready",
        time_limit_ns=TIME_LIMIT_S * NS_PER_S,
    )
    for fraction in FRACTIONS
    for pattern in PATTERNS
    for strategy in STRATEGIES
    for seed in SEEDS
]
print(f"{len(grid)} simulations: {len(FRACTIONS)} rates x {len(PATTERNS)} patterns x "
      f"{len(STRATEGIES)} strategies x {len(SEEDS)} seeds")

# %% [markdown]
# Run the whole grid with `blockmirror.sweep`, which runs the simulations in parallel
# (rayon, with the GIL released). The grid must finish in under 30 s on 2 cores.
#
# A background run ends as "not ready" when the job reports `BLOCK_JOB_NOT_CONVERGING`
# (the simulator's default: in background mode nothing would change the rates after it).
# The detector is the job's own; the last section shows what it decides and how early.

# %%
started, started_cpu = time.perf_counter(), time.process_time()
results = bm.sweep(grid)
sweep_s, sweep_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
threads = os.environ.get("RAYON_NUM_THREADS", "all")  # sweep's thread pool follows it
print(f"sweep: {len(results)} simulations in {sweep_s:.2f} s wall time, {sweep_cpu_s:.2f} s CPU "
      f"({threads} threads, {os.cpu_count()} cores)")
assert len(results) == len(grid)
assert sweep_s < 30, f"the grid took {sweep_s:.1f} s, the budget is 30 s"

# %% [markdown]
# ## Statistics over the seeds
#
# For each (pattern, strategy, rate): the share of seeds that got ready within the time
# limit, with a Wilson 95 % interval (a binomial proportion from 8 runs); and, over the seeds
# that got ready, the mean time to READY, the bytes copied and the guest's achieved write
# rate, each with a bootstrap 95 % interval of the mean.

# %%
RNG = np.random.default_rng(0)
Z95 = 1.96

def wilson(k, n):
    """95 % Wilson interval of a proportion k/n."""
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)

def mean_ci(values, resamples=2000):
    """(mean, low, high): the bootstrap 95 % percentile interval of the mean; None if empty."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None
    means = RNG.choice(values, size=(resamples, len(values))).mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))

def strategy_of(result):
    """Which entry of STRATEGIES a result row ran (rows carry their parameters)."""
    return "switch" if result.get("auto_converge") else result["copy_mode"]

def guest_share(r):
    """The guest's achieved write rate until the run ended, over the rate it asked for."""
    return r["guest_bytes_written"] * NS_PER_S / r["time_ns"] / r["write_rate"]

runs = {}
for r in results:
    key = (r["pattern"], strategy_of(r), r["write_rate"] / COPY_BYTES_PER_SEC)
    runs.setdefault(key, []).append(r)

rows = []
for (pattern, strategy, fraction), members in sorted(runs.items()):
    assert len(members) == len(SEEDS)
    ready = [r for r in members if r["time_to_ready_ns"] is not None]
    rows.append(dict(
        pattern=pattern, strategy=strategy, fraction=fraction,
        ready=[r["time_to_ready_ns"] is not None for r in members],
        p_ready=len(ready) / len(members), p_ci=wilson(len(ready), len(members)),
        time_s=mean_ci([r["time_to_ready_ns"] / NS_PER_S for r in ready]),
        copied_x_disk=mean_ci([r["bytes_copied"] / LENGTH_BYTES for r in ready]),
        share=mean_ci([guest_share(r) for r in ready]),
        writes=[r["guest_writes"] for r in ready],
    ))

def series(pattern, strategy):
    return [r for r in rows if r["pattern"] == pattern and r["strategy"] == strategy]

def draw(ax, pattern, key, scale=1.0, offset=True):
    """One curve per strategy with its 95 % error bars, slightly shifted apart along x."""
    for i, strategy in enumerate(STRATEGIES):
        points = [r for r in series(pattern, strategy) if r[key] is not None]
        shift = 1.0 + (0.03 * (i - 1) if offset else 0.0)
        x = [r["fraction"] * shift for r in points]
        style = dict(marker=MARKERS[strategy], markersize=3, linewidth=1,
                     linestyle=LINES[strategy], color=COLOURS[strategy], label=strategy)
        if key == "p_ready":
            # A band: the Wilson intervals of 8 runs are wide, and bars would hide each other.
            y = scale * np.array([r["p_ready"] for r in points])
            lo, hi = scale * np.array([r["p_ci"] for r in points]).T
            ax.plot(x, y, **style)
            ax.fill_between(x, lo, hi, color=COLOURS[strategy], alpha=0.12, linewidth=0)
            continue
        y, lo, hi = (scale * np.array([r[key][j] for r in points]) for j in range(3))
        ax.errorbar(x, y, yerr=[y - lo, hi - y], capsize=2, **style)
    ax.set_xscale("log")
    ax.set_xlabel("guest write rate / target bandwidth (log scale)")
    ax.axvline(WRITE_BYTES / GRANULARITY_BYTES, color="grey", linestyle="--", linewidth=1)

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, layout="constrained")
for column, pattern in enumerate(PATTERNS):
    ax = axes[0][column]
    draw(ax, pattern, "p_ready", scale=100)
    ax.set_ylabel(f"runs READY within {TIME_LIMIT_S} s (%, band: 95 % CI)")
    ax.set_title(f"{pattern}: {WRITE_BYTES // 1024} KiB writes, {GRANULARITY_BYTES // 1024} KiB chunks")
    ax.text(WRITE_BYTES / GRANULARITY_BYTES, 0.5, " model knee", color="grey",
            fontsize="small", transform=ax.get_xaxis_transform())
    ax.legend(loc="lower left", fontsize="small")
    ax = axes[1][column]
    draw(ax, pattern, "time_s")
    ax.axhline(LENGTH_BYTES / COPY_BYTES_PER_SEC, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel("time to READY (s, virtual; ready runs)")
    ax.set_title(f"{pattern}: mean time to READY, 95 % CI")
plt.show()

# %% [markdown]
# The price of converging. Top: bytes the job wrote to the target until READY, as a multiple
# of the disk size. Bottom: the write rate the guest actually achieved until READY, as a
# share of the rate it asked for. In write-blocking mode a guest write to a chunk that is
# already in sync waits for the target, behind the copies queued there: the guest slows down.
#
# **Why a share above 100 %?** The simulated guest is a Poisson process: its writes arrive
# at exponentially distributed intervals whose mean gives the requested rate. Over a run of
# a few seconds it issues only a few hundred writes at the lowest rates, so the rate it
# achieves scatters around the request by about one over the square root of that count (the
# next cell measures it). Background mode never slows the guest, so its share is that noise
# around 100 %; a share clearly *below* it is the cost of write-blocking.

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, layout="constrained")
for column, pattern in enumerate(PATTERNS):
    draw(axes[0][column], pattern, "copied_x_disk")
    axes[0][column].set_ylabel("bytes copied until READY (x disk size)")
    axes[0][column].set_title(f"{pattern}: copy volume until READY, 95 % CI")
    draw(axes[1][column], pattern, "share", scale=100)
    axes[1][column].axhline(100, color="grey", linestyle=":", linewidth=1)
    axes[1][column].set_ylabel("guest writes achieved / requested (%)")
    axes[1][column].set_title(f"{pattern}: guest write rate until READY, 95 % CI")
    axes[1][column].legend(loc="lower left", fontsize="small")
plt.show()

# %%
# Background mode does not slow the guest: its share above 100 % should be Poisson noise.
background_runs = [r for r in results if strategy_of(r) == "background"
                   and r["time_to_ready_ns"] is not None]
z_scores = [(guest_share(r) - 1) * np.sqrt(r["guest_writes"]) for r in background_runs]
top = max(background_runs, key=guest_share)
print(f"background runs that got ready: {len(background_runs)}; guest share "
      f"{min(map(guest_share, background_runs)):.1%} .. {guest_share(top):.1%}; the highest "
      f"issued {top['guest_writes']} writes, Poisson spread 1/sqrt(n) = {1 / np.sqrt(top['guest_writes']):.1%}")
print(f"(share - 1) * sqrt(writes): mean {np.mean(z_scores):+.2f}, standard deviation "
      f"{np.std(z_scores):.2f} (Poisson noise alone: 0 and about 1)")

# %% [markdown]
# ## The knee, from the data
#
# The knee is where a strategy stops getting ready: here, the write rate at which the share
# of ready runs falls through 50 %. P(ready) is first made non-increasing in the rate (an
# isotonic fit, so that a single unlucky seed at one rate does not end the curve), then
# interpolated on the log scale. Its uncertainty comes from resampling the seeds at every
# rate (bootstrap, 1000 times). A simple model predicts the uniform background knee: each
# 4 KiB write dirties a whole 64 KiB chunk, so near the end of the copy the guest dirties
# `chunk/write` = 16 times the bytes it writes; the job keeps up only while that stays
# below the target's bandwidth (the dashed line).

# %%
def isotonic_decreasing(p):
    """Pool adjacent violators: the closest non-increasing sequence (least squares)."""
    blocks = []  # [mean, weight]
    for value in p:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return [m for m, w in blocks for _ in range(w)]

def crossing(fractions, p):
    """Where the isotonic fit of p falls below 0.5 (log-interpolated); inf if it never does,
    0 if it starts below."""
    fit = isotonic_decreasing(p)
    for i, value in enumerate(fit):
        if value < 0.5:
            if i == 0:
                return 0.0
            x0, x1, y0, y1 = np.log(fractions[i - 1]), np.log(fractions[i]), fit[i - 1], value
            return float(np.exp(x0 + (y0 - 0.5) / (y0 - y1) * (x1 - x0)))
    return float("inf")

def knee(pattern, strategy, resamples=1000):
    """(estimate, low, high, bootstrap estimates) of the 50 % crossing; inf: beyond the grid.
    The interval is the bootstrap's, widened to the grid rates around the estimate: between
    two rates of the grid the data cannot place the knee more precisely."""
    points = series(pattern, strategy)
    fractions = [r["fraction"] for r in points]
    ready = np.array([r["ready"] for r in points], dtype=float)  # rates x seeds
    estimate = crossing(fractions, ready.mean(axis=1))
    picks = RNG.integers(0, ready.shape[1], size=(resamples, *ready.shape))
    boots = [crossing(fractions, np.take_along_axis(ready, pick, axis=1).mean(axis=1))
             for pick in picks]
    ordered = sorted(boots)  # percentiles by rank: inf (beyond the grid) sorts last
    low, high = ordered[int(0.025 * resamples)], ordered[int(0.975 * resamples) - 1]
    below = [f for f in fractions if f <= estimate]
    above = [f for f in fractions if f >= estimate]
    low = min(low, below[-1]) if below else low
    high = max(high, above[0]) if above else high
    return estimate, low, high, boots

def describe(k):
    estimate, low, high, _ = k
    if estimate == float("inf"):
        return (f"beyond the grid (no rate up to {FRACTIONS[-1]:.1f} had fewer than half "
                "of its runs ready)")
    high_text = f"{high:.3f}" if high != float("inf") else "beyond the grid"
    return f"at {estimate:.3f} (95 % interval {low:.3f} to {high_text})"

knees = {(p, s): knee(p, s) for p in PATTERNS for s in STRATEGIES}
model_knee = WRITE_BYTES / GRANULARITY_BYTES
for (pattern, strategy), k in knees.items():
    print(f"{pattern:9} {strategy:15} knee {describe(k)}")
print(f"model for uniform background: write/chunk = {model_knee:.4f}")

# %% [markdown]
# ## The detector, before and after
#
# `BLOCK_JOB_NOT_CONVERGING` used to fire only when the dirty bytes reached no new low for a
# whole window (10 s by default). A backlog in a noisy equilibrium, hovering at a few chunks
# and touching a new low now and then, never tripped it: with the hot-spot guest at 6.6 %
# of the bandwidth, seed 1 stays silent under that rule and gets ready only by chance,
# after about 30 s (7x the plain copy; the figure below).
# The job now also forecasts: when, over the last window, the guest newly dirtied at least
# half as many bytes as the job copied, and at that pace the remaining bytes would need more
# than one window to clear, it reports at once. Below, the same runs without stopping at the
# event (60 s limit, dirty bytes sampled every 10 ms): when the job reported, when the old
# rule alone would have (replayed on the samples), and when, if ever, the run got ready.

# %%
WINDOW_S = bm.DEFAULTS["not_converging_window_ns"] / NS_PER_S
DETECTOR_FRACTIONS = [0.05, 0.0656]

def stall_rule_s(samples, window_s):
    """The old rule replayed: the first time the dirty bytes had no new low for window_s."""
    low, low_at = None, 0.0
    for t_ns, dirty in zip(samples["time_ns"], samples["dirty_bytes"]):
        t = t_ns / NS_PER_S
        if low is None or dirty == 0 or dirty < low:
            low, low_at = dirty, t
        elif t - low_at >= window_s:
            return t
    return None

detector = []
for fraction in DETECTOR_FRACTIONS:
    for seed in SEEDS:
        sim = bm.Simulation(
            LENGTH_BYTES, granularity=GRANULARITY_BYTES, seed=seed, copy_rate=COPY_BYTES_PER_SEC,
            write_rate=int(fraction * COPY_BYTES_PER_SEC), write_size=WRITE_BYTES,
            pattern="hot-spot", copy_mode="background", time_limit_ns=60 * NS_PER_S,
            stop_at_not_converging=False, sample_interval_ns=10_000_000,
        )
        sim.run_until("ready")
        result = sim.result()
        s = sim.samples
        detector.append(dict(
            fraction=fraction, seed=seed,
            event_s=None if result["not_converging_at_ns"] is None else result["not_converging_at_ns"] / NS_PER_S,
            stall_s=stall_rule_s(s, WINDOW_S),
            ready_s=None if result["time_to_ready_ns"] is None else result["time_to_ready_ns"] / NS_PER_S,
            samples=s if (fraction, seed) == (0.0656, 1) else None,
        ))

# %%
fig, (ax, ax_runs) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained",
                                  gridspec_kw=dict(width_ratios=[1.3, 1]))
case = next(d for d in detector if d["samples"] is not None)
t = np.array(case["samples"]["time_ns"]) / NS_PER_S
ax.plot(t, np.array(case["samples"]["dirty_bytes"]) / MIB, linewidth=0.7, color="#555555")
for value, label, colour, style in [(case["event_s"], "NOT_CONVERGING now", "#009E73", "-"),
                                    (case["stall_s"], "old rule alone", "#0072B2", "--"),
                                    (case["ready_s"], "READY", "#D55E00", ":")]:
    if value is not None:
        ax.axvline(value, color=colour, linestyle=style, label=f"{label}: {value:.1f} s")
    else:
        ax.plot([], [], color=colour, linestyle=style, label=f"{label}: never within 60 s")
ax.set_yscale("symlog", linthresh=0.1)
ax.set_ylim(bottom=0)
ax.set_xlabel("virtual time (s)")
ax.set_ylabel("dirty bytes (MiB, log above 0.1)")
ax.set_title("hot-spot at 6.6 % of the bandwidth, seed 1, background")
ax.legend(fontsize="small")
for i, d in enumerate(detector):
    y = i + (1 if d["fraction"] != DETECTOR_FRACTIONS[0] else 0)
    for key, colour, marker in [("event_s", "#009E73", "o"), ("stall_s", "#0072B2", "s"),
                                ("ready_s", "#D55E00", "^")]:
        ax_runs.plot(d[key] if d[key] is not None else 61, y, marker, color=colour,
                     fillstyle="full" if d[key] is not None else "none")
for label, colour, marker in [("NOT_CONVERGING now", "#009E73", "o"),
                              ("old rule alone", "#0072B2", "s"), ("READY", "#D55E00", "^")]:
    ax_runs.plot([], [], marker, color=colour, label=label)
ax_runs.set_yticks(range(len(detector) + 1),
                   [f"{d['fraction']:.3f} s{d['seed']}" for d in detector[:len(SEEDS)]] + [""]
                   + [f"{d['fraction']:.4f} s{d['seed']}" for d in detector[len(SEEDS):]],
                   fontsize="x-small")
ax_runs.set_xlabel("virtual time (s); hollow at 61: never within 60 s")
ax_runs.set_ylabel("run (write fraction, seed)")
ax_runs.set_title("hot-spot runs: when each signal came")
ax_runs.legend(fontsize="x-small", loc="center", bbox_to_anchor=(0.72, 0.5))
plt.show()

reported = [d for d in detector if d["event_s"] is not None]
stalled = [d for d in detector if d["stall_s"] is not None]
later_ready = [d for d in reported if d["ready_s"] is not None and d["ready_s"] > d["event_s"]]
unreported_ready = [d["ready_s"] for d in detector if d["event_s"] is None and d["ready_s"] is not None]
for d in detector:
    print(f"{d['fraction']:.4f} seed {d['seed']}: reported {d['event_s']}, old rule {d['stall_s']}, "
          f"ready {d['ready_s']}")

# %%
uniform_knee, hot_knee = knees[("uniform", "background")], knees[("hot-spot", "background")]
ratios = np.array(hot_knee[3]) / np.array(uniform_knee[3])
ratio_low, ratio_high = np.percentile(ratios, [2.5, 97.5])
plain_s = LENGTH_BYTES / COPY_BYTES_PER_SEC

def always_ready(strategy):
    """Ready runs out of all, and the lowest Wilson lower bound over the rates."""
    points = [r for p in PATTERNS for r in series(p, strategy)]
    k = sum(sum(r["ready"]) for r in points)
    n = sum(len(r["ready"]) for r in points)
    return k, n, min(r["p_ci"][0] for r in points)

def share_at(pattern, strategy, fraction):
    return next(r["share"] for r in series(pattern, strategy) if r["fraction"] == fraction)

top = FRACTIONS[-1]
wb_k, wb_n, wb_low = always_ready("write-blocking")
sw_k, sw_n, sw_low = always_ready("switch")
wb_share, sw_share = share_at("uniform", "write-blocking", top), share_at("uniform", "switch", top)
fmt = lambda m: f"{m[0]:.0%} (95 % CI {m[1]:.0%}-{m[2]:.0%})"  # noqa: E731
if sw_share[1] > wb_share[2]:
    verdict = "switching costs the guest less than write-blocking from the start (the intervals do not overlap)"
elif sw_share[2] < wb_share[1]:
    verdict = "switching costs the guest more than write-blocking from the start"
else:
    verdict = "the two costs are not distinguishable with these seeds"
print(
    f"Answer: with {WRITE_BYTES // 1024} KiB guest writes and {GRANULARITY_BYTES // 1024} KiB "
    f"chunks, a background mirror stops getting ready (fewer than half of {len(SEEDS)} seeds "
    f"ready within {TIME_LIMIT_S} s) {describe(uniform_knee)} of the target's bandwidth for "
    f"uniform writes (the chunk/write model says {model_knee:.4f}), and hot-spot writes stop it "
    f"{describe(hot_knee)}: {np.median(ratios):.2f}x the uniform rate (95 % CI "
    f"{ratio_low:.2f}-{ratio_high:.2f}"
    + ("; the two are not distinguishable with these seeds" if ratio_low <= 1 <= ratio_high else "")
    + f"). Write-blocking got ready in {wb_k} of {wb_n} runs "
    f"(at every rate at least {wb_low:.0%} with 95 % confidence), switching on "
    f"BLOCK_JOB_NOT_CONVERGING in {sw_k} of {sw_n} (at least {sw_low:.0%}). At {top:.1f}x the "
    f"bandwidth the uniform guest kept {fmt(wb_share)} of its write rate under write-blocking "
    f"and {fmt(sw_share)} when switching: {verdict}. Of {len(detector)} hot-spot background runs "
    f"near the knee, the job now reported {len(reported)} as not converging, after "
    + (f"{min(d['event_s'] for d in reported):.1f}-{max(d['event_s'] for d in reported):.1f} s"
       if reported else "-")
    + f"; the old rule alone fired in {len(stalled)} of them within 60 s. "
    + (f"{len(later_ready)} of the reported runs got ready later by chance, after "
       f"{min(d['ready_s'] for d in later_ready):.0f}-{max(d['ready_s'] for d in later_ready):.0f} s "
       f"({min(d['ready_s'] for d in later_ready) / plain_s:.0f}-"
       f"{max(d['ready_s'] for d in later_ready) / plain_s:.0f}x the plain copy), "
       if later_ready else "")
    + f"while the unreported ones were ready after at most "
    f"{max(unreported_ready, default=float('nan')):.1f} s."
)
