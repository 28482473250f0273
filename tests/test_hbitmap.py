"""blockmirror.HBitmap: behaviour by example, every error case, and a hypothesis state
machine against a pure-Python model."""

from __future__ import annotations

import copy
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import blockmirror as bm


def dirty(b: bm.HBitmap) -> list[int]:
    return list(b.iter_dirty())


# --- behaviour by example ---------------------------------------------------------------


def test_granularity_worked_example() -> None:
    b = bm.HBitmap(16, granularity=1)
    assert (b.size, b.granularity, b.granules) == (16, 1, 8)
    b.set(0, 9)
    assert b.get(9) and not b.get(10)
    assert b.count() == 10
    assert dirty(b) == [0, 2, 4, 6, 8]
    assert b.next_dirty(3) == 3
    assert b.next_zero(3) == 10
    assert b.next_zero(3, 5) is None
    assert b.next_dirty_area(5, 16, 100) == (5, 5)
    assert b.status(4, 12) == (True, 6)
    b.reset(2, 2)
    assert dirty(b) == [0, 4, 6, 8]


def test_empty_and_single_granule() -> None:
    empty = bm.HBitmap(0)
    assert empty.is_empty() and empty.count() == 0 and dirty(empty) == []
    assert empty.next_dirty(0) is None and empty.next_zero(0) is None
    assert empty.serialize(0, 0) == b""

    one = bm.HBitmap(1000, 10)
    one.set(999, 1)
    assert one.count() == 1024 and dirty(one) == [0]
    one.reset(0, 1000)  # runs to the end: allowed although 1000 is not a multiple of 1024
    assert one.is_empty()


def test_repr_eq_copy() -> None:
    b = bm.HBitmap(1 << 20, 16)
    b.set(70000, 1)
    assert repr(b) == "HBitmap(size=1048576, granularity=16, dirty_granules=1, count=65536)"
    c = b.copy()
    assert c == b and c is not b
    c.set(0, 1)
    assert c != b and not b.get(0)
    assert copy.copy(b) == b
    assert bm.HBitmap(10, 0) != bm.HBitmap(10, 1)


def test_iterator_reads_the_bitmap_live() -> None:
    b = bm.HBitmap(1 << 16)
    for item in (10, 20, 30, 40000):
        b.set(item, 1)
    it = b.iter_dirty()
    assert iter(it) is it
    assert next(it) == 10
    b.reset(20, 1)  # reset ahead: never returned
    b.set(5, 1)  # behind: not seen by this iterator
    b.set(35, 1)  # ahead: seen
    assert list(it) == [30, 35, 40000]
    assert list(b.iter_dirty(21)) == [30, 35, 40000]
    assert list(b.iter_dirty(1 << 16)) == []


def test_serialization_round_trip_in_chunks() -> None:
    b = bm.HBitmap(5000 << 3, 3)
    for item in range(0, b.size, 7 << 3):
        b.set(item, 1)
    align = b.serialization_align()
    assert align == 64 << 3
    whole = b.serialize(0, b.size)
    assert len(whole) == b.serialization_size(0, b.size)
    restored = bm.HBitmap(b.size, 3)
    chunks = []
    for start in range(0, b.size, 2 * align):
        count = min(2 * align, b.size - start)
        data = b.serialize(start, count)
        chunks.append(data)
        restored.deserialize(start, count, data, finish=False)
    assert b"".join(chunks) == whole
    assert restored == b


def test_serialized_bytes_are_little_endian() -> None:
    b = bm.HBitmap(128)
    b.set(0, 1)
    b.set(9, 1)
    b.set(127, 1)
    assert b.serialize(0, 128) == bytes([1, 2] + [0] * 13 + [0x80])


def test_merge_and_truncate() -> None:
    fine = bm.HBitmap(100)
    fine.set(5, 1)
    fine.set(99, 1)
    coarse = bm.HBitmap(100, 4)
    coarse.merge(fine)
    assert dirty(coarse) == [0, 96]
    fine.merge(fine)  # merging with itself changes nothing
    assert dirty(fine) == [5, 99]

    coarse.truncate(10)
    assert coarse.count() == 16 and coarse.size == 10
    coarse.truncate(1000)
    assert dirty(coarse) == [0] and coarse.next_zero(0) == 16


