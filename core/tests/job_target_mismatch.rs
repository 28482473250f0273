//! `handle_target_mismatch`: a range a verify found different on the target is copied
//! again (in both copy modes, and while a switch-over is being asked for), and a job that
//! aborts or has ended refuses it without changing anything.

mod support;

use blockmirror_core::job::*;
use support::Harness;

const KIB: u64 = 1 << 10;
const LENGTH: u64 = 1 << 20;
const GRANULARITY: u64 = 64 * KIB;

fn ready_job(copy_mode: CopyMode) -> Harness {
    let mut config = Harness::config(LENGTH, GRANULARITY);
    config.copy_mode = copy_mode;
    let mut h = Harness::new(config);
    h.start();
    h.run_to_ready();
    assert_eq!(h.target, h.source);
    h
}

/// Damages the target behind the job's back, as an outside writer would.
fn damage(h: &mut Harness, at: u64) {
    h.target[at as usize] ^= 0xFF;
    assert_ne!(h.target, h.source);
}

#[test]
fn a_reported_mismatch_is_copied_again_in_both_copy_modes() {
    for mode in [CopyMode::Background, CopyMode::WriteBlocking] {
        let mut h = ready_job(mode);
        damage(&mut h, 300 * KIB + 5);
        assert_eq!(h.job.handle_target_mismatch(256 * KIB, 64 * KIB), Ok(true));
        h.drain();
        assert_eq!(h.job.dirty_bytes() + h.job.bytes_in_flight(), GRANULARITY, "{mode:?}");
        assert!(h.run_until(10_000, |h| h.job.dirty_bytes() == 0 && h.pending.is_empty()));
        assert_eq!(h.target, h.source, "{mode:?}: the damaged chunk was copied again");
        assert_eq!(h.job.status(), JobStatus::Ready, "it stays ready");
    }
}

#[test]
fn a_mismatch_reported_after_complete_is_copied_before_the_pivot() {
    let mut h = ready_job(CopyMode::Background);
    h.job.complete().unwrap();
    h.drain();
    damage(&mut h, 7);
    assert_eq!(h.job.handle_target_mismatch(0, 4096), Ok(true));
    h.drain();
    h.run_to_end();
    assert!(h.pivoted);
    assert_eq!(h.target, h.source);
}

#[test]
fn an_aborting_or_ended_job_refuses_and_bad_ranges_are_errors() {
    let mut h = ready_job(CopyMode::Background);
    assert_eq!(h.job.handle_target_mismatch(0, 0), Err(JobError::ZeroLength { offset: 0 }));
    assert!(matches!(h.job.handle_target_mismatch(LENGTH - 1, 2), Err(JobError::OutOfRange { .. })));
    h.job.cancel(true).unwrap();
    h.drain();
    assert_eq!(h.job.handle_target_mismatch(0, 4096), Ok(false));
    h.run_to_end();
    assert_eq!(h.job.handle_target_mismatch(0, 4096), Ok(false));
    assert_eq!(h.job.dirty_bytes(), 0);
}

#[test]
fn the_touch_watch_records_announced_writes_per_chunk() {
    let mut h = ready_job(CopyMode::WriteBlocking);
    // No watch: nothing is known.
    assert_eq!(h.job.take_guest_touches(0, 4096), Ok(true));
    assert!(h.job.watch_guest_touches());
    assert_eq!(h.job.take_guest_touches(0, LENGTH), Ok(false));
    // A write-blocking write announced, mirrored and cleaned leaves no dirt and no op,
    // but the watch has it (in whole chunks, looked at through any part of them).
    h.job.handle_guest_write_start(70 * KIB, 4096).unwrap();
    assert_eq!(h.job.take_guest_touches(64 * KIB + 100, 10), Ok(true));
    assert_eq!(h.job.take_guest_touches(64 * KIB, 64 * KIB), Ok(false), "the look cleared it");
    assert_eq!(h.job.take_guest_touches(0, 64 * KIB), Ok(false), "another chunk");
    h.job.stop_watching_guest_touches();
    assert_eq!(h.job.take_guest_touches(0, 4096), Ok(true));
}
