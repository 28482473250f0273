"""Pictures of mirror jobs, for notebooks and scripts.

matplotlib and numpy are optional (``pip install blockmirror[notebooks]``): they are imported
inside the functions that need them, so ``import blockmirror.plots`` always works.

Two kinds of helpers:

* :func:`trace_simulation` steps a :class:`blockmirror.Simulation` in equal slices of virtual
  time and records what a user would watch: status, progress, dirty bytes, events, and the
  state of every chunk (a picture of the dirty bitmap over time). It needs numpy only.
* ``plot_*`` functions draw a :class:`Trace` or a list of :func:`blockmirror.sweep` result
  rows onto a matplotlib ``Axes`` (a new figure when ``ax`` is None) and return the Axes.

Every axis is labelled with its unit: bytes are shown in MiB, times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    from matplotlib.axes import Axes

__all__ = [
    "CHUNK_STATE_NAMES",
    "Trace",
    "chunk_dirty_mask",
    "format_bytes",
    "trace_simulation",
    "plot_progress",
    "plot_chunk_states",
    "plot_status_timeline",
    "plot_sweep",
    "plot_granularity_tradeoff",
]

MIB = 1 << 20
NS_PER_S = 1_000_000_000

#: Chunk states in :attr:`Trace.chunk_states`, by value. From the job's bitmap: "not yet
#: copied" (dirty, never seen clean), "in sync" (clean), "re-dirtied" (dirty again after an
#: earlier sample saw it clean; changes between samples are not seen). From the simulator's
#: own view, where it has one (``Simulation.chunk_states``): "copying" (a copy or a
#: write-blocking guest write owns the chunk) and "failed" (its last job I/O failed).
CHUNK_STATE_NAMES = ("not yet copied", "in sync", "re-dirtied", "copying", "failed")
_CHUNK_STATE_COLOURS = ("#b0b0b0", "#2ca02c", "#ff7f0e", "#1f77b4", "#d62728")
_NOT_YET_COPIED, _IN_SYNC, _REDIRTIED, _COPYING, _FAILED = range(5)
#: Simulator chunk-state names (blockmirror.CHUNK_STATE_NAMES) that override the bitmap's view.
_NATIVE_OVERRIDES = {"reading": _COPYING, "writing": _COPYING, "waiting": _COPYING,
                     "failed": _FAILED}

#: Colours of the job statuses in status timelines.
_STATUS_COLOURS = {
    "created": "#dddddd",
    "running": "#1f77b4",
    "paused": "#d62728",
    "ready": "#2ca02c",
    "standby": "#9467bd",
    "waiting": "#8c564b",
    "pending": "#e377c2",
    "aborting": "#7f7f7f",
    "concluded": "#17becf",
    "null": "#ffffff",
}


@dataclass
class Trace:
    """What a simulation looked like, sampled at equal steps of virtual time."""

    #: Chunk size in bytes.
    granularity: int
    #: Disk length in bytes.
    length: int
    #: Sample times in seconds of virtual time.
    times_s: list[float] = field(default_factory=list)
    #: Job status at each sample.
    statuses: list[str] = field(default_factory=list)
    #: Progress ``current`` (bytes copied) at each sample.
    current_bytes: list[int] = field(default_factory=list)
    #: Progress ``total`` at each sample.
    total_bytes: list[int] = field(default_factory=list)
    #: Bytes covered by dirty chunks at each sample.
    dirty_bytes: list[int] = field(default_factory=list)
    #: ``(time_s, event)`` for every event: the event's own ``time_ns`` where it has one,
    #: else the time of the sample that first saw it.
    events: list[tuple[float, Any]] = field(default_factory=list)
    #: One row of chunk states (values index :data:`CHUNK_STATE_NAMES`) per sample.
    chunk_state_rows: list[Any] = field(default_factory=list)

    @property
    def chunk_states(self) -> np.ndarray:
        """A ``samples x chunks`` uint8 array of chunk states."""
        import numpy as np

        return np.vstack(self.chunk_state_rows)

    def first_time_s(self, status: str) -> float | None:
        """When the job first had ``status`` (exact where status events carry times, else the
        first sample that saw it), or None."""
        for start_s, _, span_status in _status_spans(self):
            if span_status == status:
                return start_s
        return None


def chunk_dirty_mask(bitmap: Any) -> np.ndarray:
    """A bool array with one entry per granule of ``bitmap``: True where it is dirty.

    Built from ``bitmap.serialize`` (little-endian 64-bit words of granule bits), so it costs
    one call across the binding however large the bitmap is.
    """
    import numpy as np

    size = int(bitmap.size)
    granule = 1 << int(bitmap.granularity)
    chunks = -(-size // granule)
    raw = np.frombuffer(bitmap.serialize(0, size), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:chunks].astype(bool)


def _native_overrides(sim: Any) -> np.ndarray | None:
    """A lookup table from the simulator's chunk-state bytes to ours (255: keep the bitmap's)."""
    import numpy as np

    if not hasattr(sim, "chunk_states"):
        return None
    from blockmirror import CHUNK_STATE_NAMES as native_names

    table = np.full(256, 255, dtype=np.uint8)
    for index, name in enumerate(native_names):
        if name in _NATIVE_OVERRIDES:
            table[index] = _NATIVE_OVERRIDES[name]
    return table


def _event_time_s(event: Any, fallback_s: float) -> float:
    time_ns = getattr(event, "time_ns", None)
    return fallback_s if time_ns is None else time_ns / NS_PER_S


def trace_simulation(
    sim: Any,
    *,
    duration_ns: int,
    samples: int = 100,
    stop_when: Callable[[Any], bool] | None = None,
    on_sample: Callable[[Any, float], None] | None = None,
) -> Trace:
    """Run ``sim`` for ``duration_ns`` of virtual time, sampling ``samples`` times.

    Each step calls ``sim.run_until(t)`` with an absolute time ``t``. ``stop_when(sim)``
    ends the trace early (for example once the job has concluded); ``on_sample(sim, t_s)``
    lets the caller act at a sample (pause, complete, raise the speed...).

    Chunk states come from the job's bitmap (see :data:`CHUNK_STATE_NAMES`), refined by
    ``sim.chunk_states()`` where the simulation has it.
    """
    import numpy as np

    if samples < 1 or duration_ns <= 0:
        raise ValueError("samples must be >= 1 and duration_ns > 0")
    job = sim.job
    first = job.bitmap
    granule = 1 << int(first.granularity)
    trace = Trace(granularity=granule, length=int(first.size))
    seen_clean = np.zeros(-(-trace.length // granule), dtype=bool)
    overrides = _native_overrides(sim)
    start_ns = int(sim.now_ns)
    seen_events = 0
    for i in range(samples + 1):
        t_ns = start_ns + duration_ns * i // samples
        if i > 0:
            sim.run_until(t_ns)
        t_s = t_ns / NS_PER_S
        dirty = chunk_dirty_mask(job.bitmap)
        state = np.where(dirty, np.where(seen_clean, _REDIRTIED, _NOT_YET_COPIED), _IN_SYNC)
        state = state.astype(np.uint8)
        seen_clean |= ~dirty
        if overrides is not None:
            native = np.frombuffer(sim.chunk_states(), dtype=np.uint8)
            state = np.where(overrides[native] != 255, overrides[native], state).astype(np.uint8)
        current, total = job.progress
        trace.times_s.append(t_s)
        trace.statuses.append(job.status)
        trace.current_bytes.append(int(current))
        trace.total_bytes.append(int(total))
        trace.dirty_bytes.append(int(job.bitmap.count()))
        trace.chunk_state_rows.append(state)
        events = sim.events
        trace.events.extend((_event_time_s(e, t_s), e) for e in events[seen_events:])
        seen_events = len(events)
        if on_sample is not None:
            on_sample(sim, t_s)
        if stop_when is not None and stop_when(sim):
            break
    return trace


def format_bytes(n: float) -> str:
    """``65536`` -> ``"64 KiB"``: binary units, at most one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if float(n).is_integer() else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the loop returns at TiB")