def test_big_ranges_release_the_gil_and_stay_correct() -> None:
    b = bm.HBitmap(1 << 35, 9)  # 2**26 granules
    results: list[int] = []

    def work() -> None:
        b.set(0, 1 << 33)
        results.append(b.count())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results == [1 << 33]
    assert b.next_zero(0) == 1 << 33
    b.reset_all()
    assert b.is_empty()


# --- every error is InvalidArgument, never a crash ----------------------------------------


def test_error_messages_name_the_value() -> None:
    with pytest.raises(bm.InvalidArgument, match="granularity 1099511627776 is out of range"):
        bm.HBitmap(1, 1 << 40)
    with pytest.raises(bm.InvalidArgument, match="got -3"):
        bm.HBitmap(10).set(-3, 1)
    with pytest.raises(bm.InvalidArgument, match="not aligned"):
        bm.HBitmap(100, 2).reset(1, 4)


def test_error_class_tree() -> None:
    assert issubclass(bm.InvalidArgument, bm.BlockMirrorError)
    assert issubclass(bm.InvalidArgument, ValueError)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bm.HBitmap(1, 64),
        lambda: bm.HBitmap(1, 1 << 40),
        lambda: bm.HBitmap(-1),
        lambda: bm.HBitmap(1 << 64),
        lambda: bm.HBitmap(1, -1),
        lambda: bm.HBitmap((1 << 64) - 1, 0),  # more than 2**41 granules
    ],
)
def test_bad_construction(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(bm.InvalidArgument):
        make()


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.set(-1, 1),
        lambda b: b.set(0, -1),
        lambda b: b.set(1000, 1),
        lambda b: b.set(999, 2),
        lambda b: b.set(1 << 64, 1),
        lambda b: b.set(1 << 70, 1),
        lambda b: b.reset(1, 8),
        lambda b: b.reset(8, 3),
        lambda b: b.reset(992, 16),
        lambda b: b.get(-5),
        lambda b: b.next_dirty(-1),
        lambda b: b.next_zero(0, -1),
        lambda b: b.next_dirty_area(0, -1, 5),
        lambda b: b.status(0, 0),
        lambda b: b.status(990, 20),
        lambda b: b.iter_dirty(-1),
        lambda b: b.serialize(1, 8),
        lambda b: b.serialize(0, 100),
        lambda b: b.serialize(0, 2000),
        lambda b: b.serialization_size(3, 512),
        lambda b: b.deserialize(0, 512, b"\0" * 7),
        lambda b: b.deserialize(0, 512, b"\0" * 16),
        lambda b: b.deserialize(8, 512, b"\0" * 8),
        lambda b: b.merge(bm.HBitmap(1001, 3)),
        lambda b: b.truncate(-1),
        lambda b: b.truncate((1 << 64) - 1 - 7),
    ],
)
def test_bad_arguments(call) -> None:  # type: ignore[no-untyped-def]
    b = bm.HBitmap(1000, 3)
    b.set(0, 16)
    before = b.copy()
    with pytest.raises(bm.InvalidArgument):
        call(b)
    assert b == before, "a refused call changes nothing"


def test_a_size_too_big_for_memory_is_an_error_not_a_crash() -> None:
    try:
        b = bm.HBitmap(1 << 41)  # 256 GiB of bottom level
    except bm.InvalidArgument as error:
        assert "allocate" in str(error)
    else:  # memory is overcommitted here: mapped lazily
        assert b.granules == 1 << 41


def test_not_serializable_granularity() -> None:
    b = bm.HBitmap(1 << 62, 58)
    with pytest.raises(bm.InvalidArgument):
        b.serialization_align()
    with pytest.raises(bm.InvalidArgument):
        b.serialize(0, 1 << 62)


