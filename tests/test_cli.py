"""The ``blockmirror`` command: argument errors, --json output, exit codes, Ctrl-C, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from blockmirror._progress import ProgressBar
from blockmirror.cli import main, parse_size
from _files_util import MiB, make_image, random_file, sha256, tmpfs


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "blockmirror", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("text,value", [("4096", 4096), ("64K", 65536), ("16M", 16 << 20),
                                        ("1G", 1 << 30), ("2KiB", 2048), ("3mb", 3 << 20)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_mirror_json_events_and_success(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, 16 * MiB, seed=50)
    r = run_cli("mirror", src, dst, "--json", "--granularity", "64K", "--buf-size", "8M")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types.count("BLOCK_JOB_READY") == 1
    done = [e for e in events if e["type"] == "BLOCK_JOB_COMPLETED"]
    assert len(done) == 1 and done[0]["pivoted"] is True and "error" not in done[0]
    assert "now in mirroring phase" in r.stderr and "pivoted" in r.stderr and "copied" in r.stderr
    assert sha256(src) == sha256(dst)


def test_finish_cancels_at_ready_for_a_consistent_copy(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 8 * MiB, seed=51)
    r = run_cli("mirror", src, dst, "--finish", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    done = [json.loads(l) for l in r.stdout.splitlines() if "BLOCK_JOB_COMPLETED" in l]
    assert done and done[0]["pivoted"] is False
    assert r.stderr == ""
    assert sha256(src) == sha256(dst)


@pytest.mark.parametrize("args", [
    ["mirror"],
    ["mirror", "a"],
    ["mirror", "a", "b", "--granularity", "abc"],
    ["mirror", "a", "b", "--sync", "bogus"],
    ["mirror", "a", "b", "--timeout", "-3"],
    ["frobnicate"],
])
def test_argument_errors_exit_2(args):
    assert main(args) == 2


def test_bad_values_and_files_exit_2(tmp_path, capsys):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=52)
    assert main(["mirror", src, str(tmp_path / "d1.img"), "--granularity", "3K"]) == 2
    assert main(["mirror", str(tmp_path / "missing.img"), str(tmp_path / "d2.img")]) == 2
    assert main(["mirror", src, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "granularity" in err and "missing.img" in err and "directory" in err
    assert not os.path.exists(tmp_path / "d1.img")


def test_failed_job_exits_1(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 8 * MiB, seed=53)
    with tmpfs(str(tmp_path / "small"), "2m") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root) for a real ENOSPC")
        r = run_cli("mirror", src, os.path.join(mnt, "dst.img"), "--json")
        assert r.returncode == 1
        assert "No space left on device" in r.stderr or "nospace" in r.stderr
        events = [json.loads(l) for l in r.stdout.splitlines()]
        assert any(e["type"] == "BLOCK_JOB_ERROR" and e["error"] == "nospace" for e in events)
        r = run_cli("mirror", src, os.path.join(mnt, "dst2.img"), "--on-target-error", "stop", "--quiet")
        assert r.returncode == 1 and "stopped" in r.stderr


def test_timeout_exits_1(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 16 * MiB, seed=54)
    r = run_cli("mirror", src, str(tmp_path / "dst.img"), "--speed", "1M", "--timeout", "0.5")
    assert r.returncode == 1 and "timed out" in r.stderr


def test_ctrl_c_cancels_cleanly_with_130(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 32 * MiB, seed=55)
    before = sha256(src)
    p = subprocess.Popen([sys.executable, "-m", "blockmirror", "mirror", src, dst, "--speed", "2M", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the job to start (its first event), then interrupt.
    first = p.stdout.readline()
    assert json.loads(first)["type"] == "JOB_STATUS_CHANGE"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "cancelled" in err
    assert "BLOCK_JOB_CANCELLED" in out
    assert sha256(src) == before


def test_progress_is_never_full_before_done():
    with open(os.devnull, "w") as sink:
        bar = ProgressBar("t", file=sink)
        bar.update(100, 100)
        assert bar._bar.n == 99 and bar._bar.total == 100
        assert "100%" not in str(bar._bar)
        bar.update(15000, 12000)  # the total grew
        assert bar._bar.total == 15000 and bar._bar.n == 14850
        assert "100%" not in str(bar._bar) and "99%" in str(bar._bar)
        bar.update(150, 150, done=True)
        assert bar._bar.n == 150
        bar.close()


def test_demo_runs_verifies_and_cleans_up(tmp_path):
    r = run_cli("demo", "--size", "48M", "--rate", "8M", "--in-sync-seconds", "0.3", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "verified: target == source" in r.stderr
    assert "now in mirroring phase" in r.stderr and "pivoted" in r.stderr
    assert "MiB/s" in r.stderr and "re-copied" in r.stderr
    assert os.listdir(tmp_path) == []


def test_version_and_module_entry_point():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("blockmirror ")
