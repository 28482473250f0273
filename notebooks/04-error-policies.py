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
# # Error policies: what happens when the target runs out of space mid-copy?
#
# Halfway through a migration the target's storage reports "no space left"; what the job
# does next depends on its `on_target_error` policy. This notebook injects that fault into
# the simulator under each policy (report, ignore, stop, enospc) in two forms: a one-off
# error (the next write succeeds), and a target that *stays* full for two seconds, until an
# administrator grows the volume. It draws the timeline of statuses and events, and shows
# what the operator does next in each case.

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 64 * MIB
GRANULARITY_BYTES = 64 * 1024
COPY_BYTES_PER_SEC = 32 * MIB  # the plain copy takes 2 s
FAULT_AT_OP = 32  # one-off: the 32nd target write fails, about half of the 64 copies of 1 MiB
FULL_FROM_S, FULL_UNTIL_S = 1.0, 3.0  # stays full: every target write fails in this span
DURATION_S = 7
OPERATOR_DELAY_S = 1.0  # how long the operator takes to react to a pause
POLICIES = ["report", "ignore", "stop", "enospc"]
FAULTS = {
    "one-off": lambda error: [dict(side="target", op=FAULT_AT_OP, error=error)],
    "stays full": lambda error: [dict(side="target", rate=1.0, error=error,
                                      from_ns=int(FULL_FROM_S * NS_PER_S),
                                      until_ns=int(FULL_UNTIL_S * NS_PER_S))],
}


def simulate(policy, fault, error="nospace"):
    """One run; the operator resumes a paused job after OPERATOR_DELAY_S and completes a
    ready one. A resume while the target is still full meets the next error."""
    sim = bm.Simulation(
        LENGTH_BYTES,
        granularity=GRANULARITY_BYTES,
        seed=4,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=1 * MIB,
        write_size=4096,
        pattern="uniform",
        on_target_error=policy,
        faults=FAULTS[fault](error),
    )
    actions = []
    paused_at = {}

    def operator(sim, t_s):
        status = sim.job.status
        if status in ("paused", "standby"):
            paused_at.setdefault("t", t_s)
            if t_s >= paused_at["t"] + OPERATOR_DELAY_S:
                sim.job.resume()
                actions.append((t_s, "resume()"))
                paused_at.clear()
        elif status == "ready":
            sim.job.complete()
            actions.append((t_s, "complete()"))

    trace = plots.trace_simulation(
        sim, duration_ns=DURATION_S * NS_PER_S, samples=350, on_sample=operator,
        stop_when=lambda s: s.job.status == "concluded",
    )
    return sim, trace, actions


runs = {(policy, fault): simulate(policy, fault) for fault in FAULTS for policy in POLICIES}
runs[("enospc", "one-off io error")] = simulate("enospc", "one-off", error="io")

# %% [markdown]
# Timelines: the coloured band is the job's status (legend below), the ticks above it are
# the events (errors, READY, COMPLETED), in virtual seconds. A COMPLETED that carries an
# error is the job's failure, drawn in red. In the right column the grey span is the time
# the target is full: a write issued then fails when the device gets to it, behind the
# copies already queued there, so the errors start about half a second into the span.

# %%
def draw(ax, name, sim, trace, actions):
    plots.plot_status_timeline(trace, ax=ax, title=f"on_target_error={name[0]}, {name[1]}")
    for t_s, e in trace.events:
        if e.type == "BLOCK_JOB_COMPLETED" and e.error is not None:
            ax.axvline(t_s, ymin=0.5, ymax=0.95, color="#D55E00", linewidth=2.5)
            ax.text(t_s, 0.62, f" FAILED: error={e.error}", color="#D55E00", fontsize="small",
                    fontweight="bold", transform=ax.get_xaxis_transform())
    if name[1] == "stays full":
        ax.axvspan(FULL_FROM_S, FULL_UNTIL_S, ymin=0.5, ymax=1.0, color="#999999", alpha=0.25,
                   linewidth=0)
    for t_s, what in actions:
        ax.annotate(what, (t_s, 0.55), xycoords=("data", "axes fraction"),
                    fontsize="x-small", color="darkred", ha="right")
    ax.set_xlim(0, DURATION_S)


fig, axes = plt.subplots(len(POLICIES) + 1, 2, figsize=(12, 1.55 * (len(POLICIES) + 1)),
                         sharex=True, layout="constrained")
for row, policy in enumerate(POLICIES):
    for column, fault in enumerate(FAULTS):
        draw(axes[row][column], (policy, fault), *runs[(policy, fault)])
draw(axes[-1][0], ("enospc", "one-off io error"), *runs[("enospc", "one-off io error")])
legend_ax = axes[-1][1]
legend_ax.set_xticks([])  # a panel for the legend only
legend_ax.set_yticks([])
for spine in legend_ax.spines.values():
    spine.set_visible(False)
