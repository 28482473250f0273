//! Copy modes, sync modes and declarations, the speed limit, rates and convergence.

mod support;

use blockmirror_core::job::*;
use support::Harness;
use JobStatus::*;

const MIB: u64 = 1 << 20;

/// A tiny deterministic PRNG for workloads.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs a heavy guest workload: up to `writes_per_step` random 4 KiB writes per action
/// performed, 1 ms of virtual time per step. A guest has at most 8 writes waiting for their
/// acknowledgement (write-blocking makes it wait for the target). Returns the step at which
/// the job became ready.
fn heavy_writes(h: &mut Harness, steps: usize, writes_per_step: usize) -> Option<usize> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let length = h.job.config().length;
    for step in 0..steps {
        if h.job.status() == Ready {
            return Some(step);
        }
        for _ in 0..writes_per_step {
            let unacknowledged = h
                .pending
                .iter()
                .filter(|a| a.kind == ActionKind::GuestWrite)
                .count()
                + h.job
                    .ops()
                    .filter(|v| v.kind == OpViewKind::WaitingGuestWrite)
                    .count();
            if unacknowledged >= 8 {
                break;
            }
            let offset = rng.next() % (length - 4096);
            let byte = rng.next() as u8;
            h.guest_write(offset, &[byte; 4096]);
        }
        if !h.pending.is_empty() {
            h.perform(0);
        }
        h.advance_to(h.now + 1_000_000);
    }
    (h.job.status() == Ready).then_some(steps)
}

#[test]
fn write_blocking_converges_where_background_does_not() {
    let mut config = Harness::config(4 * MIB, 64 << 10);
    config.not_converging_window_ns = 100_000_000;
    config.max_in_flight = 2;
    let mut background = Harness::new(config.clone());
    background.start();
    assert_eq!(
        heavy_writes(&mut background, 3000, 8),
        None,
        "8 chunk-dirtying writes per step outrun the copy"
    );
    let episodes = background
        .events
        .iter()
        .filter(|e| matches!(e, Event::NotConverging { .. }))
        .count();
    assert!(
        (1..10).contains(&episodes),
        "once per episode, not per check: {episodes}"
    );
    let rates = background.job.rates();
    assert!(rates.dirty_bytes_per_sec > 0 && rates.copy_bytes_per_sec > 0);
    assert_eq!(
        rates.eta_ready_ns, None,
        "no ETA while the guest outruns the copy"
    );

    config.copy_mode = CopyMode::WriteBlocking;
    let mut active = Harness::new(config);
    active.start();
    assert!(
        heavy_writes(&mut active, 3000, 8).is_some(),
        "write-blocking reaches ready under the same load"
    );
    assert!(active.count(ActionKind::GuestWrite) > 0);
    assert!(!active
        .events
        .iter()
        .any(|e| matches!(e, Event::NotConverging { .. })));
    // Keep writing after ready, then complete: the target equals the source.
    heavy_writes(&mut active, 50, 3);
    active.job.complete().unwrap();
    active.drain();
    active.run_to_end();
    assert_eq!(active.source, active.target);
    let progress = active.job.progress();
    assert_eq!(progress.current, progress.total);
}

