//! The two-step guest-write protocol (`handle_guest_write_start` before the source write,
//! `handle_guest_write_landed` after it), step by step: overlapping writes own their chunks
//! before they land, so the source and the target see them in the same order.

use blockmirror_core::job::*;

const CHUNK: u64 = 4096;

/// A ready write-blocking job of four chunks, every action drained and completed.
fn ready_job() -> MirrorJob {
    let mut config = MirrorConfig::new(4 * CHUNK);
    config.granularity = CHUNK;
    config.max_io = CHUNK;
    config.copy_mode = CopyMode::WriteBlocking;
    let mut job = MirrorJob::new(config).unwrap();
    job.start(Nanos(0)).unwrap();
    drain(&mut job);
    assert_eq!(job.status(), JobStatus::Ready);
    job
}

/// Completes every queued action (reads return data); returns the guest-side actions.
fn drain(job: &mut MirrorJob) -> Vec<Action> {
    let mut guest_side = Vec::new();
    while let Some(action) = job.poll_action() {
        match action.kind {
            ActionKind::Admit => guest_side.push(action),
            ActionKind::GuestWrite => guest_side.push(action),
            _ => job.handle_completion(action.op, OpResult::Ok).unwrap(),
        }
    }
    while job.poll_event().is_some() {}
    guest_side
}

#[test]
fn an_overlapping_write_waits_until_the_first_has_reached_the_target() {
    let mut job = ready_job();
    let GuestWriteStart::Proceed(first) = job.handle_guest_write_start(0, CHUNK).unwrap() else {
        panic!("a free chunk admits at once")
    };
    // The second write may not touch the source while the first owns the chunk.
    let GuestWriteStart::Wait(second) = job.handle_guest_write_start(100, 200).unwrap() else {
        panic!("an owned chunk makes the newcomer wait")
    };
    assert!(
        drain(&mut job).is_empty(),
        "no admit before the first write is done"
    );
    assert_eq!(
        job.handle_guest_write_landed(second, OpResult::Ok),
        Err(JobError::UnknownOp(second)),
        "a waiting write may not land"
    );
    assert_eq!(
        job.handle_guest_write_landed(first, OpResult::Ok).unwrap(),
        GuestWrite::Mirror(first)
    );
    let actions = drain(&mut job);
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].kind, actions[0].op),
        (ActionKind::GuestWrite, first)
    );
    job.handle_completion(first, OpResult::Ok).unwrap();
    // Now the second may write the source: its admit names its range.
    let actions = drain(&mut job);
    assert_eq!(actions.len(), 1);
    let admit = actions[0];
    assert_eq!(
        (admit.kind, admit.op, admit.offset, admit.length),
        (ActionKind::Admit, second, 100, 200)
    );
    assert_eq!(
        job.handle_completion(second, OpResult::Ok),
        Err(JobError::LandingExpected(second)),
        "an admit is answered by the landing report"
    );
    assert_eq!(
        job.handle_guest_write_landed(second, OpResult::Ok).unwrap(),
        GuestWrite::Mirror(second)
    );
    assert_eq!(
        job.handle_guest_write_landed(second, OpResult::Ok),
        Err(JobError::UnknownOp(second)),
        "a write lands once"
    );
    let actions = drain(&mut job);
    assert_eq!(
        (actions[0].kind, actions[0].op),
        (ActionKind::GuestWrite, second)
    );
    job.handle_completion(second, OpResult::Ok).unwrap();
    assert!(job.bitmap().is_empty());
    assert_eq!(job.ops_in_flight(), 0);
    let progress = job.progress();
    assert_eq!(progress.current, progress.total);
}

#[test]
fn a_failed_source_write_dirties_its_range_and_is_not_mirrored() {
    let mut job = ready_job();
    let GuestWriteStart::Proceed(op) = job.handle_guest_write_start(CHUNK, CHUNK).unwrap() else {
        panic!("free chunk")
    };
    assert_eq!(
        job.handle_guest_write_landed(op, OpResult::OkZeroes),
        Err(JobError::BadResult {
            op,
            kind: "admit",
            result: "zeroes"
        })
    );
    assert_eq!(
        job.handle_guest_write_landed(op, OpResult::Failed(IoErrorKind::Io))
            .unwrap(),
        GuestWrite::Acknowledge
    );
    assert!(
        job.poll_event().is_none(),
        "the guest's own error is no job event"
    );
    let read = job
        .poll_action()
        .expect("the source may hold part of it: copy it again");
    assert_eq!(
        (read.kind, read.offset, read.length),
        (ActionKind::Read, CHUNK, CHUNK)
    );
}

