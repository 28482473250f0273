"""One event class for every face: MirrorJob, Simulation, Mirror, mirror() and the CLI's
--json give the same frozen ``blockmirror.Event`` with the core's fields (docs/events.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import blockmirror as bm

MIB = 1 << 20
# The fields of each type, in the core's order (Event::fields): the documented schema.
SCHEMA = {
    "JOB_STATUS_CHANGE": ["status"],
    "BLOCK_JOB_READY": ["current", "total"],
    "BLOCK_JOB_COMPLETED": ["current", "total", "error", "pivoted"],
    "BLOCK_JOB_CANCELLED": ["current", "total"],
    "BLOCK_JOB_ERROR": ["operation", "action", "offset", "length", "error"],
    "BLOCK_JOB_NOT_CONVERGING": ["dirty_bytes", "dirty_bytes_per_sec", "copy_bytes_per_sec"],
}


def check(event: bm.Event, clock: bool, count: bool = False) -> None:
    assert type(event) is bm.Event
    d = event.as_dict()
    assert event.to_dict() == {k: v for k, v in d.items() if v is not None}
    keys = ["type"] + (["time_ns"] if clock else []) + SCHEMA[event.type]
    if count and event.type == "BLOCK_JOB_ERROR":
        keys.append("count")
    assert list(d) == keys
    assert (event.time_ns is not None) == clock
    for k, v in d.items():
        assert getattr(event, k) == v
    with pytest.raises(AttributeError):
        event.status = "x"  # type: ignore[misc]


def test_mirror_job_events_have_no_clock() -> None:
    job = bm.MirrorJob(4 * MIB)
    job.start()
    events = []
    while (e := job.poll_event()) is not None:
        events.append(e)
    assert events and all(e.time_ns is None for e in events)
    for e in events:
        check(e, clock=False)


def test_simulation_events_have_virtual_time() -> None:
    s = bm.Simulation(4 * MIB, granularity=64 << 10, complete_on_ready=True,
                      faults=[{"side": "target", "nth": 2, "error": "nospace"}], on_target_error="ignore")
    assert s.run_until("concluded") == "reached"
    assert "BLOCK_JOB_ERROR" in [e.type for e in s.events]
    for e in s.events:
        check(e, clock=True)


def test_mirror_events_are_the_same_class(tmp_path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(os.urandom(MIB))
    result = bm.mirror(src, dst, on_target_error="ignore",
                       faults=[{"side": "target", "op": "write", "nth": 1, "error": "nospace"}])
    assert bm.MirrorEvent is bm.Event
    types = [e.type for e in result.events]
    assert "BLOCK_JOB_ERROR" in types and "BLOCK_JOB_COMPLETED" in types
    for e in result.events:
        check(e, clock=True, count=True)
    done = next(e for e in result.events if e.type == "BLOCK_JOB_COMPLETED")
    assert done.as_dict()["error"] is None and "error" not in done.to_dict() and done.pivoted is True


def test_cli_json_lines_are_to_dict(tmp_path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(os.urandom(MIB))
    r = subprocess.run([sys.executable, "-m", "blockmirror", "mirror", str(src), str(dst), "--json",
                        "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    events = [bm.Event(**d) for d in lines if d["type"] != "progress"]
    assert "BLOCK_JOB_COMPLETED" in [e.type for e in events]
    for e, d in zip(events, (d for d in lines if d["type"] != "progress")):
        assert e.to_dict() == d and d["time_ns"] >= 0
        assert set(d) - {"type", "time_ns", "count"} <= set(SCHEMA[e.type])


def test_event_built_from_values_compares_equal() -> None:
    a = bm.Event("BLOCK_JOB_READY", time_ns=5, current=1, total=2)
    assert a == bm.Event(type="BLOCK_JOB_READY", time_ns=5, current=1, total=2)
    assert hash(a) == hash(bm.Event("BLOCK_JOB_READY", time_ns=5, current=1, total=2))
    assert a.to_dict() == {"type": "BLOCK_JOB_READY", "time_ns": 5, "current": 1, "total": 2}
    assert a.pivoted is None and a.count is None
    with pytest.raises(TypeError):
        bm.Event("BLOCK_JOB_READY", bogus=1)
    assert not dataclasses.is_dataclass(a)