#[test]
fn switching_to_write_blocking_while_running_converges() {
    let mut config = Harness::config(4 * MIB, 64 << 10);
    config.max_in_flight = 2;
    let mut h = Harness::new(config);
    h.start();
    assert_eq!(heavy_writes(&mut h, 500, 8), None);
    h.job.set_copy_mode(CopyMode::WriteBlocking).unwrap();
    assert!(heavy_writes(&mut h, 5000, 8).is_some());
    h.job.set_copy_mode(CopyMode::Background).unwrap();
    h.job.cancel(false).unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

#[test]
fn write_blocking_orders_overlapping_writes_and_leaves_partial_dirty_chunks() {
    let mut config = Harness::config(MIB, 64 << 10);
    config.copy_mode = CopyMode::WriteBlocking;
    config.sync = SyncMode::None;
    let mut h = Harness::new(config);
    h.target.copy_from_slice(&h.source.clone());
    h.start();
    assert_eq!(
        h.pending.iter().map(|a| a.kind).collect::<Vec<_>>(),
        vec![ActionKind::Flush]
    );
    h.perform(0);
    assert_eq!(h.job.status(), Ready);
    // Two overlapping writes: the second waits for the first.
    let first = h.guest_write(1000, &[1; 100_000]);
    let second = h.guest_write(50_000, &[2; 10]);
    let (GuestWrite::Mirror(a), GuestWrite::Mirror(b)) = (first, second) else {
        panic!("mirrored")
    };
    assert_eq!(h.pending.iter().map(|x| x.op).collect::<Vec<_>>(), vec![a]);
    let views: Vec<OpViewKind> = h.job.ops().map(|v| v.kind).collect();
    assert_eq!(
        views,
        vec![OpViewKind::GuestWriting, OpViewKind::WaitingGuestWrite]
    );
    // Only chunk 1 (65536..131072) is fully covered by the first write; nothing was dirty.
    assert!(h.job.bitmap().is_empty());
    h.perform(0);
    assert_eq!(h.pending.iter().map(|x| x.op).collect::<Vec<_>>(), vec![b]);
    h.perform(0);
    // A guest write to a dirty chunk, partially covering it, leaves it dirty.
    h.job.set_copy_mode(CopyMode::Background).unwrap();
    h.job.pause().unwrap();
    h.guest_write(200_000, &[3; 10]);
    h.job.set_copy_mode(CopyMode::WriteBlocking).unwrap();
    h.guest_write(200_100, &[4; 10]);
    h.perform(0);
    assert!(
        h.job.bitmap().get(200_000),
        "partial write into a dirty chunk keeps it dirty"
    );
    h.job.resume().unwrap();
    h.drain();
    h.run_until(1000, |_| false);
    assert!(h.job.bitmap().is_empty());
    assert_eq!(h.source, h.target);
}

#[test]
fn sync_top_copies_only_declared_allocated_ranges() {
    let mut config = Harness::config(2 * MIB, 64 << 10);
    config.sync = SyncMode::Top;
    let mut h = Harness::new(config);
    h.job.declare(0, MIB, RangeState::Unallocated).unwrap();
    h.job
        .declare(256 << 10, 64 << 10, RangeState::Allocated)
        .unwrap();
    // A guest write before start into an unallocated range is still copied.
    h.guest_write(600_000, &[6; 10]);
    h.start();
    h.run_to_ready();
    let read_bytes: u64 = h
        .log
        .iter()
        .filter(|a| a.kind == ActionKind::Read)
        .map(|a| a.length)
        .sum();
    assert_eq!(read_bytes, MIB + (64 << 10) + (64 << 10));
    // Declarations after start clean untouched chunks only.
    h.guest_write(MIB + 5, &[7; 10]);
    assert!(h.job.declare(MIB, MIB, RangeState::Unallocated).is_ok());
    h.run_until(1000, |_| false);
    assert_eq!(
        &h.source[MIB as usize..MIB as usize + 20],
        &h.target[MIB as usize..MIB as usize + 20]
    );
}

#[test]
fn sync_full_skips_declared_zero_and_none_starts_clean() {
    let mut config = Harness::config(2 * MIB, 64 << 10);
    let mut h = Harness::new(config.clone());
    // Half a chunk declared zero is not skipped: only whole chunks are.
    h.job.declare(32 << 10, MIB, RangeState::Zero).unwrap();
    h.job.declare(0, 10, RangeState::Unallocated).unwrap();
    h.start();
    assert_eq!(
        h.job.dirty_bytes() + h.job.bytes_in_flight(),
        MIB + (64 << 10)
    );
    h.run_to_ready();

    config.sync = SyncMode::None;
    let mut h = Harness::new(config);
    h.job.declare(0, MIB, RangeState::Allocated).unwrap();
    h.start();
    assert!(h.pending.iter().all(|a| a.kind == ActionKind::Flush));
    h.run_to_ready();
    assert_eq!(h.count(ActionKind::Read), 0);
}

#[test]
fn speed_limit_holds_reads_to_the_quota_and_can_change() {
    let mut config = Harness::config(16 * MIB, 64 << 10);
    config.speed_bytes_per_sec = 10 * MIB; // 1 MiB per 100 ms slice
    config.max_io = 256 << 10;
    let mut h = Harness::new(config);
    h.start();
    let first_burst = h.count(ActionKind::Read);
    assert_eq!(first_burst, 4, "one slice's quota: four 256 KiB reads");
    while !h.pending.is_empty() {
        h.perform(0);
    }
    let timeout = h.job.poll_timeout().expect("a timer while throttled");
    assert_eq!(timeout, Nanos(SLICE_NS));
    h.advance_to(timeout.0 - 1);
    assert_eq!(h.count(ActionKind::Read), 4, "early timeouts are harmless");
    h.advance_to(timeout.0);
    assert_eq!(h.count(ActionKind::Read), 8);
    // 16 MiB at 10 MiB/s takes about 1.5 s of virtual time.
    h.run_to_ready();
    assert!((1_400_000_000..1_700_000_000).contains(&h.now), "{}", h.now);
    h.guest_write(0, &[1; 10]);
    h.job.set_speed(0).unwrap();
    h.drain();
    assert_eq!(h.job.poll_timeout(), None);
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

#[test]
fn out_of_order_completions_and_eta() {
    let mut config = Harness::config(8 * MIB, 64 << 10);
    config.max_io = 128 << 10;
    let mut h = Harness::new(config);
    h.start();
    let mut rng = XorShift(7);
    let mut steps = 0;
    while h.job.status() != Ready {
        let index = (rng.next() % h.pending.len() as u64) as usize;
        h.perform(index);
        h.advance_to(h.now + 100_000);
        steps += 1;
        if steps == 100 {
            let rates = h.job.rates();
            assert!(rates.copy_bytes_per_sec > 0);
            assert!(rates.eta_ready_ns.is_some());
        }
    }
    assert_eq!(h.job.rates().eta_ready_ns, Some(0));
    h.job.complete().unwrap();
    h.drain();
    while h.job.status() != Concluded {
        let index = (rng.next() % h.pending.len() as u64) as usize;
        h.perform(index);
    }
    assert_eq!(h.source, h.target);
}

#[test]
fn not_converging_window_zero_turns_the_event_off() {
    let mut config = Harness::config(4 * MIB, 64 << 10);
    config.not_converging_window_ns = 0;
    config.max_in_flight = 2;
    let mut h = Harness::new(config);
    h.start();
    assert_eq!(heavy_writes(&mut h, 1000, 8), None);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::NotConverging { .. })));
}