#[test]
fn a_write_started_in_background_mode_holds_back_an_overlapping_mirrored_one() {
    let mut job = ready_job();
    job.set_copy_mode(CopyMode::Background).unwrap();
    let GuestWriteStart::Proceed(unowned) = job.handle_guest_write_start(0, 2 * CHUNK).unwrap()
    else {
        panic!("background writes never wait")
    };
    job.set_copy_mode(CopyMode::WriteBlocking).unwrap();
    // It could land after the newcomer's own landing and its clean: the newcomer waits.
    let GuestWriteStart::Wait(owned) = job.handle_guest_write_start(CHUNK, CHUNK).unwrap() else {
        panic!("an unowned write still landing there blocks it")
    };
    // A disjoint write goes at once.
    assert!(matches!(
        job.handle_guest_write_start(3 * CHUNK, CHUNK).unwrap(),
        GuestWriteStart::Proceed(_)
    ));
    assert!(drain(&mut job).is_empty());
    assert_eq!(
        job.handle_guest_write_landed(unowned, OpResult::Ok)
            .unwrap(),
        GuestWrite::Acknowledge,
        "an unowned landing only dirties"
    );
    // The waiting write now owns its chunk (still dirty, copied once it is done); the
    // other chunk the landing dirtied is copied at once.
    let mut actions = Vec::new();
    while let Some(action) = job.poll_action() {
        actions.push(action);
    }
    assert!(actions
        .iter()
        .any(|a| a.kind == ActionKind::Admit && a.op == owned));
    assert!(actions
        .iter()
        .any(|a| a.kind == ActionKind::Read && a.offset == 0 && a.length == CHUNK));
    assert!(job.bitmap().get(CHUNK));
}

#[test]
fn an_ended_job_tracks_no_write_and_writes_before_start_are_tracked() {
    let mut config = MirrorConfig::new(4 * CHUNK);
    config.granularity = CHUNK;
    config.sync = SyncMode::None;
    let mut job = MirrorJob::new(config).unwrap();
    let GuestWriteStart::Proceed(op) = job.handle_guest_write_start(0, 10).unwrap() else {
        panic!("before start: tracked, unowned")
    };
    assert_eq!(
        job.handle_guest_write_landed(op, OpResult::Ok).unwrap(),
        GuestWrite::Acknowledge
    );
    assert!(job.bitmap().get(0), "a write before start is copied");
    job.cancel(false).unwrap();
    assert_eq!(job.status(), JobStatus::Concluded);
    assert_eq!(
        job.handle_guest_write_start(0, 10).unwrap(),
        GuestWriteStart::Untracked
    );
    assert_eq!(
        job.handle_guest_write_start(4 * CHUNK, 1),
        Err(JobError::OutOfRange {
            offset: 4 * CHUNK,
            length: 1,
            disk_length: 4 * CHUNK
        })
    );
    assert_eq!(
        job.handle_guest_write_start(0, 0),
        Err(JobError::ZeroLength { offset: 0 })
    );
}

/// Found by the model: an aborting job waits for every op, so a guest that kept starting
/// tracked writes would keep it from ever concluding. It tracks none once it aborts.
#[test]
fn an_aborting_job_tracks_no_new_write_so_a_busy_guest_cannot_hold_it() {
    let mut job = ready_job();
    let GuestWriteStart::Proceed(landing) = job.handle_guest_write_start(0, 512).unwrap() else {
        panic!("free chunk")
    };
    job.cancel(true).unwrap();
    assert_eq!(job.handle_guest_write_start(CHUNK, 512).unwrap(), GuestWriteStart::Untracked);
    assert_ne!(job.status(), JobStatus::Concluded, "the write in progress holds the end back");
    assert_eq!(job.handle_guest_write_landed(landing, OpResult::Ok).unwrap(), GuestWrite::Acknowledge);
    drain(&mut job);
    assert_eq!(job.status(), JobStatus::Concluded);
}