seen = {status for _, trace, _ in runs.values() for status in trace.statuses}
legend_ax.legend(handles=[Patch(color=colour, label=status)
                          for status, colour in plots._STATUS_COLOURS.items() if status in seen]
                 + [Patch(color="#999999", alpha=0.25, label="target full")],
                 title="job status (bands)", loc="center", ncol=3, fontsize="small")
for ax in axes.flat:
    ax.set_xlabel("")
for ax in (axes[-1][0], axes[-2][1]):
    ax.tick_params(labelbottom=True)
    ax.set_xlabel("virtual time (s)")
plt.show()

# %% [markdown]
# The events each run produced (status changes omitted), and how each one ended.

# %%
def outcome(sim, trace):
    completed = [e for _, e in trace.events if e.type == "BLOCK_JOB_COMPLETED"]
    errors = [(t, e) for t, e in trace.events if e.type == "BLOCK_JOB_ERROR"]
    failed = bool(completed) and completed[-1].error is not None
    pauses = [t for t, e in trace.events
              if e.type == "JOB_STATUS_CHANGE" and getattr(e, "status", None) == "paused"]
    return dict(
        errors=len(errors),
        first_error=errors[0][0] if errors else None,
        error_actions=sorted({e.action for _, e in errors}),
        ready=trace.first_time_s("ready"),
        pauses=pauses,
        concluded=trace.first_time_s("concluded"),
        failed=failed,
        failure=completed[-1].error if failed else None,
        # At COMPLETED without error: did the target equal the source at the switch?
        consistent=sim.result()["equal_at_end"],
    )

summary = {}
for name, (sim, trace, actions) in runs.items():
    summary[name] = o = outcome(sim, trace)
    lines = [
        (t_s, f"{e.type} " + ", ".join(f"{k}={v}" for k, v in e.as_dict().items()
                                       if k not in ("type", "time_ns")))
        for t_s, e in trace.events if e.type != "JOB_STATUS_CHANGE"
    ]
    lines += [(t_s, f"operator: {what}") for t_s, what in actions]
    lines.sort(key=lambda item: item[0])
    print(f"--- {name[0]}, {name[1]}: {o['errors']} error event(s)")
    shown = lines if len(lines) <= 8 else lines[:4] + [(None, "...")] + lines[-3:]
    for t_s, line in shown:
        print(f"  {'':8}  {line}" if t_s is None else f"  {t_s:6.3f} s  {line}")

# %% [markdown]
# **Why the pause comes half a second after the error.** `stop` (and `enospc` on "no
# space") first stops issuing new copies and lets the ones already in flight finish; only
# then is the job `paused`, so that nothing is left half-done while the operator looks.
# Those copies fill up to `buf_size` (16 MiB by default) and drain at the target's
# bandwidth, so the wait is at most `buf_size / bandwidth`. `report` waits the same way
# before it concludes.

# %%
most_in_flight_s = bm.DEFAULTS["buf_size"] / COPY_BYTES_PER_SEC
for name, o in summary.items():
    end = o["pauses"][0] if o["pauses"] else (o["concluded"] if o["failed"] else None)
    if end is not None and o["first_error"] is not None:
        print(f"{name[0]:7} {name[1]:17}: error at {o['first_error']:.3f} s, "
              f"{'paused' if o['pauses'] else 'failed'} at {end:.3f} s: {end - o['first_error']:.3f} s later "
              f"(at most buf_size / bandwidth = {most_in_flight_s:.3f} s)")

# %% [markdown]
# What the operator does next, read from each outcome: a `report` failure ends the job (the
# target is not usable; fix the space and start a new mirror); `ignore` retries by itself,
# over and over while the target stays full (the job backs off between rounds);
# `stop` and `enospc` pause and wait for `resume()`, and a resume before the space is back
# pauses again at the next write; `enospc` still fails at once on an error that is not
# "no space".

# %%
def next_step(o):
    if o["failed"] and o["failure"] == "nospace":
        return "FAILED with error=nospace: free space on the target, then start a new mirror"
    if o["failed"]:
        return (f"FAILED at once with error={o['failure']} (not a space problem): check or "
                f"replace the target, then start a new mirror")
    if o["pauses"]:
        return (f"paused {len(o['pauses'])} time(s) (first at {o['pauses'][0]:.2f} s); the "
                f"operator resumed each time and the job was ready at {o['ready']:.2f} s")
    if o["ready"] is not None:
        return (f"kept going through {o['errors']} error event(s) (action {o['error_actions']}) "
                f"and was ready at {o['ready']:.2f} s with no operator action")
    return "did not finish within the simulated time"

print("Answer: when the target reports no space mid-copy,")
for name, o in summary.items():
    ends = ("target equal to the source at the switch" if o["consistent"]
            else "the target is not a usable copy")
    print(f"  - {name[0]}, {name[1]}: {next_step(o)} ({ends}).")
