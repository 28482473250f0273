# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: mirror a disk image while it is in use
#
# How do you copy a disk image to a new target while a guest keeps writing to it, and how
# do you know the copy is exact? This notebook creates a small image, mirrors it with a live
# `blockmirror.Mirror` while a guest thread writes through it, watches the progress and the
# events, completes the job (the guest switches to the target) and verifies every byte.

# %%
import hashlib
import random
import tempfile
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

import blockmirror as bm

MIB = 1 << 20
SIZE_BYTES = 32 * MIB
SPEED_BYTES_PER_SEC = 16 * MIB  # a speed limit, so the copy lasts long enough to watch
GUEST_WRITE_BYTES = 4096
GUEST_WRITES_PER_SEC = 100  # 100 x 64 KiB chunks dirtied: 6.4 MiB/s, well below the copy speed
rng = random.Random(1)  # seeded: the same image and the same guest writes every run

workdir = tempfile.TemporaryDirectory(prefix="blockmirror-quickstart-")
source = Path(workdir.name) / "source.img"
target = Path(workdir.name) / "target.img"

# The image: 16 MiB of random data, then a 16 MiB hole (sparse), like a half-used disk.
with open(source, "wb") as f:
    f.write(rng.randbytes(SIZE_BYTES // 2))
    f.truncate(SIZE_BYTES)
# What the guest's disk should hold; the guest thread updates it with every write.
expected = bytearray(source.read_bytes())
print(f"source {source.name}: {SIZE_BYTES / MIB:.0f} MiB")

# %% [markdown]
# The guest: a thread that writes small blocks at random offsets through the mirror,
# at a steady pace, until it is told to stop. `Mirror.write` writes the source and marks
# the range dirty, so the job copies it (again) later.

# %%
def guest(mirror, stop: threading.Event, writes: list) -> None:
    """Each entry of `writes`: (offset, data, monotonic time the write returned)."""
    start = time.monotonic()
    while not stop.is_set():
        offset = rng.randrange(SIZE_BYTES // GUEST_WRITE_BYTES) * GUEST_WRITE_BYTES
        data = rng.randbytes(GUEST_WRITE_BYTES)
        mirror.write(offset, data)
        expected[offset:offset + GUEST_WRITE_BYTES] = data
        writes.append((offset, data, time.monotonic()))
        # Pace the writes: sleep until the next one is due.
        due = start + len(writes) / GUEST_WRITES_PER_SEC
        time.sleep(max(0.0, due - time.monotonic()))

# %% [markdown]
# Start the mirror, start the guest, and watch the progress until the job is `ready`
# (the target has caught up; from now on the job keeps it in sync). The total can grow
# while the guest writes.

# %%
mirror = bm.Mirror(source, target, speed=SPEED_BYTES_PER_SEC)
stop_guest = threading.Event()
guest_writes: list[tuple[int, bytes, float]] = []
guest_thread = threading.Thread(target=guest, args=(mirror, stop_guest, guest_writes))
guest_thread.start()

started = time.monotonic()
with tqdm(total=SIZE_BYTES / MIB, unit="MiB", desc="mirroring",
          bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} MiB [{elapsed}]") as bar:
    while True:
        current, total = mirror.progress
        bar.total, bar.n = total / MIB, current / MIB
        bar.refresh()
        try:
            # Returns at READY; raises IoError or JobStateError if the job failed instead.
            mirror.wait_ready(timeout=0.05)
            break
        except TimeoutError:
            if time.monotonic() - started > 60:
                raise
    current, total = mirror.progress
    bar.total, bar.n = total / MIB, current / MIB
    bar.refresh()
time_to_ready_s = time.monotonic() - started
print(f"ready after {time_to_ready_s:.2f} s, {len(guest_writes)} guest writes so far, "
      f"progress {current / MIB:.1f} / {total / MIB:.1f} MiB")

# %% [markdown]
# Complete: the job holds new guest writes (quiesce), copies what is still dirty, flushes
# the target and pivots: the guest's disk is now the target, and later writes go there.
# The guest keeps writing through the switch-over, and a little after it: a write held at
# the quiesce lands on the target once the job has pivoted.

# %%
before_complete = time.monotonic()
result = mirror.complete(timeout=60)
after_complete = time.monotonic()
time.sleep(0.2)  # the guest writes on, now to the target only
stop_guest.set()
guest_thread.join()
print(f"status after complete: {mirror.status}; pivoted: {result.pivoted}")
during = [w for w in guest_writes if before_complete <= w[2] <= after_complete]
after = [w for w in guest_writes if w[2] > after_complete]
print(f"guest writes: {len(guest_writes) - len(during) - len(after)} before complete(), "
      f"{len(during)} during the switch-over, {len(after)} after it")
print(f"copied {result.bytes_copied / MIB:.1f} MiB: the {result.initial_bytes / MIB:.1f} MiB of "
      f"data the initial scan found (the hole needs no copy), plus "
      f"{result.recopied_bytes / MIB:.1f} MiB of chunks the guest's "
      f"{result.guest_bytes_written / MIB:.1f} MiB of writes dirtied")
for event in mirror.events:
    fields = {k: v for k, v in event.to_dict().items() if k not in ("type", "time_ns")}
    print(f"{event.time_ns / 1e9:7.3f} s  {event.type:20} {fields}")

# %% [markdown]
# Verify: after the pivot, `Mirror.read` reads the target. The target file must hold exactly
# what the guest wrote last, byte for byte, including the writes after the pivot. The
# source holds every write made before `complete()` and none made after it returned (the
# job never writes the source; after the pivot the guest does not either). A write that
# overlaps one made during the switch-over is not checked on the source: which side it
# reached depends on the instant of the pivot.

# %%
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]

through_mirror = mirror.read(0, SIZE_BYTES)
target_bytes = target.read_bytes()
source_bytes = source.read_bytes()
print("expected   ", sha256(expected))
print("target file", sha256(target_bytes))
print("via mirror ", sha256(through_mirror))
print("source file", sha256(source_bytes))
target_ok = target_bytes == expected == through_mirror
# The source: the last write before complete() at each block, unless a later write to the
# same block came during the switch-over or after it.
last_before = {}
for offset, data, returned in guest_writes:
    if returned < before_complete:
        last_before[offset] = data
unsure = {offset for offset, _, returned in guest_writes if returned >= before_complete}
source_ok = all(source_bytes[o:o + GUEST_WRITE_BYTES] == d
                for o, d in last_before.items() if o not in unsure)
after_not_on_source = sum(source_bytes[o:o + GUEST_WRITE_BYTES] != d for o, d, _ in after)
print(f"source: {len(last_before) - len(unsure & last_before.keys())} blocks checked; "
      f"{after_not_on_source} of {len(after)} writes after the pivot differ there (as they must)")
source_ok = source_ok and after_not_on_source == len(after)
assert target_ok and source_ok
mirror.close()  # stops the mirror's threads; the files stay

# %%
types = [e.type for e in result.events]
print(
    f"Answer: the guest wrote {len(guest_writes)} blocks of {GUEST_WRITE_BYTES // 1024} KiB "
    f"({len(guest_writes) * GUEST_WRITE_BYTES / MIB:.1f} MiB) while the {SIZE_BYTES // MIB} MiB "
    f"image was mirrored, {len(during)} of them during the switch-over and {len(after)} after "
    f"it; the job was ready after "
    f"{result.seconds_to_ready:.2f} s (BLOCK_JOB_READY {types.count('BLOCK_JOB_READY')}x), and "
    f"completed with {types.count('BLOCK_JOB_COMPLETED')} BLOCK_JOB_COMPLETED event. "
    f"The target {'equals' if target_ok else 'DIFFERS FROM'} the guest's last writes byte "
    f"for byte, and the source holds {'exactly' if source_ok else 'NOT'} the guest's writes "
    f"up to the switch-over (the job never writes it)."
)
workdir.cleanup()
