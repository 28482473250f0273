"""blockmirror.plots: lazy imports, the simulation tracer and the figures.

The tracer is checked against a small scripted stand-in for a Simulation (the tracer only
uses ``now_ns``, ``run_until``, ``events`` and ``job.{status, progress, bitmap}``), so the
chunk-state classification is tested on states we choose.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import matplotlib  # the [notebooks] extra, which scripts/test.sh installs
import pytest

import blockmirror as bm
from blockmirror import plots

matplotlib.use("Agg")


class FakeBitmap:
    """The read-only part of HBitmap the tracer uses: size, granularity, serialize, count."""

    def __init__(self, size: int, granularity_log2: int, dirty: set[int]) -> None:
        self.size = size
        self.granularity = granularity_log2
        self.dirty = dirty

    def serialize(self, start: int, count: int) -> bytes:
        assert (start, count) == (0, self.size)
        chunks = -(-self.size // (1 << self.granularity))
        words = [0] * -(-chunks // 64)
        for c in self.dirty:
            words[c // 64] |= 1 << (c % 64)
        return b"".join(w.to_bytes(8, "little") for w in words)

    def count(self) -> int:
        return len(self.dirty) << self.granularity


@dataclass
class FakeEvent:
    type: str


class FakeJob:
    def __init__(self, sim: "FakeSim") -> None:
        self.sim = sim

    @property
    def status(self) -> str:
        return self.sim.script[self.sim.step][1]

    @property
    def progress(self) -> tuple[int, int]:
        return (self.sim.step * 10, 100)

    @property
    def bitmap(self) -> FakeBitmap:
        return FakeBitmap(self.sim.length, 4, self.sim.script[self.sim.step][0])


class FakeSim:
    """Steps through a script of (dirty chunks, status, new events), one entry per sample."""

    def __init__(self, length: int, script: list[tuple[set[int], str, list[str]]]) -> None:
        self.length = length
        self.script = script
        self.step = 0
        self.now_ns = 0
        self.events: list[FakeEvent] = [FakeEvent(t) for t in script[0][2]]
        self.job = FakeJob(self)

    def run_until(self, t_ns: int) -> None:
        assert t_ns > self.now_ns
        self.now_ns = t_ns
        self.step += 1
        self.events.extend(FakeEvent(t) for t in self.script[self.step][2])


SCRIPT = [
    ({0, 1, 2, 3}, "running", ["JOB_STATUS_CHANGE"]),
    ({2, 3}, "running", []),
    ({0, 3}, "running", ["BLOCK_JOB_ERROR"]),  # chunk 0 re-dirtied, chunk 3 never copied
    (set(), "ready", ["JOB_STATUS_CHANGE", "BLOCK_JOB_READY"]),
    ({1}, "ready", []),
]


def traced() -> plots.Trace:
    sim = FakeSim(length=4 * 16, script=SCRIPT)
    return plots.trace_simulation(sim, duration_ns=4_000_000_000, samples=4)


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = "import sys, blockmirror.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chunk_dirty_mask_reads_serialized_bits() -> None:
    mask = plots.chunk_dirty_mask(FakeBitmap(size=100 * 512, granularity_log2=9, dirty={0, 63, 64, 99}))
    assert mask.shape == (100,)
    assert sorted(int(i) for i in mask.nonzero()[0]) == [0, 63, 64, 99]


def test_trace_samples_statuses_progress_and_times() -> None:
    trace = traced()
    assert trace.times_s == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert trace.statuses == ["running", "running", "running", "ready", "ready"]
    assert trace.current_bytes == [0, 10, 20, 30, 40]
    assert trace.dirty_bytes == [64, 32, 32, 0, 16]
    assert trace.first_time_s("ready") == 3.0
    assert trace.first_time_s("concluded") is None


def test_trace_classifies_chunks_and_stamps_events() -> None:
    trace = traced()
    states = trace.chunk_states.tolist()
    # 0 not yet copied, 1 in sync, 2 dirty again after having been seen in sync.
    assert states == [
        [0, 0, 0, 0],
        [1, 1, 0, 0],
        [2, 1, 1, 0],
        [1, 1, 1, 1],
        [1, 2, 1, 1],
    ]
    assert [(t, e.type) for t, e in trace.events] == [
        (0.0, "JOB_STATUS_CHANGE"),
        (2.0, "BLOCK_JOB_ERROR"),
        (3.0, "JOB_STATUS_CHANGE"),
        (3.0, "BLOCK_JOB_READY"),
    ]


class FakeSimWithChunkStates(FakeSim):
    """Also has the simulator's own per-chunk view (bytes indexing bm.CHUNK_STATE_NAMES)."""

    def __init__(self, length: int, script: list[tuple[set[int], str, list[str]]],
                 native: list[list[str]]) -> None:
        super().__init__(length, script)
        self.native = native

    def chunk_states(self) -> bytes:
        names = list(bm.CHUNK_STATE_NAMES)
        return bytes(names.index(n) for n in self.native[self.step])


