"""One integer convention: a negative, too large or non-integer argument anywhere raises
``bm.InvalidArgument`` (a ValueError); ``timeout=`` expiry raises ``bm.Timeout`` (also a
builtin TimeoutError)."""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest

import blockmirror as bm

MIB = 1 << 20
BAD_INTS = [-1, 1 << 64, 1.5, "4096", None]
BAD_IDS = ["negative", "2**64", "float", "str", "None"]


def _job() -> bm.MirrorJob:
    j = bm.MirrorJob(MIB)
    j.start()
    return j


def _sim() -> bm.Simulation:
    return bm.Simulation(MIB)


@pytest.fixture
def files(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(os.urandom(MIB))
    return str(src), str(dst)


@pytest.fixture
def slow_files(tmp_path):
    """16 MiB of data: at 1 MiB/s a mirror of it runs for seconds."""
    src, dst = tmp_path / "slow-src.img", tmp_path / "slow-dst.img"
    src.write_bytes(os.urandom(16 * MIB))
    return str(src), str(dst)


# (name, call taking the bad value): every integer parameter of every entry point.
ENTRY_POINTS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("HBitmap(size)", lambda v, f: bm.HBitmap(v)),
    ("HBitmap(granularity)", lambda v, f: bm.HBitmap(64, v)),
    ("HBitmap.set", lambda v, f: bm.HBitmap(64).set(v, 1)),
    ("HBitmap.get", lambda v, f: bm.HBitmap(64).get(v)),
    ("HBitmap.next_dirty", lambda v, f: bm.HBitmap(64).next_dirty(0, v)),
    ("MirrorJob(length)", lambda v, f: bm.MirrorJob(v)),
    ("MirrorJob(granularity)", lambda v, f: bm.MirrorJob(MIB, granularity=v)),
    ("MirrorJob(buf_size)", lambda v, f: bm.MirrorJob(MIB, buf_size=v)),
    ("MirrorJob(max_in_flight)", lambda v, f: bm.MirrorJob(MIB, max_in_flight=v)),
    ("MirrorJob(speed)", lambda v, f: bm.MirrorJob(MIB, speed=v)),
    ("MirrorJob.start", lambda v, f: bm.MirrorJob(MIB).start(v)),
    ("MirrorJob.handle_guest_write", lambda v, f: _job().handle_guest_write(v, 1)),
    ("MirrorJob.handle_completion", lambda v, f: _job().handle_completion(v)),
    ("MirrorJob.handle_timeout", lambda v, f: _job().handle_timeout(v)),
    ("MirrorJob.set_speed", lambda v, f: _job().set_speed(v)),
    ("Simulation(length)", lambda v, f: bm.Simulation(v)),
    ("Simulation(granularity)", lambda v, f: bm.Simulation(MIB, granularity=v)),
    ("Simulation.run_until(max_steps)", lambda v, f: _sim().run_until("ready", max_steps=v)),
    ("Simulation.set_write_rate", lambda v, f: _sim().set_write_rate(v)),
    ("sweep(length)", lambda v, f: bm.sweep([{"length": v}])),
    ("sweep(threads)", lambda v, f: bm.sweep([{"length": MIB}], threads=v)),
    ("Mirror(granularity)", lambda v, f: bm.Mirror(*f, granularity=v)),
    ("Mirror(max_in_flight)", lambda v, f: bm.Mirror(*f, max_in_flight=v)),
    ("Mirror(speed)", lambda v, f: bm.Mirror(*f, speed=v)),
    ("mirror(buf_size)", lambda v, f: bm.mirror(*f, buf_size=v)),
    ("mirror(max_io)", lambda v, f: bm.mirror(*f, max_io=v)),
]
# None is a valid "not given" where the parameter is optional.
OPTIONAL = {"HBitmap.next_dirty", "Simulation.run_until(max_steps)", "sweep(threads)",
            "Simulation(granularity)"}


# Every (entry point, bad value) pair, but None where it means "not given".
BAD_CASES = [
    pytest.param(name, call, value, id=f"{name}-{value_id}")
    for name, call in ENTRY_POINTS
    for value, value_id in zip(BAD_INTS, BAD_IDS)
    if not (value is None and name in OPTIONAL)
]


@pytest.mark.parametrize("name,call,value", BAD_CASES)
def test_bad_ints_are_invalid_argument(name: str, call: Callable[[Any, Any], Any], value: Any, files) -> None:
    with pytest.raises(bm.InvalidArgument):
        call(value, files)
    assert issubclass(bm.InvalidArgument, ValueError)


@pytest.mark.parametrize("value", BAD_INTS[:4], ids=BAD_IDS[:4])
@pytest.mark.parametrize("method", ["write", "read", "set_speed"])
def test_live_mirror_methods_refuse_bad_ints(method: str, value: Any, files) -> None:
    with bm.Mirror(*files) as m:
        with pytest.raises(bm.InvalidArgument):
            if method == "write":
                m.write(value, b"x")
            elif method == "read":
                m.read(0, value)
            else:
                m.set_speed(value)


def test_get_past_the_end_is_invalid_argument() -> None:
    b = bm.HBitmap(64)
    b.set(0, 64)
    assert b.get(63)
    with pytest.raises(bm.InvalidArgument, match="out of range"):
        b.get(64)


def test_timeout_is_a_blockmirror_error_and_a_timeout_error() -> None:
    assert issubclass(bm.Timeout, bm.BlockMirrorError) and issubclass(bm.Timeout, TimeoutError)


@pytest.mark.parametrize("entry", ["Mirror.wait_ready", "Mirror.iter_events", "Mirror.complete", "mirror"])
def test_timeout_expiry_raises_bm_timeout(entry: str, slow_files) -> None:
    if entry == "mirror":
        with pytest.raises(bm.Timeout):
            bm.mirror(*slow_files, speed=MIB, timeout=0.05)
        return
    with bm.Mirror(*slow_files, speed=MIB) as m:
        with pytest.raises(bm.Timeout):
            if entry == "Mirror.wait_ready":
                m.wait_ready(timeout=0.05)
            elif entry == "Mirror.iter_events":
                for _ in m.iter_events(timeout=0.05):
                    pass
            else:
                m.wait_ready()  # then a cancel in ready drains at 1 MiB/s: not within 0 s
                m.write(0, os.urandom(4 * MIB))
                m.cancel(timeout=0)


@pytest.mark.parametrize("value", [-1, float("nan"), "1"])
@pytest.mark.parametrize("entry", ["Mirror.wait_ready", "Mirror.iter_events", "Mirror.cancel", "mirror"])
def test_bad_timeouts_are_invalid_argument(entry: str, value: Any, files) -> None:
    if entry == "mirror":
        with pytest.raises(bm.InvalidArgument):
            bm.mirror(*files, timeout=value)
        return
    with bm.Mirror(*files) as m:
        with pytest.raises(bm.InvalidArgument):
            if entry == "Mirror.wait_ready":
                m.wait_ready(timeout=value)
            elif entry == "Mirror.cancel":
                m.cancel(timeout=value)
            else:
                next(m.iter_events(timeout=value))
