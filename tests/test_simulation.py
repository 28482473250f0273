"""blockmirror.Simulation and blockmirror.sweep: determinism, modes, faults, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blockmirror as bm

MIB = 1 << 20
MS = 1_000_000
SEC = 1_000_000_000

BASE = dict(granularity=64 << 10, copy_rate=100 * MIB, source_rate=1024 * MIB)


def sim(**options: object) -> bm.Simulation:
    return bm.Simulation(16 * MIB, **{**BASE, **options})  # type: ignore[arg-type]


def test_same_seed_same_run_different_seed_different_run() -> None:
    opts = dict(seed=3, write_rate=20 * MIB, pattern="hotspot", jitter_ns=200_000, complete_on_ready=True,
                guest_stop_ns=SEC)
    a, b, c = sim(**opts), sim(**opts), sim(**{**opts, "seed": 4})
    for s in (a, b, c):
        assert s.run_until("concluded") == "reached"
    assert [e.as_dict() for e in a.events] == [e.as_dict() for e in b.events]
    assert a.result() == b.result()
    assert a.samples == b.samples
    assert a.trace_digest == b.trace_digest != c.trace_digest


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("sync", ["full", "top", "none"])
@pytest.mark.parametrize("pattern", ["uniform", "hotspot", "sequential"])
def test_every_mode_completes_equal(copy_mode: str, sync: str, pattern: str) -> None:
    capture = {"uniform": "either", "hotspot": "issue", "sequential": "completion"}[pattern]
    s = sim(copy_mode=copy_mode, sync=sync, pattern=pattern, write_rate=10 * MIB, read_capture=capture,
            data_fraction=0.6, complete_on_ready=True, guest_stop_ns=2 * SEC)
    assert s.run_until("concluded") == "reached"
    r = s.result()
    assert r["ending"] == "completed" and r["error"] is None and r["pivoted"]
    assert r["equal_at_end"] is True
    assert r["violations"] == 0 and s.violations == []
    assert r["ready_events"] == 1
    types = [e.type for e in s.events]
    assert types.count("BLOCK_JOB_READY") == 1 and "BLOCK_JOB_COMPLETED" in types
    assert all(e.time_ns is not None for e in s.events)


def test_write_blocking_converges_where_background_does_not() -> None:
    heavy = dict(write_rate=200 * MIB, write_size=64 << 10, time_limit_ns=5 * SEC)
    assert sim(**heavy).run_until("ready") == "time_limit"
    blocking = sim(copy_mode="write-blocking", **heavy)
    assert blocking.run_until("ready") == "reached"
    assert blocking.result()["time_to_ready_ns"] is not None


def test_write_blocking_when_not_converging() -> None:
    heavy = dict(write_rate=400 * MIB, write_size=64 << 10, copy_rate=200 * MIB,
                 not_converging_window_ns=2 * SEC, time_limit_ns=20 * SEC)
    stuck = sim(**heavy)
    assert stuck.run_until("ready") == "not_converging"
    assert "BLOCK_JOB_NOT_CONVERGING" in [e.type for e in stuck.events]
    # The older name of the job's auto_converge: the job switches itself (an event, no command).
    for helped in (sim(write_blocking_when_not_converging=True, **heavy), sim(auto_converge=True, **heavy)):
        assert helped.run_until("ready") == "reached"
        assert [e.type for e in helped.events].count("BLOCK_JOB_AUTO_CONVERGE") == 1
        assert helped.commands == []


def test_live_job_view_and_verbs() -> None:
    s = sim(write_rate=5 * MIB)
    job = s.job
    assert job.status == "running"
    with pytest.raises(bm.JobStateError):
        job.complete()
    assert s.run_until("ready") == "reached"
    assert job.status == "ready"  # the same view object sees the new state
    current, total = job.progress
    assert current <= total
    assert job.bitmap.size == 16 * MIB
    job.complete()
    assert s.run_until("concluded") == "reached"
    assert job.status == "concluded"
    assert s.result()["equal_at_end"] is True
    assert [(c[1], c[2]) for c in s.commands] == [("complete", False), ("complete", True)]
    assert "cannot complete" in (s.commands[0][3] or "")


def test_scripted_commands_and_faults() -> None:
    s = sim(on_target_error="stop", faults=[dict(side="target", nth=3, error="nospace")],
            commands=[(50 * MS, "set_speed", 50 * MIB), (2 * SEC, "resume"), (3 * SEC, "complete")])
    assert s.run_until(1 * SEC) == "reached" and s.now_ns == SEC
    assert s.job.status == "paused"
    errors = [e for e in s.events if e.type == "BLOCK_JOB_ERROR"]
    assert [(e.operation, e.action, e.error) for e in errors] == [("write", "stop", "nospace")]
    assert s.run_until("concluded") == "reached"
    assert s.result()["ending"] == "completed" and s.result()["equal_at_end"]


def test_report_error_ends_the_job_with_the_error() -> None:
    s = sim(faults=[dict(side="source", op=1, error="io")])
    assert s.run_until("ready") == "unreachable"
    r = s.result()
    assert (r["ending"], r["error"], r["status"]) == ("completed", "io", "concluded")


def test_livelock_and_stall_are_outcomes_not_hangs() -> None:
    s = sim()
    assert s.run_until("ready", max_steps=5) == "livelock"
    assert s.run_until("ready") == "reached"
    assert s.run_until("concluded") == "stalled"


def test_samples_and_chunk_states() -> None:
    s = sim(write_rate=20 * MIB, sample_interval_ns=10 * MS)
    s.run_until(200 * MS)
    samples = s.samples
    assert samples["time_ns"] == [i * 10 * MS for i in range(21)]
    assert {len(v) for v in samples.values()} == {21}
    assert (samples["current"][0], samples["total"][0]) == (0, 16 * MIB)
    states = s.chunk_states()
    assert isinstance(states, bytes) and len(states) == s.chunks == 256
    assert max(states) < len(bm.CHUNK_STATE_NAMES)
    assert states.count(bm.CHUNK_STATE_NAMES.index("clean")) > 0


def test_events_are_frozen_with_a_useful_repr() -> None:
    s = sim(complete_on_ready=True)
    s.run_until("concluded")
    ready = next(e for e in s.events if e.type == "BLOCK_JOB_READY")
    assert "BLOCK_JOB_READY" in repr(ready) and "current=" in repr(ready)
    assert ready.as_dict()["current"] == 16 * MIB
    with pytest.raises(AttributeError):
        ready.current = 0  # type: ignore[misc]


GRID = [
    dict(length=8 * MIB, seed=seed, write_rate=rate, copy_mode=mode, copy_rate=50 * MIB,
         until="ready", time_limit_ns=3 * SEC)
    for seed in (1, 2)
    for rate in (0, 10 * MIB, 80 * MIB)
    for mode in ("background", "write-blocking")
]


def test_sweep_equals_single_runs_in_order() -> None:
    rows = bm.sweep(GRID, threads=2)
    assert len(rows) == len(GRID)
    for params, row in zip(GRID, rows):
        assert {k: row[k] for k in params} == params  # the parameters come back
        options = {k: v for k, v in params.items() if k not in ("length", "until")}
        single = bm.Simulation(params["length"], **options)  # type: ignore[arg-type]
        outcome = single.run_until("ready")
        assert row["outcome"] == outcome
        assert {k: row[k] for k in single.result() if k != "outcome"} == {
            k: v for k, v in single.result().items() if k != "outcome"}
    by_rate = {(r["write_rate"], r["copy_mode"]): r["time_to_ready_ns"] for r in rows}
    assert by_rate[(80 * MIB, "background")] is None
    assert by_rate[(80 * MIB, "write-blocking")] is not None


def test_sweep_threads_do_not_change_results() -> None:
    assert bm.sweep(GRID, threads=1) == bm.sweep(GRID, threads=2)


@pytest.mark.parametrize("bad", [
    dict(length=MIB, colour="red"),
    dict(length=MIB, pattern="zigzag"),
    dict(length=MIB, granularity=1000),
    dict(length=MIB, copy_mode="eager"),
    dict(length=MIB, hot_fraction=2.0, pattern="hotspot"),
    dict(length=MIB, faults=[dict(side="middle", nth=1)]),
    dict(length=MIB, commands=[(0, "explode")]),
    dict(length=MIB, until="forever"),
    dict(length=MIB, read_capture="sometimes"),
    dict(length=-1),
    dict(seed=1),
])
def test_bad_parameters_raise_invalid_argument_before_any_run(bad: dict[str, object]) -> None:
    with pytest.raises(bm.InvalidArgument):
        bm.sweep([dict(length=MIB), bad])


def test_simulation_rejects_bad_options() -> None:
    with pytest.raises(bm.InvalidArgument):
        bm.Simulation(MIB, until="ready")  # type: ignore[call-arg]
    with pytest.raises(bm.InvalidArgument):
        bm.Simulation(-5)
    with pytest.raises(bm.InvalidArgument):
        bm.Simulation(MIB).run_until("later")
    with pytest.raises(bm.InvalidArgument):
        bm.sweep([dict(length=MIB)], threads=0)


def test_mirror_job_rejects_bad_input() -> None:
    job = bm.MirrorJob(MIB, granularity=4096)
    with pytest.raises(bm.JobStateError):
        job.complete()
    job.start()
    with pytest.raises(bm.InvalidArgument):
        job.handle_guest_write(MIB - 10, 100)
    with pytest.raises(bm.InvalidArgument):
        job.handle_completion(12345)
    with pytest.raises(bm.InvalidArgument):
        job.handle_guest_write(-1, 10)
    a = job.poll_action()
    assert a is not None and a.kind == "read"
    with pytest.raises(bm.InvalidArgument):
        job.handle_completion(a.op, error="melted")
    job.pause()
    with pytest.raises(bm.JobStateError):
        job.pause()
    with pytest.raises(bm.InvalidArgument):
        bm.MirrorJob(MIB, sync="sideways")


def test_run_until_and_sweep_release_the_gil() -> None:
    """While a simulation runs in another thread, this thread keeps running Python code:
    the longest pause between two turns of this loop stays far below the run's length."""
    import threading
    import time

    heavy = dict(length=64 * MIB, copy_rate=16 * MIB, write_rate=16 * MIB, until="ready",
                 time_limit_ns=60 * SEC, stop_at_not_converging=False)
    for work in (lambda: bm.sweep([heavy, {**heavy, "seed": 1}], threads=1),
                 lambda: bm.Simulation(64 * MIB, copy_rate=16 * MIB, write_rate=16 * MIB,
                                       time_limit_ns=120 * SEC,
                                       stop_at_not_converging=False).run_until("ready")):
        worker = threading.Thread(target=work)
        started = last = time.perf_counter()
        longest_pause = 0.0
        worker.start()
        while worker.is_alive():
            now = time.perf_counter()
            longest_pause = max(longest_pause, now - last)
            last = now
        worker.join()
        elapsed = time.perf_counter() - started
        assert elapsed > 0.2, "the run is too short to tell"
        assert longest_pause < elapsed / 2, (longest_pause, elapsed)