def test_trace_takes_copying_and_failed_chunks_from_the_simulator() -> None:
    native = [["dirty"] * 4, ["clean", "reading", "dirty", "dirty"],
              ["dirty", "clean", "writing", "failed"], ["waiting", "clean", "clean", "clean"],
              ["clean", "guest_written", "clean", "clean"]]
    sim = FakeSimWithChunkStates(length=64, script=SCRIPT, native=native)
    trace = plots.trace_simulation(sim, duration_ns=4_000_000_000, samples=4)
    names = [[plots.CHUNK_STATE_NAMES[v] for v in row] for row in trace.chunk_states.tolist()]
    assert names[1] == ["in sync", "copying", "not yet copied", "not yet copied"]
    assert names[2] == ["re-dirtied", "in sync", "copying", "failed"]
    assert names[3] == ["copying", "in sync", "in sync", "in sync"]
    # "guest_written" is no override: the bitmap says chunk 1 is dirty again.
    assert names[4] == ["in sync", "re-dirtied", "in sync", "in sync"]


def test_trace_uses_event_times_where_events_have_them() -> None:
    sim = FakeSim(length=64, script=SCRIPT)
    trace = plots.trace_simulation(sim, duration_ns=4_000_000_000, samples=4)
    for _, e in trace.events:
        assert not hasattr(e, "time_ns")  # the stand-in's events are stamped by sample
    real = bm.Simulation(16 << 20, copy_rate=8 << 20, write_rate=128 << 10, seed=3)
    trace = plots.trace_simulation(real, duration_ns=5_000_000_000, samples=5)
    assert [t for t, _ in trace.events] == [e.time_ns / 1e9 for e in real.events]
    assert "BLOCK_JOB_READY" in [e.type for _, e in trace.events]
    assert trace.first_time_s("ready") is not None


def test_trace_stops_early_and_calls_back() -> None:
    sim = FakeSim(length=64, script=SCRIPT)
    seen: list[float] = []
    trace = plots.trace_simulation(
        sim, duration_ns=4_000_000_000, samples=4,
        on_sample=lambda s, t: seen.append(t), stop_when=lambda s: s.job.status == "ready",
    )
    assert trace.times_s == seen == [0.0, 1.0, 2.0, 3.0]


def test_trace_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plots.trace_simulation(FakeSim(64, SCRIPT), duration_ns=0)
    with pytest.raises(ValueError):
        plots.trace_simulation(FakeSim(64, SCRIPT), duration_ns=10, samples=0)