/// A log-append guest (4 KiB writes inside one 64 KiB chunk, two in flight at a time) in
/// write-blocking mode keeps that chunk owned or wanted by a guest write at every moment.
/// The background copy of the chunk's old dirt must still get its turn, or READY never
/// comes (QEMU's background iteration waits for conflicts on its first chunk for this).
#[test]
fn write_blocking_stream_on_a_dirty_chunk_does_not_starve_the_copy() {
    let mut config = Harness::config(MIB, 64 << 10);
    config.copy_mode = CopyMode::WriteBlocking;
    let mut h = Harness::new(config);
    // Paused from the start: the stream owns chunk 0 before any copy could take it.
    h.job.pause().unwrap();
    h.start();
    let mut offset = 0u64;
    let mut became_ready = false;
    let mut resumed = false;
    for _ in 0..5000 {
        if h.job.status() == Ready {
            became_ready = true;
            break;
        }
        // Keep two writes unacknowledged at every moment.
        while h
            .job
            .ops()
            .filter(|v| {
                matches!(
                    v.kind,
                    OpViewKind::GuestWriting | OpViewKind::WaitingGuestWrite
                )
            })
            .count()
            < 2
        {
            h.guest_write(offset % (64 << 10), &[(offset / 4096) as u8; 4096]);
            offset += 4096;
        }
        if offset >= 3 * 4096 && !resumed {
            h.job.resume().unwrap();
            h.drain();
            resumed = true;
        }
        if !h.pending.is_empty() {
            h.perform(0);
        }
    }
    assert!(became_ready, "the stream starved the copy of its chunk");
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

/// A reservation must not outlive write-blocking mode: after a switch to background, a
/// background write newer than a held-back mirrored write must not be cleaned by a copy
/// that jumps ahead of that mirrored write (which then lands older data).
#[test]
fn a_switch_to_background_drops_the_reservation() {
    let mut config = Harness::config(MIB, 64 << 10);
    config.copy_mode = CopyMode::WriteBlocking;
    let mut h = Harness::new(config);
    h.job.pause().unwrap();
    h.start();
    let first = h.guest_write(0, &[1; 4096]);
    let second = h.guest_write(4096, &[2; 4096]);
    assert!(matches!(
        (first, second),
        (GuestWrite::Mirror(_), GuestWrite::Mirror(_))
    ));
    h.job.resume().unwrap();
    h.drain();
    // Every other chunk is being copied; chunk 0 is busy: the job reserves it.
    let third = h.guest_write(0, &[3; 4096]);
    assert!(matches!(third, GuestWrite::Mirror(_)));
    h.job.set_copy_mode(CopyMode::Background).unwrap();
    h.drain();
    assert_eq!(h.guest_write(100, &[4; 10]), GuestWrite::Acknowledge);
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}