def _axes(ax: Axes | None, figsize: tuple[float, float] = (7.0, 3.5)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return new_ax


def _mib(values: Iterable[float]) -> list[float]:
    return [v / MIB for v in values]


def plot_progress(trace: Trace, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Bytes copied, progress total and dirty bytes over time, with READY marked."""
    ax = _axes(ax)
    ax.plot(trace.times_s, _mib(trace.current_bytes), color="#1f77b4",
            label="copied (progress current)")
    ax.plot(trace.times_s, _mib(trace.total_bytes), "--", color="#7f7f7f", label="progress total")
    ax.plot(trace.times_s, _mib(trace.dirty_bytes), color="#ff7f0e", label="dirty")
    ready_s = trace.first_time_s("ready")
    if ready_s is not None:
        ax.axvline(ready_s, color="#2ca02c", linestyle=":", label=f"READY at {ready_s:.2f} s")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("MiB")
    ax.set_title(title or "Progress and dirty bytes")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_chunk_states(trace: Trace, ax: Axes | None = None, title: str | None = None) -> Axes:
    """An image of every chunk's state (x: disk offset, y: time going down)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax = _axes(ax, figsize=(7.0, 4.0))
    times = trace.times_s
    # Row i is the sample at times[i]: centre each row on its time.
    half_step = (times[-1] - times[0]) / (2 * (len(times) - 1)) if len(times) > 1 else 0.5
    ax.imshow(
        trace.chunk_states,
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(_CHUNK_STATE_COLOURS),
        vmin=0,
        vmax=len(CHUNK_STATE_NAMES) - 1,
        extent=(0, trace.length / MIB, times[-1] + half_step, times[0] - half_step),
    )
    ax.set_xlabel("disk offset (MiB)")
    ax.set_ylabel("virtual time (s)")
    ax.set_title(title or f"Chunk states ({format_bytes(trace.granularity)} chunks)")
    ax.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(_CHUNK_STATE_COLOURS, CHUNK_STATE_NAMES)],
        loc="lower right",
        fontsize="small",
    )
    return ax