def test_wrong_types_are_invalid_argument_or_type_errors() -> None:
    b = bm.HBitmap(10)
    with pytest.raises(bm.InvalidArgument):  # the one integer convention (test_arguments.py)
        b.set("0", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.merge(object())  # type: ignore[arg-type]


# --- hypothesis: the binding against a pure-Python model --------------------------------


class Model:
    """One bool per granule; every query a scan."""

    def __init__(self, size: int, granularity: int) -> None:
        self.size = size
        self.g = granularity
        self.bits = [False] * (0 if size == 0 else ((size - 1) >> granularity) + 1)

    def item(self, index: int) -> int:
        return self.size if index >= len(self.bits) else index << self.g

    def fill(self, start: int, count: int, value: bool) -> None:
        if count:
            for i in range(start >> self.g, ((start + count - 1) >> self.g) + 1):
                self.bits[i] = value

    def find(self, start: int, count: int | None, value: bool) -> int | None:
        end = self.size if count is None else min(self.size, start + count)
        if start >= self.size or count == 0:
            return None
        for i in range(start >> self.g, len(self.bits)):
            if self.bits[i] == value:
                item = max(self.item(i), start)
                return item if item < end else None
        return None


class HBitmapMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.b: bm.HBitmap | None = None
        self.m: Model | None = None

    @precondition(lambda self: self.b is None)
    @rule(granules=st.sampled_from([1, 3, 63, 64, 65, 130, 4097]), g=st.integers(0, 5), cut=st.integers(0, 31))
    def create(self, granules: int, g: int, cut: int) -> None:
        size = max(1, (granules << g) - cut % (1 << g))
        self.b = bm.HBitmap(size, g)
        self.m = Model(size, g)

    @precondition(lambda self: self.b is not None)
    @rule(a=st.integers(0, 1 << 20), n=st.integers(0, 300))
    def set(self, a: int, n: int) -> None:
        assert self.b is not None and self.m is not None
        start = a % self.m.size
        count = min(n, self.m.size - start)
        self.b.set(start, count)
        self.m.fill(start, count, True)

    @precondition(lambda self: self.b is not None)
    @rule(a=st.integers(0, 1 << 20), n=st.integers(0, 40))
    def reset(self, a: int, n: int) -> None:
        assert self.b is not None and self.m is not None
        first = a % len(self.m.bits)
        start = self.m.item(first)
        count = self.m.item(min(first + n, len(self.m.bits))) - start
        self.b.reset(start, count)
        self.m.fill(start, count, False)

    @precondition(lambda self: self.b is not None)
    @rule(new=st.integers(1, 1 << 13))
    def truncate(self, new: int) -> None:
        assert self.b is not None and self.m is not None
        self.b.truncate(new)
        self.m.size = new
        want = ((new - 1) >> self.m.g) + 1
        self.m.bits = (self.m.bits + [False] * want)[:want]

    @precondition(lambda self: self.b is not None)
    @rule()
    def round_trip(self) -> None:
        assert self.b is not None
        copy_ = bm.HBitmap(self.b.size, self.b.granularity)
        copy_.deserialize(0, self.b.size, self.b.serialize(0, self.b.size))
        assert copy_ == self.b

    @precondition(lambda self: self.b is not None)
    @rule(a=st.integers(0, 1 << 20), n=st.one_of(st.none(), st.integers(0, 500)))
    def searches(self, a: int, n: int | None) -> None:
        assert self.b is not None and self.m is not None
        start = a % (self.m.size + 1)
        assert self.b.next_dirty(start, n) == self.m.find(start, n, True)
        assert self.b.next_zero(start, n) == self.m.find(start, n, False)

    @invariant()
    def agrees(self) -> None:
        if self.b is None or self.m is None:
            return
        assert self.b.count() == sum(self.m.bits) << self.m.g
        assert dirty(self.b) == [i << self.m.g for i, bit in enumerate(self.m.bits) if bit]


TestHBitmapMachine = HBitmapMachine.TestCase
TestHBitmapMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