def test_sweep_until_defaults_to_concluded_with_complete_on_ready() -> None:
    [row] = bm.sweep([dict(length=4 * MIB, complete_on_ready=True)])
    assert (row["outcome"], row["status"], row["ending"], row["equal_at_end"]) == (
        "reached", "concluded", "completed", True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    length=st.integers(0, 4 * MIB),
    granularity=st.sampled_from([512, 4096, 65536]),
    copy_mode=st.sampled_from(["background", "write-blocking"]),
    sync=st.sampled_from(["full", "top", "none"]),
    policy=st.sampled_from(["report", "ignore", "stop", "enospc"]),
    write_size=st.integers(1, 20_000),
    writes_per_sec=st.integers(0, 5_000),
    fault_rate=st.sampled_from([0.0, 0.02, 0.2]),
    jitter_ns=st.integers(0, 2 * MS),
)
def test_random_simulations_keep_the_invariants(
    seed: int, length: int, granularity: int, copy_mode: str, sync: str, policy: str,
    write_size: int, writes_per_sec: int, fault_rate: float, jitter_ns: int,
) -> None:
    s = bm.Simulation(
        length, granularity=granularity, seed=seed, copy_mode=copy_mode, sync=sync,
        on_source_error=policy, on_target_error=policy, max_io=4 * granularity,
        write_size=write_size, write_align=1, write_rate=writes_per_sec * write_size,
        guest_stop_ns=SEC, copy_rate=20 * MIB, jitter_ns=jitter_ns, data_fraction=0.5,
        source_fault_rate=fault_rate, target_fault_rate=fault_rate, fault_window_ns=(0, SEC),
        complete_on_ready=True, resume_after_stop_ns=10 * MS, time_limit_ns=60 * SEC,
    )
    outcome = s.run_until("concluded")
    r = s.result()
    assert s.violations == [] and r["ready_events"] <= 1
    if policy in ("ignore", "stop"):
        # Faults stop at 1 s and an operator resumes stops: the job must complete equal.
        assert outcome == "reached" and r["ending"] == "completed" and r["error"] is None
    if r["ending"] == "completed" and r["error"] is None:
        assert r["equal_at_end"] is True


