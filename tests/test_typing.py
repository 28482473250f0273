"""The stubs and the package's signatures type the job options with ``Literal``: mypy
catches a wrong name before anything runs, and the literals are the core's names."""

from __future__ import annotations

import textwrap
import typing

import pytest

import blockmirror as bm
from blockmirror import _native, _types

mypy_api = pytest.importorskip("mypy.api")


def test_literals_are_the_cores_names() -> None:
    names = _native.OPTION_NAMES
    assert list(typing.get_args(_types.SyncMode)) == names["sync"]
    assert list(typing.get_args(_types.CopyMode)) == names["copy_mode"]
    assert list(typing.get_args(_types.ErrorPolicy)) == names["error_policy"]


def run_mypy(tmp_path, code: str) -> tuple[int, str]:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(code))
    out, err, status = mypy_api.run([
        "--strict", "--no-error-summary", "--hide-error-context", "--cache-dir", str(tmp_path / "cache"),
        str(path),
    ])
    return status, out + err


def test_mypy_catches_a_wrong_option_name(tmp_path) -> None:
    status, out = run_mypy(tmp_path, """\
        import blockmirror as bm

        bm.MirrorJob(1 << 20, copy_mode="nonsense")
        bm.Simulation(1 << 20, sync="half")
        bm.Mirror("src", "dst", on_target_error="shrug")
        bm.mirror("src", "dst", copy_mode="nonsense")
        bm.mirror("src", "dst", granularty=4096)
        bm.Mirror("src", "dst").set_copy_mode("fast")
        """)
    assert status == 1
    bad_lines = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert bad_lines == [3, 4, 5, 6, 7, 8], out


def test_mypy_accepts_the_right_names(tmp_path) -> None:
    status, out = run_mypy(tmp_path, """\
        import blockmirror as bm

        job = bm.MirrorJob(1 << 20, sync="top", copy_mode="write-blocking", on_target_error="enospc")
        job.set_copy_mode("background")
        result: bm.MirrorResult = bm.mirror("src", "dst", sync="full", copy_mode="background",
                                             on_source_error="ignore", granularity=4096, timeout=1.0)
        events: list[bm.Event] = list(result.events)
        """)
    assert status == 0, out