def _status_spans(trace: Trace) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, status)`` spans: from the JOB_STATUS_CHANGE events where they carry
    the status (exact times), else from the samples."""
    end_s = trace.times_s[-1]
    changes = [(t, e.status) for t, e in trace.events
               if e.type == "JOB_STATUS_CHANGE" and getattr(e, "status", None)]
    if not changes:
        changes = [(t, s) for i, (t, s) in enumerate(zip(trace.times_s, trace.statuses))
                   if i == 0 or s != trace.statuses[i - 1]]
    elif changes[0][0] > trace.times_s[0]:
        changes.insert(0, (trace.times_s[0], trace.statuses[0]))
    bounds = [t for t, _ in changes[1:]] + [max(end_s, changes[-1][0])]
    return [(t, b, s) for (t, s), b in zip(changes, bounds)]


def plot_status_timeline(trace: Trace, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Job status as coloured bands over time, with each non-status event marked above."""
    ax = _axes(ax, figsize=(7.0, 2.2))
    on_x = ax.get_xaxis_transform()
    span_s = max(trace.times_s[-1] - trace.times_s[0], 1e-9)
    for start_s, end_s, status in _status_spans(trace):
        ax.axvspan(start_s, end_s, ymax=0.5, color=_STATUS_COLOURS.get(status, "#000"))
        if end_s - start_s >= 0.06 * span_s:  # name only the bands wide enough to read
            ax.text((start_s + end_s) / 2, 0.25, status, ha="center", va="center",
                    fontsize="small", transform=on_x, clip_on=True)
    marked = [(t, e) for t, e in trace.events if e.type != "JOB_STATUS_CHANGE"]
    for t, e in marked:
        ax.axvline(t, ymin=0.5, ymax=0.95, color="k", linewidth=0.8)
    labelled: list[str] = []
    for t, e in marked:
        if e.type not in labelled:
            # Stagger the labels over three rows so events close in time stay readable.
            row = len(labelled) % 3
            labelled.append(e.type)
            ax.text(t, 0.97 - 0.14 * row, " " + e.type.removeprefix("BLOCK_JOB_"),
                    fontsize="x-small", va="top", ha="left", transform=on_x, clip_on=True)
    ax.set_yticks([])
    ax.set_xlim(trace.times_s[0], trace.times_s[-1])
    ax.set_xlabel("virtual time (s)")
    ax.set_title(title or "Status (bands) and events (ticks)")
    return ax


def plot_sweep(
    rows: Sequence[dict[str, Any]],
    *,
    x: str,
    y: str,
    group_by: Iterable[str],
    ax: Axes | None = None,
    x_label: str,
    y_label: str,
    y_scale: Callable[[float], float] = lambda v: v,
    title: str | None = None,
    legend_loc: Any = "best",
) -> Axes:
    """One line per combination of ``group_by`` keys: ``y`` against ``x``.

    Rows whose ``y`` is None (the run never reached its goal within its time limit) are drawn
    as crosses along the top edge, so "did not converge" stays visible instead of vanishing.
    ``legend_loc`` is any matplotlib legend location ("best", "upper left", ...).
    """
    ax = _axes(ax)
    keys = tuple(group_by)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    # Line styles cycle too, so that series lying on top of each other stay visible.
    styles = ("-", "--", "-.", ":")
    any_missed = False
    for index, (group, members) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        members = sorted(members, key=lambda r: r[x])
        label = ", ".join(str(v) for v in group)
        done = [(r[x], y_scale(r[y])) for r in members if r[y] is not None]
        line = ax.plot([p[0] for p in done], [p[1] for p in done], marker="o", markersize=3,
                       linestyle=styles[index % len(styles)], label=label)[0]
        missed = [r[x] for r in members if r[y] is None]
        if missed:
            any_missed = True
            ax.plot(missed, [1.0] * len(missed), "x", color=line.get_color(),
                    transform=ax.get_xaxis_transform(), clip_on=False)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    ax.legend(loc=legend_loc, fontsize="small",
              title="x on top: not ready in time" if any_missed else None)
    return ax


