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
# # Explorer: watch the dirty bitmap while you turn the knobs
#
# What does a mirror job look like from the inside when the guest writes faster, in a
# different pattern, or when the target fails? Move the sliders and toggles: each change
# re-runs a short deterministic simulation and redraws the state of every chunk over time
# and the progress and dirty-byte curves. (Headless, it runs once with the defaults.)

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 32 * MIB
DURATION_S = 4
DEFAULTS = dict(
    write_fraction=0.05,
    pattern="hot-spot",
    speed_mib_s=16,
    granularity_kib=64,
    copy_mode="background",
    fault=False,
)
# The teaching page's colour-blind-safe palette (Okabe-Ito), state by state: the page's
# "dirty" for chunks waiting for their first copy, its "clean" for chunks in sync, the
# guest's colour for chunks dirtied again, its "writing" for chunks being copied.
PAGE_COLOURS = {"not yet copied": "#e69f00", "in sync": "#e9e9ee", "re-dirtied": "#cc79a7",
                "copying": "#0072b2", "failed": "#1b1b1b"}


def simulate(write_fraction, pattern, speed_mib_s, granularity_kib, copy_mode, fault):
    """A short run: the guest writes 4 KiB blocks at `write_fraction` x the copy speed."""
    speed = speed_mib_s * MIB
    sim = bm.Simulation(
        LENGTH_BYTES,
        granularity=granularity_kib * 1024,
        max_io=max(1 * MIB, granularity_kib * 1024),  # a copy holds at least one chunk
        seed=6,
        speed=speed,
        write_rate=int(write_fraction * speed),
        write_size=4096,
        pattern=pattern,
        copy_mode=copy_mode,
        on_target_error="ignore",
        faults=[dict(side="target", rate=0.05, error="io")] if fault else [],
    )
    trace = plots.trace_simulation(sim, duration_ns=DURATION_S * NS_PER_S, samples=120)
    return trace, sim


def guest_cost(sim, write_fraction, speed_mib_s):
    """What the mirror cost the guest: its achieved write rate against the one it asked for."""
    result = sim.result()
    asked = write_fraction * speed_mib_s
    achieved = result["guest_bytes_written"] / MIB * NS_PER_S / max(result["time_ns"], 1)
    return asked, achieved


def render(**settings):
    trace, sim = simulate(**settings)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), layout="constrained",
                                      height_ratios=(3, 2))
    plots.plot_chunk_states(trace, ax=top)
    palette = ListedColormap([PAGE_COLOURS[name] for name in plots.CHUNK_STATE_NAMES])
    for artist in [*top.images, *top.collections]:
        artist.set_cmap(palette)
    top.legend(handles=[Patch(color=PAGE_COLOURS[n], label=n) for n in plots.CHUNK_STATE_NAMES],
               loc="upper right", fontsize="small", ncol=len(PAGE_COLOURS))
    plots.plot_progress(trace, ax=bottom)
    asked, achieved = guest_cost(sim, settings["write_fraction"], settings["speed_mib_s"])
    share = f"{achieved / asked:.0%}" if asked > 0 else "-"
    fig.suptitle(f"guest writes: asked {asked:.2f} MiB/s, achieved {achieved:.2f} MiB/s "
                 f"({share}) - the price of {settings['copy_mode']}", fontsize="medium")
    plt.show()
    return trace, sim

# %% [markdown]
# The default picture, in the teaching page's colours. Orange chunks still wait for their
# first copy, light grey ones are in sync, purple ones were in sync once and have been
# dirtied again by the guest, blue ones are being copied (or written through by the guest),
# black ones failed their last I/O. The title line is the guest's cost: the write rate it
# achieved against the one it asked for (write-blocking makes its writes wait).

# %%
default_trace, default_sim = render(**DEFAULTS)

# %% [markdown]
# The controls. In a live notebook, releasing a slider (or pressing a button) redraws the
# picture below them; a slider does not rerun the simulation on every step of a drag.

# %%
controls = dict(
    write_fraction=widgets.FloatLogSlider(value=DEFAULTS["write_fraction"], base=10, min=-3,
                                          max=0.3, step=0.1, continuous_update=False,
                                          description="writes / speed"),
    pattern=widgets.ToggleButtons(options=["uniform", "hot-spot", "sequential"],
                                  value=DEFAULTS["pattern"], description="pattern"),
    speed_mib_s=widgets.IntSlider(value=DEFAULTS["speed_mib_s"], min=4, max=128, step=4,
                                  continuous_update=False, description="speed MiB/s"),
    granularity_kib=widgets.SelectionSlider(options=[4, 16, 64, 256, 1024, 4096],
                                            value=DEFAULTS["granularity_kib"],
                                            continuous_update=False, description="chunk KiB"),
    copy_mode=widgets.ToggleButtons(options=["background", "write-blocking"],
                                    value=DEFAULTS["copy_mode"], description="copy mode"),
    fault=widgets.Checkbox(value=DEFAULTS["fault"], description="target I/O errors (5 %)"),
)
output = widgets.Output()


def redraw(_change=None):
    with output:
        output.clear_output(wait=True)
        render(**{name: w.value for name, w in controls.items()})


for w in controls.values():
    w.observe(redraw, names="value")
display(widgets.VBox(list(controls.values())), output)

# %% [markdown]
# One comparison to read the picture by: the same run with the guest writing four times as
# fast.

# %%
def summary(trace):
    ready_s = trace.first_time_s("ready")
    # The most chunks that were dirty again, after having been in sync, at one moment.
    redirtied = int((trace.chunk_states == plots.CHUNK_STATE_NAMES.index("re-dirtied")).sum(axis=1).max())
    when = f"ready after {ready_s:.2f} s" if ready_s is not None else f"not ready in {DURATION_S} s"
    return when, redirtied

faster_settings = {**DEFAULTS, "write_fraction": 4 * DEFAULTS["write_fraction"]}
(base_when, base_redirtied) = summary(default_trace)
fast_trace, fast_sim = simulate(**faster_settings)
(fast_when, fast_redirtied) = summary(fast_trace)
print(
    f"Answer (defaults): with the guest writing {DEFAULTS['pattern']} at "
    f"{DEFAULTS['write_fraction']:.0%} of the {DEFAULTS['speed_mib_s']} MiB/s copy speed, "
    f"the {DEFAULTS['copy_mode']} job was {base_when}, with at most {base_redirtied} chunks "
    f"dirty again at once (purple). At {faster_settings['write_fraction']:.0%} it was "
    f"{fast_when}, with up to {fast_redirtied}: the purple area is the re-copy work the "
    f"guest's writes cause, and it grows with the write rate. The guest got "
    f"{guest_cost(default_sim, DEFAULTS['write_fraction'], DEFAULTS['speed_mib_s'])[1]:.2f} and "
    f"{guest_cost(fast_sim, faster_settings['write_fraction'], DEFAULTS['speed_mib_s'])[1]:.2f} "
    f"MiB/s of writes through."
    if fast_redirtied > base_redirtied else
    f"Answer (defaults): the {DEFAULTS['copy_mode']} job was {base_when} "
    f"(at most {base_redirtied} chunks dirty again at once); at four times the write rate it "
    f"was {fast_when} ({fast_redirtied}): in these settings the write rate barely matters."
)
