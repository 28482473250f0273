"""The ``blockmirror`` command: argument errors, --json output, exit codes, Ctrl-C, demo."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from blockmirror import _progress
from blockmirror.cli import main, parse_size
from _files_util import MiB, make_image, random_file, sha256, tmpfs


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "blockmirror", *args], capture_output=True,
                          text=True, timeout=timeout)


def start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "blockmirror", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_json(p, type_):
    """Reads --json lines until one of ``type_`` (the job is then known to be at that point)."""
    seen = []
    for line in p.stdout:
        seen.append(json.loads(line))
        if seen[-1]["type"] == type_:
            return seen
    raise AssertionError(f"no {type_} event before the end: {seen}")


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("error: ")]


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
    ["mirror", "a", "b", "--timeout", "nan"],
    ["mirror", "a", "b", "--progress-interval", "-1"],
    ["mirror", "a", "b", "--max-in-flight", "0"],
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
        assert "os error" not in r.stderr  # the errno is said once
        events = [json.loads(l) for l in r.stdout.splitlines()]
        assert any(e["type"] == "BLOCK_JOB_ERROR" and e["error"] == "nospace" for e in events)
        # The created target does not keep the full filesystem full.
        assert os.listdir(mnt) == [] and "removed the partial target" in r.stderr
        r = run_cli("mirror", src, os.path.join(mnt, "dst2.img"), "--on-target-error", "stop")
        assert r.returncode == 1 and "stopped" in r.stderr
        # One stop is seen by every write in flight; it is printed once.
        assert len(error_lines(r.stderr)) == 1, r.stderr
        assert os.listdir(mnt) == []


def test_a_job_spinning_on_errors_obeys_timeout_and_counts_repeats(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 8 * MiB, seed=60)
    with tmpfs(str(tmp_path / "small"), "2m") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root) for a real ENOSPC")
        t0 = time.monotonic()
        r = run_cli("mirror", src, os.path.join(mnt, "dst.img"), "--on-target-error", "ignore",
                    "--timeout", "1")
        elapsed = time.monotonic() - t0
        assert r.returncode == 1 and "timed out after 1 s" in r.stderr
        # The timeout acts within a tick; the bound leaves room for a loaded machine and
        # Python's start-up, and is far below the tens of seconds a blocking wait took.
        assert elapsed < 10, elapsed
        lines = error_lines(r.stderr)
        assert lines[0].startswith("error: write at offset") and "nospace" in lines[0]
        assert len(lines) <= 3 and "the same error" in r.stderr, r.stderr[:2000]
        assert os.listdir(mnt) == []


def test_a_signal_acts_while_the_job_spins_on_errors(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 8 * MiB, seed=61)
    with tmpfs(str(tmp_path / "small"), "2m") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root) for a real ENOSPC")
        p = start_cli("mirror", src, os.path.join(mnt, "dst.img"), "--on-target-error", "ignore", "--json")
        wait_for_json(p, "BLOCK_JOB_ERROR")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        # Drain stdout in the background: a full pipe would block the CLI, not the test.
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, err[-2000:]
        assert time.monotonic() - t0 < 10
        assert os.listdir(mnt) == []


def test_timeout_exits_1(tmp_path):
    src = str(tmp_path / "src.img")
    random_file(src, 16 * MiB, seed=54)
    r = run_cli("mirror", src, str(tmp_path / "dst.img"), "--speed", "1M", "--timeout", "0.5")
    assert r.returncode == 1 and "timed out" in r.stderr


@pytest.mark.parametrize("sig,code,how", [(signal.SIGINT, 130, "interrupted"),
                                          (signal.SIGTERM, 143, "terminated")])
def test_a_signal_cancels_cleanly_and_removes_the_created_target(tmp_path, sig, code, how):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 32 * MiB, seed=55)
    before = sha256(src)
    p = start_cli("mirror", src, dst, "--speed", "2M", "--json", "--progress-interval", "0")
    # A progress event means the copy is under way (at 2 MiB/s it has seconds to go).
    wait_for_json(p, "progress")
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert f"cancelled ({how}" in err and "Traceback" not in err
    assert "BLOCK_JOB_CANCELLED" in out
    assert "removed the partial target" in err and not os.path.exists(dst)
    assert sha256(src) == before


def test_keep_partial_keeps_the_target_and_says_where(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 32 * MiB, seed=56)
    p = start_cli("mirror", src, dst, "--speed", "2M", "--json", "--progress-interval", "0", "--keep-partial")
    wait_for_json(p, "progress")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert f"partial target is kept at {dst}" in err and os.path.exists(dst)


def test_a_reused_target_is_never_removed(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 16 * MiB, seed=57)
    random_file(dst, 16 * MiB, seed=58)
    r = run_cli("mirror", src, dst, "--reuse", "--speed", "1M", "--timeout", "0.3")
    assert r.returncode == 1 and "timed out" in r.stderr
    assert os.path.exists(dst) and "partial" not in r.stderr


def test_progress_is_never_full_before_done():
    out = io.StringIO()
    bar = _progress.ProgressBar("t", file=out, tty=True)
    assert out.getvalue() == ""  # nothing drawn before the first update (no "0/1" frame)
    bar.update(100, 100)
    assert bar.percent() == 99 and "100%" not in bar.text()
    bar.update(15000, 12000)  # the total grew
    assert bar.percent() == 99 and "14.6 KiB of 14.6 KiB" in bar.text()
    bar.update(150, 150, done=True)
    assert bar.percent() == 100 and "100%" in out.getvalue().split("\r")[-1]
    bar.close()


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                    (16 << 20, "16.0 MiB"), (300 << 30, "300 GiB")])
def test_human_units(n, text):
    assert _progress.format_bytes(n) == text


def test_off_a_terminal_progress_is_plain_lines_and_json_has_progress_events(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 4 * MiB, seed=59)
    # stderr is a pipe here, not a terminal; at 4 MiB/s the copy takes about a second.
    r = run_cli("mirror", src, dst, "--json", "--speed", "4M", "--progress-interval", "0")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert "MB/s" not in r.stderr and "MiB/s" in r.stderr and "0.00/1.00" not in r.stderr
    assert "copied: 4.0 MiB in" in r.stderr  # the summary in human units
    types = [json.loads(l)["type"] for l in r.stdout.splitlines()]
    first_running, ready = types.index("JOB_STATUS_CHANGE"), types.index("BLOCK_JOB_READY")
    assert "progress" in types[first_running:ready]
    progress = [json.loads(l) for l in r.stdout.splitlines() if '"progress"' in l]
    assert all(e["total"] >= e["current"] >= 0 and e["status"] for e in progress)


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


def test_help_explains_the_modes_policies_exit_codes_and_unseen_writes():
    r = run_cli("mirror", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for needle in ["full = everything", "top = only", "none = only writes", "write-blocking = once",
                   "ignore = log it", "stop = pause", "enospc = stop", "exit codes:", "130", "143",
                   "must not be written by any other program", "--keep-partial"]:
        assert needle in text, needle
    assert "the guest may keep writing" not in text


@pytest.mark.parametrize("flag,value", [("--granularity", "99999999999999999999"),
                                        ("--max-in-flight", "-1"),
                                        ("--speed", "18446744073709551616"),
                                        ("--max-io", "20000000000000000000000")])
def test_values_out_of_range_are_bad_arguments_not_tracebacks(tmp_path, flag, value):
    src = str(tmp_path / "src.img")
    random_file(src, MiB, seed=62)
    r = run_cli("mirror", src, str(tmp_path / "dst.img"), flag, value)
    assert r.returncode == 2 and "Traceback" not in r.stderr and flag in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "dst.img")


def test_a_large_granularity_derives_max_io(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 8 * MiB, seed=63)
    r = run_cli("mirror", src, dst, "--granularity", "2M", "--quiet")
    assert r.returncode == 0, r.stderr
    assert sha256(src) == sha256(dst)


def test_messages_use_the_flag_names(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, MiB, seed=64)
    random_file(dst, MiB, seed=65)
    r = run_cli("mirror", src, dst)
    assert r.returncode == 2 and "--reuse" in r.stderr and "reuse=True" not in r.stderr
    r = run_cli("mirror", src, str(tmp_path / "d.img"), "--max-io", "1000")
    assert r.returncode == 2 and "--max-io" in r.stderr and "max_io" not in r.stderr
    r = run_cli("mirror", str(tmp_path / "missing.img"), str(tmp_path / "d.img"))
    assert r.returncode == 2 and "No such file" in r.stderr
    assert "os error" not in r.stderr and "Errno" not in r.stderr  # the errno said once


@pytest.mark.parametrize("args", [["--sync", "none"], ["--sync", "none", "--reuse"],
                                  ["--sync", "top", "--reuse"], ["--sync", "top", "--target-holds-base"]])
def test_sync_modes_that_would_leave_old_data_are_refused(tmp_path, args):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 2 * MiB, seed=66)
    if "--reuse" in args:
        random_file(dst, 2 * MiB, seed=67)
    before = sha256(dst) if os.path.exists(dst) else None
    r = run_cli("mirror", src, dst, *args)
    assert r.returncode == 2, r.stderr
    assert "--target-holds-base" in r.stderr and "new image" not in r.stderr
    assert (sha256(dst) if os.path.exists(dst) else None) == before


def test_sync_top_into_a_target_holding_the_base(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(src, 8 * MiB, seed=68, mix=(0.5, 0.0))
    with open(dst, "wb") as f:
        f.truncate(8 * MiB)  # reads as zeroes, as the source's holes do
    r = run_cli("mirror", src, dst, "--sync", "top", "--reuse", "--target-holds-base")
    assert r.returncode == 0, r.stderr
    assert "on the word of --target-holds-base" in r.stderr
    assert sha256(src) == sha256(dst)


def test_a_source_written_by_another_program_fails_the_run(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 16 * MiB, seed=69)
    p = start_cli("mirror", src, dst, "--speed", "4M", "--json", "--progress-interval", "0")
    wait_for_json(p, "progress")  # the copy is under way: 4 s to go
    with open(src, "r+b") as f:  # another program writes the source (like dd conv=notrunc)
        f.seek(8 * MiB)
        f.write(b"unseen" * 1000)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "modified during the mirror by another program" in err
    assert "new image" not in err and "the guest may keep writing" not in err


def test_ready_message_does_not_promise_a_guest(tmp_path):
    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 2 * MiB, seed=72)
    r = run_cli("mirror", src, dst)
    assert r.returncode == 0, r.stderr
    assert "now in mirroring phase" in r.stderr and "guest" not in r.stderr


def test_blockmirror_aio_after_a_bare_import():
    r = subprocess.run([sys.executable, "-c", "import blockmirror; print(blockmirror.aio.Mirror.__name__)"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "Mirror", r.stderr


def test_demo_that_cannot_converge_stops_at_its_time_limit(tmp_path):
    # 32 MiB at 4 MiB/s cannot be copied within the 1 s limit, whatever the machine's speed.
    r = run_cli("demo", "--size", "32M", "--speed", "4M", "--rate", "16M", "--time-limit", "1",
                "--dir", str(tmp_path))
    assert r.returncode == 1, r.stderr
    assert "not ready after 1 s" in r.stderr and "--auto-converge" in r.stderr
    assert os.listdir(tmp_path) == []


def test_demo_auto_converge_gets_ready_when_the_guest_outpaces_the_copy(tmp_path):
    r = run_cli("demo", "--size", "16M", "--speed", "4M", "--rate", "16M", "--auto-converge",
                "--not-converging-window", "0.5", "--in-sync-seconds", "0.1", "--time-limit", "60",
                "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "verified: target == source" in r.stderr and "auto-converge" in r.stderr


def test_sigterm_ends_the_demo_and_removes_its_files(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "blockmirror", "demo", "--size", "64M", "--speed", "4M",
                          "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # the guest is writing and the copy (16 s at 4 MiB/s) under way
        if line.startswith("guest writing"):
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "cancelled (terminated)" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_on_a_terminal_the_bar_is_redrawn_in_place(tmp_path):
    import pty

    src, dst = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    random_file(src, 4 * MiB, seed=73)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "blockmirror", "mirror", src, dst, "--speed", "4M"],
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "\rmirror: " in text and "MiB/s" in text and "100%" in text


def test_the_report_names_an_auto_converge_switch():
    import io

    import blockmirror as bm
    from blockmirror._report import Reporter

    err = io.StringIO()
    report = Reporter(json_out=None, quiet=True, err=err)
    report.quiet = False  # phase lines on, no progress bar
    report.event(bm.Event("BLOCK_JOB_AUTO_CONVERGE", time_ns=1, trigger="dirty_rate", dirty_bytes=1,
                          dirty_bytes_per_sec=2, copy_bytes_per_sec=2))
    assert "switched to write-blocking" in err.getvalue()


def test_demo_serve_writes_over_nbd_verifies_and_cleans_up(tmp_path):
    r = run_cli("demo", "--serve", "--size", "32M", "--rate", "8M", "--in-sync-seconds", "0.3",
                "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "over NBD at nbd+unix:///disk?socket=" in r.stderr and "/nbd.sock" in r.stderr
    assert "BLOCK_JOB_READY" in r.stderr and "BLOCK_JOB_COMPLETED" in r.stderr
    assert "verified: the export after the switch-over == the target == what the guest wrote" in r.stderr
    assert os.listdir(tmp_path) == []


def test_demo_serve_quiet_still_names_the_export(tmp_path):
    r = run_cli("demo", "--serve", "--quiet", "--size", "16M", "--copy-mode", "write-blocking",
                "--in-sync-seconds", "0.1", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "verified:" in r.stderr and "served at nbd+unix:///disk?socket=" in r.stderr
    assert "BLOCK_JOB_READY" not in r.stderr


def test_demo_serve_with_fio_as_the_guest(tmp_path):
    r = run_cli("demo", "--serve", "--guest", "fio", "--size", "32M", "--rate", "8M", "--in-sync-seconds", "0.3",
                "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "fio verified its writes" in r.stderr and "written by the fio guest" in r.stderr
    assert os.listdir(tmp_path) == []


def test_demo_guest_fio_needs_serve():
    r = run_cli("demo", "--guest", "fio")
    assert r.returncode == 2 and "--serve" in r.stderr


def test_demo_serve_that_cannot_converge_stops_at_its_time_limit(tmp_path):
    r = run_cli("demo", "--serve", "--size", "32M", "--speed", "4M", "--rate", "16M", "--time-limit", "1",
                "--dir", str(tmp_path))
    assert r.returncode == 1, r.stderr
    assert "not ready after 1 s" in r.stderr and "--auto-converge" in r.stderr
    assert os.listdir(tmp_path) == []


def test_sigterm_ends_the_served_demo_and_removes_its_files(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "blockmirror", "demo", "--serve", "--size", "64M", "--speed", "4M",
                          "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # the guest is writing over NBD and the copy (16 s at 4 MiB/s) under way
        if line.startswith("drive-mirror"):
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "cancelled (terminated)" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []
