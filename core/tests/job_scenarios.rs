//! Scenario tests of the mirror job, modelled on QEMU's mirror test suite (iotests 041).

mod support;

use blockmirror_core::job::*;
use support::Harness;
use JobStatus::*;

const MIB: u64 = 1 << 20;

#[test]
fn complete_mirrors_and_pivots() {
    let mut h = Harness::new(Harness::config(4 * MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    assert_eq!(
        h.job.progress(),
        Progress {
            current: 4 * MIB,
            total: 4 * MIB
        }
    );
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
    assert!(h.pivoted);
    let (current, total, error, pivoted) = h.completed();
    assert_eq!(
        (current, total, error, pivoted),
        (4 * MIB, 4 * MIB, None, true)
    );
    assert_eq!(
        h.statuses(),
        vec![Running, Ready, Waiting, Pending, Concluded]
    );
    let names = h.type_names();
    let ready_at = names.iter().position(|n| *n == "BLOCK_JOB_READY").unwrap();
    assert_eq!(names[ready_at - 1], "JOB_STATUS_CHANGE");
    assert_eq!(names.iter().filter(|n| **n == "BLOCK_JOB_READY").count(), 1);
    // quiesce → flush → pivot, no un-quiesce after a pivot.
    let tail: Vec<ActionKind> = h
        .log
        .iter()
        .map(|a| a.kind)
        .filter(|k| !matches!(k, ActionKind::Read | ActionKind::Write))
        .collect();
    assert_eq!(
        tail,
        vec![
            ActionKind::Flush,
            ActionKind::Quiesce,
            ActionKind::Flush,
            ActionKind::Pivot
        ]
    );
    h.job.dismiss().unwrap();
    assert_eq!(h.job.status(), Null);
}

#[test]
fn every_read_is_at_most_max_io_and_issued_once_per_chunk() {
    let mut config = Harness::config(8 * MIB, 64 << 10);
    config.max_io = 256 << 10;
    let mut h = Harness::new(config);
    h.start();
    h.run_to_ready();
    let reads: Vec<&Action> = h
        .log
        .iter()
        .filter(|a| a.kind == ActionKind::Read)
        .collect();
    assert!(reads
        .iter()
        .all(|a| a.length <= 256 << 10 && a.offset % (64 << 10) == 0));
    assert_eq!(reads.iter().map(|a| a.length).sum::<u64>(), 8 * MIB);
    assert_eq!(reads.len(), 32);
}

#[test]
fn cancel_before_ready_is_cancelled() {
    let mut h = Harness::new(Harness::config(4 * MIB, 64 << 10));
    h.start();
    h.perform(0);
    h.perform(0);
    assert!(!h.pending.is_empty());
    h.job.cancel(false).unwrap();
    h.drain();
    assert_eq!(h.job.status(), Running, "drains in-flight ops first");
    h.run_to_end();
    assert!(matches!(h.last_end_event(), Some(Event::Cancelled { .. })));
    assert_eq!(h.statuses(), vec![Running, Aborting, Concluded]);
    assert!(h.job.ops().next().is_none());
    // A read completing during the abort is dropped, not written.
    assert_eq!(
        h.count(ActionKind::Write),
        2,
        "only the writes of the two reads done before the cancel"
    );
    assert!(h.job.complete().is_err());
}

#[test]
fn cancel_after_ready_completes_without_pivot() {
    let mut h = Harness::new(Harness::config(2 * MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    h.guest_write(12345, &[9; 5000]);
    h.job.cancel(false).unwrap();
    h.drain();
    assert_eq!(h.job.complete(), Err(JobError::CancelRequested));
    h.run_to_end();
    let (current, total, error, pivoted) = h.completed();
    assert_eq!(current, total);
    assert_eq!((error, pivoted), (None, false));
    assert!(!h.pivoted && !h.quiesced, "ends with the guest un-quiesced");
    assert_eq!(h.source, h.target);
    assert_eq!(
        h.statuses(),
        vec![Running, Ready, Waiting, Pending, Concluded]
    );
}

#[test]
fn force_cancel_after_ready_is_cancelled() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.perform(0); // the quiesce
    assert!(h.quiesced);
    h.job.cancel(true).unwrap();
    h.drain();
    h.run_to_end();
    assert!(matches!(h.last_end_event(), Some(Event::Cancelled { .. })));
    assert!(!h.quiesced, "a held guest is released before the end");
    assert!(!h.pivoted);
}

#[test]
fn cancel_in_created_concludes_at_once() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    h.job.cancel(false).unwrap();
    h.drain();
    assert_eq!(h.statuses(), vec![Aborting, Concluded]);
    assert!(h.log.is_empty());
}

#[test]
fn pause_waits_for_in_flight_and_makes_no_progress() {
    let mut h = Harness::new(Harness::config(8 * MIB, 64 << 10));
    h.start();
    for _ in 0..5 {
        h.perform(0);
    }
    h.job.pause().unwrap();
    h.drain();
    assert_eq!(h.job.status(), Running, "in-flight ops first");
    assert_eq!(
        h.job.pause(),
        Err(JobError::VerbNotAllowed {
            verb: Verb::Pause,
            status: Running
        })
    );
    let reads = h.count(ActionKind::Read);
    while !h.pending.is_empty() {
        h.perform(0);
    }
    assert_eq!(h.job.status(), Paused);
    assert_eq!(
        h.count(ActionKind::Read),
        reads,
        "no new copy after the pause request"
    );
    let progress = h.job.progress();
    h.advance_to(10_000_000_000);
    h.guest_write(0, &[1; 100]);
    assert!(h.pending.is_empty(), "nothing is issued while paused");
    assert_eq!(h.job.progress().current, progress.current);
    assert_eq!(
        h.job.pause(),
        Err(JobError::VerbNotAllowed {
            verb: Verb::Pause,
            status: Paused
        })
    );
    h.job.resume().unwrap();
    h.drain();
    assert_eq!(
        h.job.resume(),
        Err(JobError::VerbNotAllowed {
            verb: Verb::Resume,
            status: Running
        })
    );
    h.run_to_ready();
    h.job.pause().unwrap();
    h.drain();
    assert_eq!(h.job.status(), Standby);
    h.job.complete().unwrap();
    h.drain();
    assert!(h.pending.is_empty(), "complete in standby waits for resume");
    h.job.resume().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
    assert_eq!(
        h.statuses(),
        vec![Running, Paused, Running, Ready, Standby, Ready, Waiting, Pending, Concluded]
    );
}

#[test]
fn pause_before_start_pauses_at_start() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    h.job.pause().unwrap();
    h.start();
    assert_eq!(h.statuses(), vec![Running, Paused]);
    assert!(h.pending.is_empty());
    h.job.resume().unwrap();
    h.drain();
    h.run_to_ready();
}

#[test]
fn small_buffer_of_4k() {
    let mut config = Harness::config(MIB, 4096);
    config.buf_size = 4096;
    let mut h = Harness::new(config);
    h.start();
    assert_eq!(
        h.pending.len(),
        1,
        "one chunk of buffer: one copy at a time"
    );
    h.run_to_ready();
    assert!(h
        .log
        .iter()
        .filter(|a| a.kind == ActionKind::Read)
        .all(|a| a.length == 4096));
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

#[test]
fn buffer_rounds_up_to_a_chunk() {
    let mut config = Harness::config(MIB, 64 << 10);
    config.buf_size = 1000;
    let job = MirrorJob::new(config).unwrap();
    assert_eq!(job.config().buf_size, 64 << 10);
}

#[test]
fn large_granularity_and_unaligned_length() {
    let mut config = Harness::config(5 * MIB + 1234, MIB);
    config.max_io = 2 * MIB;
    let mut h = Harness::new(config);
    h.start();
    h.run_to_ready();
    let last = h
        .log
        .iter()
        .filter(|a| a.kind == ActionKind::Read)
        .map(|a| a.offset + a.length)
        .max()
        .unwrap();
    assert_eq!(
        last,
        5 * MIB + 1234,
        "the last run is clipped at the disk end"
    );
    assert_eq!(
        h.job.progress(),
        Progress {
            current: 5 * MIB + 1234,
            total: 5 * MIB + 1234
        }
    );
    h.guest_write(5 * MIB + 1000, &[3; 234]);
    let progress = h.job.progress();
    assert_eq!(
        progress.total - progress.current,
        1234,
        "the partial last chunk counts its real size"
    );
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

#[test]
fn zero_length_disk_goes_straight_to_ready() {
    let mut h = Harness::new(MirrorConfig::new(0));
    h.start();
    assert_eq!(h.statuses(), vec![Running, Ready]);
    assert!(h.pending.is_empty());
    assert_eq!(
        h.job.handle_guest_write(0, 1),
        Err(JobError::OutOfRange {
            offset: 0,
            length: 1,
            disk_length: 0
        })
    );
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.completed(), (0, 0, None, true));
}

#[test]
fn zero_reads_become_zero_writes_or_discards() {
    for discard in [false, true] {
        let mut config = Harness::config(MIB, 64 << 10);
        config.discard_reads_zero = discard;
        let mut h = Harness::new(config);
        h.source[..256 << 10].fill(0);
        h.start();
        h.run_to_ready();
        let expected = if discard {
            ActionKind::Discard
        } else {
            ActionKind::WriteZeroes
        };
        assert_eq!(h.count(expected), 1);
        assert_eq!(h.source, h.target);
    }
}

#[test]
fn guest_writes_racing_copies_are_never_lost() {
    let mut h = Harness::new(Harness::config(2 * MIB, 64 << 10));
    h.start();
    // Perform the read, then have the guest write into the same range before the write.
    let read = h.pending[0];
    h.perform(0);
    h.guest_write(read.offset + 10, &[42; 100]);
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.source, h.target);
}

#[test]
fn guest_writes_before_start_are_tracked() {
    let mut config = Harness::config(MIB, 64 << 10);
    config.sync = SyncMode::None;
    let mut h = Harness::new(config);
    h.target.copy_from_slice(&h.source.clone());
    h.guest_write(70_000, &[5; 10]);
    h.start();
    h.run_to_ready();
    assert_eq!(h.count(ActionKind::Read), 1);
    assert_eq!(h.source, h.target);
}

#[test]
fn a_cloned_job_is_a_deterministic_snapshot() {
    let mut h = Harness::new(Harness::config(2 * MIB, 64 << 10));
    h.start();
    for _ in 0..7 {
        h.perform(0);
    }
    let mut twin = h.job.clone();
    let pending = h.pending.clone();
    // Feed both the same completions and compare every output.
    for action in pending {
        let result = if action.kind == ActionKind::Read {
            OpResult::OkZeroes
        } else {
            OpResult::Ok
        };
        h.job.handle_completion(action.op, result).unwrap();
        twin.handle_completion(action.op, result).unwrap();
        loop {
            let (a, b) = (h.job.poll_action(), twin.poll_action());
            assert_eq!(a, b);
            if a.is_none() {
                break;
            }
        }
        loop {
            let (a, b) = (h.job.poll_event(), twin.poll_event());
            assert_eq!(a, b);
            if a.is_none() {
                break;
            }
        }
        assert_eq!(h.job.progress(), twin.progress());
        assert_eq!(h.job.bitmap(), twin.bitmap());
    }
}

#[test]
fn cancel_of_a_paused_job_resumes_it_to_finish() {
    // Before ready: paused → running → aborting, CANCELLED.
    let mut h = Harness::new(Harness::config(2 * MIB, 64 << 10));
    h.start();
    h.job.pause().unwrap();
    h.drain();
    h.run_until(1000, |_| false);
    assert_eq!(h.job.status(), Paused);
    h.job.cancel(false).unwrap();
    h.drain();
    assert_eq!(
        h.statuses(),
        vec![Running, Paused, Running, Aborting, Concluded]
    );
    assert!(matches!(h.last_end_event(), Some(Event::Cancelled { .. })));

    // In standby: a soft cancel resumes (standby → ready) and ends with COMPLETED.
    let mut h = Harness::new(Harness::config(2 * MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    h.job.pause().unwrap();
    h.drain();
    assert_eq!(h.job.status(), Standby);
    h.guest_write(0, &[1; 10]);
    h.job.cancel(false).unwrap();
    h.drain();
    h.run_to_end();
    assert!(matches!(h.completed(), (_, _, None, false)));
    assert_eq!(h.source, h.target);
    assert_eq!(
        h.statuses(),
        vec![Running, Ready, Standby, Ready, Waiting, Pending, Concluded]
    );
}

#[test]
fn soft_cancel_after_complete_drops_the_pivot() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.job.cancel(false).unwrap();
    h.drain();
    h.run_to_end();
    assert!(!h.pivoted);
    assert!(matches!(h.completed(), (_, _, None, false)));
}

#[test]
fn pause_while_the_guest_is_held_releases_it_first() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    h.start();
    h.run_to_ready();
    h.guest_write(0, &[1; 10]);
    h.job.complete().unwrap();
    h.drain();
    let quiesce = h
        .pending
        .iter()
        .position(|a| a.kind == ActionKind::Quiesce)
        .unwrap();
    h.perform(quiesce);
    assert!(h.job.is_guest_held());
    h.job.pause().unwrap();
    h.drain();
    h.run_until(1000, |_| false);
    assert_eq!(h.job.status(), Standby);
    assert!(
        !h.quiesced && !h.job.is_guest_held(),
        "a paused job does not hold the guest"
    );
    h.job.resume().unwrap();
    h.drain();
    h.run_to_end();
    assert!(h.pivoted);
    assert_eq!(h.source, h.target);
    let switch: Vec<ActionKind> = h
        .log
        .iter()
        .map(|a| a.kind)
        .filter(|k| {
            matches!(
                k,
                ActionKind::Quiesce | ActionKind::Unquiesce | ActionKind::Pivot
            )
        })
        .collect();
    use ActionKind::*;
    assert_eq!(switch, vec![Quiesce, Unquiesce, Quiesce, Pivot]);
}

#[test]
fn debug_output_is_a_summary() {
    let job = MirrorJob::new(MirrorConfig::new(1 << 40)).unwrap();
    let text = format!("{job:?}");
    assert!(text.starts_with("MirrorJob { status: Created"), "{text}");
    assert!(text.len() < 1000, "no bitmap words: {} bytes", text.len());
}
