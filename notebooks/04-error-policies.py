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
# the simulator under each policy (report, ignore, stop, enospc), draws the timeline of
# statuses and events, and shows what the operator does next in each case.

# %%
import matplotlib.pyplot as plt

import blockmirror as bm
from blockmirror import plots

MIB = 1 << 20
NS_PER_S = 1_000_000_000
LENGTH_BYTES = 64 * MIB
GRANULARITY_BYTES = 64 * 1024
COPY_BYTES_PER_SEC = 32 * MIB  # the plain copy takes 2 s
FAULT_AT_OP = 32  # the 32nd target write fails: about half of the 64 copies of 1 MiB
DURATION_S = 6
OPERATOR_DELAY_S = 1.0  # how long the operator takes to free space after a pause
POLICIES = ["report", "ignore", "stop", "enospc"]


def simulate(policy, error="nospace"):
    """One run: the target fails once with `error`; the operator reacts like a person would."""
    sim = bm.Simulation(
        LENGTH_BYTES,
        granularity=GRANULARITY_BYTES,
        seed=4,
        copy_rate=COPY_BYTES_PER_SEC,
        write_rate=1 * MIB,
        write_size=4096,
        pattern="uniform",
        on_target_error=policy,
        faults=[dict(side="target", op=FAULT_AT_OP, error=error)],
    )
    actions = []
    paused_at = {}

    def operator(sim, t_s):
        status = sim.job.status
        if status in ("paused", "standby"):
            # The job stopped on the error. Free space on the target (the injected fault was
            # a one-off, as if the operator had grown the volume), then resume.
            paused_at.setdefault("t", t_s)
            if t_s >= paused_at["t"] + OPERATOR_DELAY_S:
                sim.job.resume()
                actions.append((t_s, "resume() after freeing space"))
                paused_at.clear()
        elif status == "ready":
            sim.job.complete()
            actions.append((t_s, "complete()"))

    trace = plots.trace_simulation(
        sim, duration_ns=DURATION_S * NS_PER_S, samples=240, on_sample=operator,
        stop_when=lambda s: s.job.status == "concluded",
    )
    return sim, trace, actions


runs = {policy: simulate(policy) for policy in POLICIES}
runs["enospc (io error)"] = simulate("enospc", error="io")

# %% [markdown]
# Timelines: the coloured band is the job's status, the ticks above it are the events
# (errors, READY, COMPLETED), in virtual seconds.

# %%
fig, axes = plt.subplots(len(runs), 1, figsize=(9, 1.5 * len(runs)), sharex=True,
                         layout="constrained")
for ax, (name, (sim, trace, actions)) in zip(axes, runs.items()):
    plots.plot_status_timeline(trace, ax=ax, title=f"on_target_error={name}")
    for t_s, what in actions:
        ax.annotate(what.split("(")[0] + "()", (t_s, 0.55), xycoords=("data", "axes fraction"),
                    fontsize="x-small", color="darkred", ha="right")
    ax.label_outer()
# Room on the right for the labels of events at the very end.
axes[0].set_xlim(0, 1.12 * max(trace.times_s[-1] for _, trace, _ in runs.values()))
plt.show()

# %% [markdown]
# The events each run produced (status changes omitted), and how each one ended.

# %%
def outcome(sim, trace):
    completed = [e for _, e in trace.events if e.type == "BLOCK_JOB_COMPLETED"]
    errors = [e for _, e in trace.events if e.type == "BLOCK_JOB_ERROR"]
    failed = bool(completed) and completed[-1].error is not None
    return dict(
        errors=len(errors),
        error_actions=sorted({e.action for e in errors}),
        ready=trace.first_time_s("ready"),
        paused=trace.first_time_s("paused"),
        concluded=trace.first_time_s("concluded"),
        failed=failed,
        failure=completed[-1].error if failed else None,
        # At COMPLETED without error: did the target equal the source at the switch?
        consistent=sim.result()["equal_at_end"],
    )

summary = {}
for name, (sim, trace, actions) in runs.items():
    summary[name] = outcome(sim, trace)
    print(f"--- {name}")
    lines = [
        (t_s, f"{e.type} " + ", ".join(f"{k}={v}" for k, v in e.as_dict().items()
                                       if k not in ("type", "time_ns")))
        for t_s, e in trace.events if e.type != "JOB_STATUS_CHANGE"
    ]
    lines += [(t_s, f"operator: {what}") for t_s, what in actions]
    for t_s, line in sorted(lines, key=lambda item: item[0]):
        print(f"  {t_s:6.3f} s  {line}")
    print("  outcome:", summary[name])

# %% [markdown]
# What the operator does next, read from each outcome: a `report` failure ends the job (the
# target is not usable; fix the space and start a new mirror); `ignore` retries by itself;
# `stop` and `enospc` pause and wait for `resume()`; `enospc` still fails at once on an
# error that is not "no space".

# %%
def next_step(name, o):
    if o["failed"] and o["failure"] == "nospace":
        return "failed with 'nospace': free space on the target, then start a new mirror"
    if o["failed"]:
        return (f"failed at once with {o['failure']!r} (not a space problem): check or replace "
                f"the target, then start a new mirror")
    if o["paused"] is not None:
        return (f"paused at {o['paused']:.2f} s; the operator resumed after freeing space and "
                f"the job was ready at {o['ready']:.2f} s")
    if o["ready"] is not None:
        return (f"kept going ({o['errors']} error event(s), action {o['error_actions']}) and "
                f"was ready at {o['ready']:.2f} s with no operator action")
    return "did not finish within the simulated time"

print("Answer: when the target reports no space mid-copy,")
for name, o in summary.items():
    ends = ("target equal to the source at the switch" if o["consistent"]
            else "the target is not a usable copy")
    print(f"  - {name}: {next_step(name, o)} ({ends}).")
