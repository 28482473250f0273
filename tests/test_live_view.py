"""The live page's stream encoding (blockmirror._live_view): one snapshot, then deltas that
rebuild the sender's bitmap exactly, and far fewer bytes than the whole bitmap when little
changes; plus the bytes a real ``serve --web`` stream sends for a 1 GiB disk."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import zlib
from typing import Any, Dict, Iterator, List, Tuple

from hypothesis import given, settings, strategies as st

import blockmirror as bm
from blockmirror._live_view import BLOCK, WORD, JobView, Pacer, StreamEncoder, apply_delta, changed_runs

GiB = 1 << 30
MiB = 1 << 20
GRANULARITY = 64 * 1024


def state(bits: bytes, ops=(), job="job0", status="running", granularity=GRANULARITY) -> Dict[str, Any]:
    chunks = len(bits) * 8
    return {"job": job, "status": status, "current": 0, "total": chunks * granularity,
            "length": chunks * granularity, "granularity": granularity, "chunks": chunks,
            "dirty_bytes": 0, "bits": bits, "ops": list(ops)}


def flip(bits: bytes, chunks: List[int]) -> bytes:
    out = bytearray(bits)
    for k in chunks:
        out[k // 8] ^= 1 << (k % 8)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3 * BLOCK).flatmap(lambda n: st.tuples(st.binary(min_size=n, max_size=n),
                                                              st.lists(st.integers(0, 8 * n - 1), max_size=40))))
def test_the_changed_runs_turn_the_old_bitmap_into_the_new(case: Tuple[bytes, List[int]]) -> None:
    old, flips = case
    new = flip(old, flips)
    runs = changed_runs(old, new)
    rebuilt = bytearray(old)
    for start, end in runs:
        assert start % WORD == 0 and start < end <= len(new)
        rebuilt[start:end] = new[start:end]
    assert bytes(rebuilt) == new
    # Only words that changed are sent (a gap of one unchanged word may be bridged).
    changed_words = {k // (8 * WORD) for k in flips if old[k // 8] != new[k // 8]}
    sent_words = sum(-(-(end - start) // WORD) for start, end in runs)
    assert sent_words <= 2 * len(changed_words)


def replay(messages: List[Tuple[str, Dict[str, Any]]], bits: bytearray) -> bytearray:
    """What a page holds after these messages (as live.js applies them)."""
    for name, payload in messages:
        if name == "state":
            bits = bytearray(base64.b64decode(payload["bits"]))
        else:
            assert name == "delta"
            apply_delta(bits, payload["runs"])
        assert zlib.crc32(bits) == payload["crc"]
    return bits


def test_a_stream_sends_a_snapshot_then_deltas_that_rebuild_each_look() -> None:
    encoder = StreamEncoder()
    bits = bytes(2048)
    first = encoder.messages(JobView.from_state(state(bits)))
    assert [name for name, _ in first] == ["state"] and first[0][1]["seq"] == 1
    page = replay(first, bytearray())
    assert encoder.messages(JobView.from_state(state(bits))) == []  # nothing changed: nothing sent
    seq = 1
    for step in range(20):
        bits = flip(bits, [step * 613 % 16384, step * 4099 % 16384])
        ops = [(1, "reading", step * GRANULARITY, 2 * GRANULARITY)]
        messages = encoder.messages(JobView.from_state(state(bits, ops)))
        assert [name for name, _ in messages] == ["delta"]
        seq += 1
        assert messages[0][1]["seq"] == seq
        assert messages[0][1]["ops"] == [["reading", step, step + 2]]
        page = replay(messages, page)
        assert bytes(page) == bits
    # The same ops again are not resent.
    bits = flip(bits, [5])
    again = encoder.messages(JobView.from_state(state(bits, ops)))
    assert "ops" not in again[0][1]


def test_another_job_or_grid_starts_with_a_snapshot() -> None:
    encoder = StreamEncoder()
    encoder.messages(JobView.from_state(state(bytes(64))))
    assert encoder.messages(None) == [("state", {"job": None})]
    assert encoder.messages(None) == []
    assert encoder.messages(JobView.from_state(state(bytes(64))))[0][0] == "state"
    assert encoder.messages(JobView.from_state(state(bytes(64), job="job1")))[0][0] == "state"
    assert encoder.messages(JobView.from_state(state(bytes(128), job="job1")))[0][0] == "state"


def test_a_delta_that_would_cost_more_than_half_a_snapshot_is_a_snapshot() -> None:
    encoder = StreamEncoder()
    encoder.messages(JobView.from_state(state(bytes(2048))))
    messages = encoder.messages(JobView.from_state(state(os.urandom(2048))))
    assert messages[0][0] == "state"


def test_few_writes_to_a_1_gib_disk_send_far_less_than_its_bitmap() -> None:
    # 1 GiB at 64 KiB chunks: 16,384 chunks, a 2 KiB bitmap (2.7 KiB in base64).
    chunks = GiB // GRANULARITY
    bits = bytes(chunks // 8)
    encoder = StreamEncoder()
    snapshot = json.dumps(encoder.messages(JobView.from_state(state(bits)))[0][1])
    assert len(snapshot) > 2700
    for write in range(8):  # a few 256 KiB writes, scattered, each its own update
        first = write * 1999 % chunks
        bits = flip(bits, list(range(first, min(chunks, first + 4))))
        ops = [(write, "reading", first * GRANULARITY, 4 * GRANULARITY)]
        (name, payload), = encoder.messages(JobView.from_state(state(bits, ops)))
        assert name == "delta"
        assert len(json.dumps(payload)) < len(snapshot) // 5, payload


@given(st.lists(st.integers(0, 4 * MiB), min_size=1, max_size=60))
def test_the_pacer_holds_a_stream_to_its_bytes_per_second(sizes: List[int]) -> None:
    # A stream that has a message of these sizes ready at every look it is allowed.
    pacer = Pacer(0.15, MiB)
    now, sent = 0.0, []
    for size in sizes:
        sent.append((now, size))
        now = pacer.next_look(now, size)
    for i, (start, _) in enumerate(sent):
        for j in range(i, len(sent)):
            end = sent[j][0]
            window = sum(size for _, size in sent[i:j + 1])
            # All but the last message of the stretch were paid for within it.
            assert window - sent[j][1] <= MiB * (end - start) + 1e-6
            assert end - start >= 0.15 * (j - i) - 1e-9


def sse(stream) -> Iterator[Tuple[str, str]]:
    """(event name, data line) of each server-sent event."""
    name = ""
    for raw in stream:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, line[6:]


def test_a_real_stream_of_a_1_gib_disk_sends_the_bitmap_once(tmp_path) -> None:
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(GiB)  # sparse
    with bm.serve(image, socket=str(tmp_path / "nbd.sock"), web=("127.0.0.1", 0)) as server:
        # Only what the guest writes is copied, at a crawl: the writes stay dirty.
        server.execute("drive-mirror", {"job-id": "job0", "device": server.export, "target": str(tmp_path / "t.img"),
                                        "format": "raw", "sync": "none", "granularity": GRANULARITY,
                                        "speed": GRANULARITY})
        base = server.web_url.rsplit("/", 1)[0]
        with urllib.request.urlopen(base + "/events", timeout=60) as r, bm.NbdClient(server.uri) as client:
            events = sse(r)
            sizes: List[Tuple[str, int]] = []
            bits = bytearray()
            writes = 0
            for name, data in events:
                if name not in ("state", "delta"):
                    continue
                payload = json.loads(data)
                if payload.get("job") is None:
                    continue
                sizes.append((name, len(data)))
                bits = replay([(name, payload)], bits)
                if writes < 6:  # each write after the stream showed the last one
                    client.write((writes * 160 + 3) * MiB, os.urandom(128 * 1024))
                    client.flush()
                    writes += 1
                elif payload["dirty_chunks"] == 0 and len(sizes) > writes:
                    break
        assert sizes[0][0] == "state" and sizes[0][1] > 2700
        deltas = [size for name, size in sizes[1:] if name == "delta"]
        assert deltas and all(name == "delta" for name, _ in sizes[1:]), sizes
        assert max(deltas) < sizes[0][1] // 5, sizes


def test_a_real_stream_waits_after_a_large_message(tmp_path, monkeypatch) -> None:
    from blockmirror import _web
    monkeypatch.setattr(_web, "MAX_BYTES_PER_SEC", 1000)
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(GiB)
    with bm.serve(image, socket=str(tmp_path / "nbd.sock"), web=("127.0.0.1", 0)) as server:
        server.execute("drive-mirror", {"job-id": "job0", "device": server.export, "target": str(tmp_path / "t.img"),
                                        "format": "raw", "sync": "none", "granularity": GRANULARITY, "speed": 1})
        base = server.web_url.rsplit("/", 1)[0]
        started = time.monotonic()
        with urllib.request.urlopen(base + "/events", timeout=60) as r, bm.NbdClient(server.uri) as client:
            messages = ((name, json.loads(data)) for name, data in sse(r) if name in ("state", "delta"))
            name, snapshot = next((name, p) for name, p in messages if p.get("job") is not None)
            assert name == "state"
            client.write(0, os.urandom(GRANULARITY))  # something for a delta to say
            client.flush()
            name, delta = next(messages)
            elapsed = time.monotonic() - started
        assert name == "delta"
        # The snapshot's bytes at 1000 a second: the stream could not look again sooner (a
        # lower bound on time, which a slow machine only makes longer).
        assert elapsed >= len(json.dumps(snapshot)) / 1000, elapsed


def test_the_page_files_the_package_ships_are_all_there() -> None:
    from blockmirror import _web
    root = _web.packaged_root()
    assert _web.missing_files(root) == []
    for name in _web.LIVE_FILES:
        assert (root / name).read_bytes()
    # The page loads nothing else of its directory: every module it imports is listed.
    for name in ("live.js", "live_states.js", "grid.js", "format.js"):
        text = (root / name).read_text()
        for line in text.splitlines():
            if line.startswith("import ") and ' from "./' in line:
                assert line.split(' from "./')[1].split('"')[0] in _web.LIVE_FILES, line


def test_serving_the_page_without_its_files_is_refused_clearly(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BLOCKMIRROR_WWW", str(tmp_path / "nowhere"))
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(MiB)
    try:
        bm.serve(image, socket=str(tmp_path / "nbd.sock"), web=("127.0.0.1", 0)).close()
    except bm.InvalidArgument as e:
        assert "live.html" in str(e) and "BLOCKMIRROR_WWW" in str(e)
    else:
        raise AssertionError("served a page it does not have")
    assert not os.path.exists(tmp_path / "nbd.sock")


def test_the_cli_refuses_to_serve_a_page_it_does_not_have(tmp_path) -> None:
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(MiB)
    env = dict(os.environ, BLOCKMIRROR_WWW=str(tmp_path / "nowhere"))
    run = subprocess.run([sys.executable, "-m", "blockmirror", "serve", image, "--socket",
                          str(tmp_path / "nbd.sock"), "--web", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2, run
    assert "error: the live page's files are not in" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not os.path.exists(tmp_path / "nbd.sock")