def test_too_large_a_disk_is_invalid_argument_not_an_abort() -> None:
    """1 TiB at 512 B chunks (2**31 chunks) used to abort the interpreter ("memory
    allocation of 17179869184 bytes failed"), so this runs in a child process, with its
    address space capped so that the old behaviour fails fast instead of eating the host."""
    import resource
    import subprocess
    import sys

    code = (
        "import blockmirror as bm\n"
        "for make in (lambda: bm.Simulation(2**40, granularity=512),\n"
        "             lambda: bm.sweep([dict(length=2**40, granularity=512)])):\n"
        "    try:\n"
        "        make()\n"
        "    except bm.InvalidArgument as e:\n"
        "        print('InvalidArgument:', e)\n"
        "    else:\n"
        "        print('accepted')\n"
    )

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, preexec_fn=cap_memory)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    lines = child.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("InvalidArgument:") for line in lines), lines
    assert all("2147483648 chunks" in line and "at most 268435456" in line for line in lines), lines


# Never converges in background mode: the guest writes twice as fast as the target takes.
STUCK = dict(length=16 * MIB, granularity=64 << 10, copy_rate=16 * MIB, write_rate=32 * MIB,
             write_size=64 << 10)


def test_sweep_of_points_that_never_converge_ends_at_not_converging() -> None:
    """Such points used to run to the default bound (50 M steps or 1 h of virtual time,
    ~30 s of CPU each); now each ends at the job's BLOCK_JOB_NOT_CONVERGING (10 s window)."""
    grid = [dict(STUCK, seed=seed) for seed in range(4)]
    rows = bm.sweep(grid)
    for row in rows:
        assert row["outcome"] == "not_converging"
        assert row["time_to_ready_ns"] is None and row["converged"] is False
        assert row["not_converging_at_ns"] == row["time_ns"] <= 30 * SEC
        assert row["steps"] < 1_000_000
    # Asked for, the run goes to the event; told not to stop, it runs to its bound.
    [to_event, bounded] = bm.sweep([dict(STUCK, until="not_converging"),
                                    dict(STUCK, stop_at_not_converging=False, time_limit_ns=20 * SEC)])
    assert to_event["outcome"] == "reached" and to_event["time_ns"] == rows[0]["time_ns"]
    assert (bounded["outcome"], bounded["time_ns"]) == ("time_limit", 20 * SEC)
    # Something scripted that helps: the run goes on to ready.
    [helped] = bm.sweep([dict(STUCK, write_blocking_when_not_converging=True)])
    assert helped["outcome"] == "reached" and helped["time_to_ready_ns"] > helped["not_converging_at_ns"]


def test_sweep_reports_progress_once_per_point() -> None:
    grid = [dict(length=4 * MIB, seed=seed) for seed in range(5)]
    calls: list[tuple[int, int]] = []
    rows = bm.sweep(grid, threads=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 5) for done in range(1, 6)]
    assert rows == bm.sweep(grid, threads=2)


def test_sweep_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    bm.sweep([dict(length=4 * MIB, seed=seed) for seed in range(3)], progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "sweep" in captured.err and "3/3" in captured.err


def test_an_exception_in_the_progress_callback_stops_the_sweep() -> None:
    def boom(done: int, total: int) -> None:
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        bm.sweep([dict(length=4 * MIB, seed=seed) for seed in range(3)], threads=1, progress=boom)
    with pytest.raises(bm.InvalidArgument, match="progress"):
        bm.sweep([dict(length=MIB)], progress="yes")  # type: ignore[arg-type]


def test_absurd_thread_counts_are_refused_naming_the_limit() -> None:
    with pytest.raises(bm.InvalidArgument, match="between 1 and 1024, got 100000"):
        bm.sweep([dict(length=MIB)], threads=100000)
    with pytest.raises(bm.InvalidArgument, match="between 1 and 1024, got 0"):
        bm.sweep([dict(length=MIB)], threads=0)
    assert len(bm.sweep([dict(length=MIB)], threads=4)) == 1


def test_events_match_the_shared_fixture() -> None:
    """Python gives the names and values the page gives for the same run: the fixture is
    checked (and written) by the wasm host test wasm/tests/event_fixture.rs."""
    import json
    from pathlib import Path

    fixture = json.loads((Path(__file__).parent / "fixtures" / "sim_events.json").read_text())
    s = bm.Simulation(fixture["length"], **fixture["options"])
    assert s.run_until("concluded") == "reached"
    assert [e.as_dict() for e in s.events] == fixture["events"]
    errors = [e for e in s.events if e.type == "BLOCK_JOB_ERROR"]
    assert {e.error for e in errors} == {"io", "95", "nospace"}, "names, never the human message"


def test_fault_rules_are_the_file_mirrors_dialect() -> None:
    # One rule form everywhere (docs/faults.md): nth counts from 1 among the matching ops.
    def errors(**rule: object) -> list[tuple[str, int]]:
        s = sim(on_target_error="ignore", on_source_error="ignore", faults=[rule])
        assert s.run_until("ready") == "reached"
        return [(e.operation, e.offset) for e in s.events if e.type == "BLOCK_JOB_ERROR"]
    third_write = errors(side="target", op="write", nth=3, error="io")
    assert len(third_write) == 1 and third_write[0][0] == "write"
    assert errors(side="target", nth=3) == third_write  # op "any": the first target ops are writes
    assert errors(side="target", op=2) == third_write  # the older spelling: op counted from 0
    assert len(errors(side="source", op="read", nth=2, count=3)) == 3
    assert errors(side="target", op="flush", nth=5) == []  # no fifth flush before ready
    for bad in (dict(nth=0), dict(op="bogus"), dict(op=1, nth=1), dict(side="target", when=1)):
        with pytest.raises(bm.InvalidArgument):
            sim(faults=[bad])


def test_sweeps_reuse_one_thread_pool():
    """Back-to-back sweeps with the same thread count run on the same threads (a notebook
    sweeps many times); another count replaces the pool instead of adding one."""
    import os

    def sweep_threads():
        tids = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    if f.read().startswith("blockmirror-swe"):
                        tids.add(tid)
            except FileNotFoundError:
                pass  # a thread that just ended
        return tids

    grid = [dict(length=1 << 20, granularity=65536, write_rate=0, until="ready")] * 4
    bm.sweep(grid, threads=2)
    first = sweep_threads()
    bm.sweep(grid, threads=2)
    assert sweep_threads() == first and len(first) >= 2
    bm.sweep(grid, threads=3)
    assert len(sweep_threads() - first) >= 3