def plot_granularity_tradeoff(
    granularities: Sequence[int],
    recopied_bytes: Sequence[float | None] | Mapping[str, Sequence[float | None]],
    bitmap_bytes: Sequence[float],
    ax: Axes | None = None,
    title: str | None = None,
    bitmap_label: str = "dirty bitmap memory",
    intervals: Sequence[tuple[float, float] | None]
    | Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    reference: tuple[int, str] | None = None,
    recopied_label: str = "re-copied",
) -> Axes:
    """Re-copied MiB (left axis, solid, one line per series) and bitmap memory in MiB (right
    axis, blue, dashed) against the chunk size; all three axes are logarithmic, and both
    sizes are in MiB so the two sides read alike.

    ``recopied_bytes`` is one series or a mapping of label to series; a None entry (the job
    never got ready at that chunk size) is drawn as a cross along the top edge.
    ``intervals`` (the same shape, ``(low, high)`` bytes per entry or None) draws error
    bars, e.g. a confidence interval of the mean over seeds. ``reference`` is
    ``(granularity, label)``: a vertical line marking a chunk size to compare with.
    ``recopied_label`` names the left axis' measure.
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    ax = _axes(ax, figsize=(7.5, 5.0))
    series: Mapping[str, Sequence[float | None]] = (
        recopied_bytes if isinstance(recopied_bytes, Mapping) else {"": recopied_bytes})
    if intervals is None:
        bars: Mapping[str, Sequence[tuple[float, float] | None]] = {}
    elif isinstance(intervals, Mapping):
        bars = intervals
    else:
        bars = {"": intervals}
    colours = ("#d62728", "#9467bd", "#8c564b", "#e377c2")
    missed_handles: list[Any] = []
    for index, ((label, values), colour) in enumerate(zip(series.items(), colours * len(series))):
        kept = [(g, v, b) for g, v, b in zip(granularities, values, bars.get(label, [None] * len(values)))
                if v is not None]
        xs, ys = [k[0] for k in kept], [k[1] / MIB for k in kept]
        if label in bars:
            # Asymmetric bars: distances from the mean to the interval's ends, in MiB.
            below = [0.0 if b is None else max(v - b[0], 0.0) / MIB for _, v, b in kept]
            above = [0.0 if b is None else max(b[1] - v, 0.0) / MIB for _, v, b in kept]
            ax.errorbar(xs, ys, yerr=[below, above], fmt="o-", color=colour, capsize=3,
                        label=label or None)
        else:
            ax.plot(xs, ys, "o-", color=colour, label=label or None)
        missed = [g for g, v in zip(granularities, values) if v is None]
        if missed:
            # One row of crosses per series along the top edge, so that they do not hide
            # each other where several series miss the same chunk size.
            missed_handles += ax.plot(missed, [1.0 - 0.035 * index] * len(missed), "x",
                                      color=colour, clip_on=False,
                                      transform=ax.get_xaxis_transform(),
                                      label=f"{label}: never ready" if label else "never ready")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(granularities)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(list(granularities), [format_bytes(g) for g in granularities],
                  rotation=45, fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("granularity (chunk size, log scale)")
    ax.set_ylabel(f"{recopied_label} (MiB, log scale)")
    reference_handles: list[Any] = []
    if reference is not None:
        at, text = reference
        reference_handles.append(ax.axvline(at, color="#CC79A7", linestyle="-.", linewidth=1.2,
                                            label=text))
        ax.text(at, 0.02, f" {text}", color="#CC79A7", fontsize="small", rotation=90,
                va="bottom", ha="right", transform=ax.get_xaxis_transform())
    right = ax.twinx()
    right.plot(granularities, [b / MIB for b in bitmap_bytes], "s--", color="#1f77b4",
               label=bitmap_label)
    right.set_yscale("log")
    right.set_ylabel(f"{bitmap_label} (MiB, log scale)", color="#1f77b4")
    # The measured series first, then what did not get ready, then the references.
    measured = [h for h in ax.get_legend_handles_labels()[0]
                if h not in missed_handles and h not in reference_handles]
    handles = (measured + missed_handles + reference_handles
               + right.get_legend_handles_labels()[0])
    # Below the axes: the lines cross the whole plot, so any place inside would hide data.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
              fontsize="small")
    ax.set_title(title or "Re-copy cost against bitmap memory")
    return ax