def test_figures_have_labelled_axes() -> None:
    import matplotlib.pyplot as plt

    trace = traced()
    ax = plots.plot_progress(trace)
    assert ax.get_xlabel() == "virtual time (s)" and ax.get_ylabel() == "MiB"
    assert any("READY at 3.00 s" in t.get_text() for t in ax.get_legend().get_texts())
    ax = plots.plot_chunk_states(trace)
    assert ax.get_xlabel() == "disk offset (MiB)" and ax.get_images()[0].get_array().shape == (5, 4)
    ax = plots.plot_status_timeline(trace)
    assert {t.get_text().strip() for t in ax.texts} >= {"running", "ready", "READY", "ERROR"}
    rows = [
        dict(mode="a", x=1, y=2.0), dict(mode="a", x=2, y=None), dict(mode="b", x=1, y=1.0),
    ]
    ax = plots.plot_sweep(rows, x="x", y="y", group_by=["mode"], x_label="X (s)", y_label="Y (s)")
    assert ax.get_xlabel() == "X (s)" and len(ax.get_lines()) == 3  # a, a's misses, b
    assert ax.get_legend().get_title().get_text() == "x on top: not ready in time"
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "None", "--"]
    ax = plots.plot_sweep(rows[:1], x="x", y="y", group_by=["mode"], x_label="X", y_label="Y")
    assert ax.get_legend().get_title().get_text() == ""
    ax = plots.plot_granularity_tradeoff([4096, 8192], [1 << 20, 2 << 20], [512, 256])
    assert "granularity" in ax.get_xlabel() and "MiB" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4 KiB", "8 KiB"]
    ax = plots.plot_granularity_tradeoff(
        [4096, 8192, 16384], {"light": [1 << 20, 2 << 20, 4 << 20], "heavy": [2 << 20, None, None]},
        [1024, 512, 256],
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["light", "heavy", "heavy: never ready", "dirty bitmap memory"]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [8192, 16384]
    # Error bars, a reference chunk size, and both sizes in MiB.
    ax = plots.plot_granularity_tradeoff(
        [4096, 8192, 16384], {"a": [1 << 20, None, None], "b": [2 << 20, 4 << 20, None]},
        [2 << 20, 1 << 20, 512 << 10],
        intervals={"a": [(0.5 * (1 << 20), 1.5 * (1 << 20)), None, None], "b": [None, None, None]},
        reference=(8192, "QEMU default, 8 KiB"),
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a", "b", "a: never ready", "b: never ready", "QEMU default, 8 KiB",
                      "dirty bitmap memory"]
    bars = [c for c in ax.containers if c.has_yerr]
    (_, low), (_, high) = bars[0].lines[2][0].get_segments()[0]  # the one bar drawn, in MiB
    assert (low, high) == (0.5, 1.5)
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    heights = [line.get_ydata()[0] for line in crosses]
    assert len(set(heights)) == 2, "each series' crosses on their own row"
    assert any(t.get_text().strip() == "QEMU default, 8 KiB" for t in ax.texts)
    right = ax.get_shared_x_axes().get_siblings(ax)
    assert "MiB" in ax.get_ylabel() and any("(MiB" in a.get_ylabel() for a in right if a is not ax)
    bitmap_line = [a for a in right if a is not ax][0].get_lines()[0]
    assert list(bitmap_line.get_ydata()) == [2.0, 1.0, 0.5]
    plt.close("all")


def test_format_bytes() -> None:
    assert [plots.format_bytes(n) for n in (16, 4096, 65536, 1536 << 10, 1 << 40, 1 << 52)] == [
        "16 B", "4 KiB", "64 KiB", "1.5 MiB", "1 TiB", "4096 TiB",
    ]


def test_status_timeline_takes_exact_times_from_status_events() -> None:
    sim = bm.Simulation(16 << 20, copy_rate=8 << 20, seed=3, complete_on_ready=True)
    trace = plots.trace_simulation(sim, duration_ns=4_000_000_000, samples=4)
    changes = [(e.time_ns / 1e9, e.status) for e in sim.events if e.type == "JOB_STATUS_CHANGE"]
    spans = plots._status_spans(trace)
    assert [(start, status) for start, _, status in spans] == changes
    assert spans[-1][1] == trace.times_s[-1]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
