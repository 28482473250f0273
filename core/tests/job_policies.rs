//! Error policies on each side, flush failures, and bad input (QEMU 041 TestReadErrors /
//! TestWriteErrors and the verb checks).

mod support;

use blockmirror_core::job::*;
use support::Harness;
use JobStatus::*;

const MIB: u64 = 1 << 20;

/// A harness whose `nth` action of `kind` (0-based) fails once with `error`.
fn failing_once(config: MirrorConfig, kind: ActionKind, nth: usize, error: IoErrorKind) -> Harness {
    let mut h = Harness::new(config);
    let mut seen = 0;
    h.fault = Box::new(move |a: &Action| {
        if a.kind != kind {
            return None;
        }
        seen += 1;
        (seen == nth + 1).then_some(error)
    });
    h
}

fn config_with(source: ErrorPolicy, target: ErrorPolicy) -> MirrorConfig {
    let mut config = Harness::config(2 * MIB, 64 << 10);
    config.on_source_error = source;
    config.on_target_error = target;
    config
}

fn side_config(side: Operation, policy: ErrorPolicy) -> (MirrorConfig, ActionKind) {
    match side {
        Operation::Read => (config_with(policy, ErrorPolicy::Report), ActionKind::Read),
        _ => (config_with(ErrorPolicy::Report, policy), ActionKind::Write),
    }
}

#[test]
fn report_fails_the_job_on_either_side() {
    for side in [Operation::Read, Operation::Write] {
        let (config, kind) = side_config(side, ErrorPolicy::Report);
        let mut h = failing_once(config, kind, 3, IoErrorKind::Io);
        h.start();
        h.run_to_end();
        assert_eq!(
            h.errors(),
            vec![(side, ErrorAction::Report, IoErrorKind::Io)]
        );
        match h.last_end_event() {
            Some(Event::Completed {
                error: Some(IoErrorKind::Io),
                pivoted: false,
                current,
                total,
            }) => {
                assert!(current < total)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.job.error(), Some(IoErrorKind::Io));
        assert_eq!(h.statuses(), vec![Running, Aborting, Concluded]);
        assert!(h.pending.is_empty() && h.job.ops().next().is_none());
    }
}

#[test]
fn ignore_retries_and_still_completes() {
    for side in [Operation::Read, Operation::Write] {
        let (config, kind) = side_config(side, ErrorPolicy::Ignore);
        let mut h = failing_once(config, kind, 2, IoErrorKind::Other(61));
        h.start();
        h.run_to_ready();
        h.job.complete().unwrap();
        h.drain();
        h.run_to_end();
        assert_eq!(
            h.errors(),
            vec![(side, ErrorAction::Ignore, IoErrorKind::Other(61))]
        );
        assert!(matches!(h.completed(), (_, _, None, true)));
        assert_eq!(h.source, h.target);
    }
}

#[test]
fn stop_pauses_until_resume_and_retries() {
    for side in [Operation::Read, Operation::Write] {
        let (config, kind) = side_config(side, ErrorPolicy::Stop);
        let mut h = failing_once(config, kind, 1, IoErrorKind::Io);
        h.start();
        assert!(!h.run_until(100_000, |h| h.job.status() == Ready));
        assert_eq!(h.job.status(), Paused);
        assert_eq!(h.errors(), vec![(side, ErrorAction::Stop, IoErrorKind::Io)]);
        assert!(h.job.dirty_bytes() > 0, "the failed range stays dirty");
        h.job.resume().unwrap();
        h.drain();
        h.run_to_ready();
        h.job.complete().unwrap();
        h.drain();
        h.run_to_end();
        assert_eq!(h.source, h.target);
        assert_eq!(h.statuses()[..3], [Running, Paused, Running]);
    }
}

#[test]
fn enospc_stops_on_no_space_and_reports_anything_else() {
    for side in [Operation::Read, Operation::Write] {
        let (config, kind) = side_config(side, ErrorPolicy::Enospc);
        let mut h = failing_once(config.clone(), kind, 0, IoErrorKind::NoSpace);
        h.start();
        h.run_until(100_000, |_| false);
        assert_eq!(h.job.status(), Paused);
        assert_eq!(
            h.errors(),
            vec![(side, ErrorAction::Stop, IoErrorKind::NoSpace)]
        );

        let mut h = failing_once(config, kind, 0, IoErrorKind::ReadOnly);
        h.start();
        h.run_to_end();
        assert_eq!(
            h.errors(),
            vec![(side, ErrorAction::Report, IoErrorKind::ReadOnly)]
        );
        assert_eq!(h.job.error(), Some(IoErrorKind::ReadOnly));
    }
}

#[test]
fn errors_after_ready_keep_ready() {
    let mut h = failing_once(
        config_with(ErrorPolicy::Stop, ErrorPolicy::Ignore),
        ActionKind::Read,
        32,
        IoErrorKind::Io,
    );
    h.start();
    h.run_to_ready();
    let mut failed = false;
    h.fault = Box::new(move |a: &Action| {
        let fail = a.kind == ActionKind::Read && !failed;
        failed |= fail;
        fail.then_some(IoErrorKind::Io)
    });
    h.guest_write(0, &[1; 10]);
    h.run_until(1000, |_| false);
    assert_eq!(
        h.job.status(),
        Standby,
        "stop after ready pauses into standby, never running"
    );
    h.job.resume().unwrap();
    h.drain();
    h.run_until(1000, |_| false);
    assert_eq!(h.job.status(), Ready);
    assert_eq!(
        h.events
            .iter()
            .filter(|e| matches!(e, Event::Ready { .. }))
            .count(),
        1
    );
}

#[test]
fn failed_ready_flush_follows_the_target_policy() {
    // report: the job fails.
    let mut h = failing_once(
        config_with(ErrorPolicy::Report, ErrorPolicy::Report),
        ActionKind::Flush,
        0,
        IoErrorKind::Io,
    );
    h.start();
    h.run_to_end();
    assert_eq!(
        h.errors(),
        vec![(Operation::Write, ErrorAction::Report, IoErrorKind::Io)]
    );
    assert_eq!(h.job.error(), Some(IoErrorKind::Io));
    assert!(!h.events.iter().any(|e| matches!(e, Event::Ready { .. })));
    // ignore: flushed again, then ready.
    let mut h = failing_once(
        config_with(ErrorPolicy::Report, ErrorPolicy::Ignore),
        ActionKind::Flush,
        0,
        IoErrorKind::Io,
    );
    h.start();
    h.run_to_ready();
    assert_eq!(h.count(ActionKind::Flush), 2);
}

#[test]
fn failed_final_flush_unquiesces_and_retries_under_ignore() {
    let mut h = failing_once(
        config_with(ErrorPolicy::Report, ErrorPolicy::Ignore),
        ActionKind::Flush,
        1,
        IoErrorKind::Io,
    );
    h.start();
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    let kinds: Vec<ActionKind> = h
        .log
        .iter()
        .map(|a| a.kind)
        .filter(|k| !matches!(k, ActionKind::Read | ActionKind::Write))
        .collect();
    use ActionKind::*;
    assert_eq!(
        kinds,
        vec![Flush, Quiesce, Flush, Unquiesce, Quiesce, Flush, Pivot]
    );
    assert!(matches!(h.completed(), (_, _, None, true)));
}

#[test]
fn failed_final_flush_under_report_unquiesces_then_fails() {
    let mut h = failing_once(
        config_with(ErrorPolicy::Report, ErrorPolicy::Report),
        ActionKind::Flush,
        1,
        IoErrorKind::NoSpace,
    );
    h.start();
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(h.log.last().unwrap().kind, ActionKind::Unquiesce);
    assert!(!h.quiesced && !h.pivoted);
    assert!(matches!(
        h.last_end_event(),
        Some(Event::Completed {
            error: Some(IoErrorKind::NoSpace),
            ..
        })
    ));
}

#[test]
fn failed_quiesce_or_pivot_fails_the_job() {
    for kind in [ActionKind::Quiesce, ActionKind::Pivot] {
        let mut h = failing_once(
            config_with(ErrorPolicy::Ignore, ErrorPolicy::Ignore),
            kind,
            0,
            IoErrorKind::Io,
        );
        h.start();
        h.run_to_ready();
        h.job.complete().unwrap();
        h.drain();
        h.run_to_end();
        assert!(h.errors().is_empty(), "not a read/write error");
        assert_eq!(h.job.error(), Some(IoErrorKind::Io));
        assert!(!h.quiesced, "{kind}: the guest is released");
        assert!(matches!(
            h.last_end_event(),
            Some(Event::Completed {
                error: Some(_),
                pivoted: false,
                ..
            })
        ));
    }
}

#[test]
fn error_during_the_final_pass_unquiesces_and_goes_on() {
    let mut config = config_with(ErrorPolicy::Ignore, ErrorPolicy::Report);
    config.copy_mode = CopyMode::Background;
    let mut h = Harness::new(config);
    h.start();
    h.run_to_ready();
    h.job.complete().unwrap();
    h.drain();
    // Dirty a chunk while the quiesce is out; its read then fails under the quiesce.
    h.guest_write(0, &[8; 10]);
    let read = h
        .pending
        .iter()
        .position(|a| a.kind == ActionKind::Read)
        .unwrap();
    let quiesce = h
        .pending
        .iter()
        .position(|a| a.kind == ActionKind::Quiesce)
        .unwrap();
    assert!(quiesce < read);
    h.perform(quiesce);
    h.fault = Box::new(|a| (a.kind == ActionKind::Read).then_some(IoErrorKind::Io));
    h.perform(0);
    h.fault = Box::new(|_| None);
    assert_eq!(
        h.pending.iter().map(|a| a.kind).collect::<Vec<_>>(),
        vec![ActionKind::Unquiesce]
    );
    h.run_to_end();
    assert_eq!(h.source, h.target);
    assert!(matches!(h.completed(), (_, _, None, true)));
}

#[test]
fn verbs_in_the_wrong_status_change_nothing() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    let refused = |verb, status| Err(JobError::VerbNotAllowed { verb, status });
    assert_eq!(h.job.complete(), refused(Verb::Complete, Created));
    assert_eq!(h.job.dismiss(), refused(Verb::Dismiss, Created));
    assert_eq!(h.job.resume(), refused(Verb::Resume, Created));
    h.start();
    assert_eq!(h.job.start(Nanos(0)), refused(Verb::Start, Running));
    assert_eq!(h.job.complete(), refused(Verb::Complete, Running));
    assert_eq!(h.job.dismiss(), refused(Verb::Dismiss, Running));
    let before = (h.job.status(), h.job.progress(), h.events.len());
    h.drain();
    assert_eq!(before, (h.job.status(), h.job.progress(), h.events.len()));
    h.run_to_ready();
    h.job.complete().unwrap();
    h.job.complete().unwrap();
    h.drain();
    h.run_to_end();
    assert_eq!(
        h.events
            .iter()
            .filter(|e| matches!(e, Event::Completed { .. }))
            .count(),
        1
    );
    for (verb, result) in [
        (Verb::Pause, h.job.pause()),
        (Verb::Resume, h.job.resume()),
        (Verb::SetSpeed, h.job.set_speed(1)),
        (Verb::Complete, h.job.complete()),
        (Verb::Cancel, h.job.cancel(true)),
        (Verb::Change, h.job.set_copy_mode(CopyMode::WriteBlocking)),
        (Verb::Start, h.job.start(Nanos(0))),
    ] {
        assert_eq!(result, refused(verb, Concluded));
    }
    h.job.dismiss().unwrap();
    assert_eq!(h.job.dismiss(), refused(Verb::Dismiss, Null));
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut h = Harness::new(Harness::config(MIB, 64 << 10));
    assert_eq!(
        h.job.handle_guest_write(MIB - 1, 2),
        Err(JobError::OutOfRange {
            offset: MIB - 1,
            length: 2,
            disk_length: MIB
        })
    );
    assert_eq!(
        h.job.handle_guest_write(u64::MAX, 2),
        Err(JobError::OutOfRange {
            offset: u64::MAX,
            length: 2,
            disk_length: MIB
        })
    );
    assert_eq!(
        h.job.handle_guest_write(5, 0),
        Err(JobError::ZeroLength { offset: 5 })
    );
    assert_eq!(
        h.job.declare(0, 0, RangeState::Zero),
        Err(JobError::ZeroLength { offset: 0 })
    );
    assert_eq!(
        h.job.handle_completion(OpId(0), OpResult::Ok),
        Err(JobError::UnknownOp(OpId(0)))
    );
    h.start();
    let read = h.pending[0];
    assert_eq!(
        h.job
            .handle_completion(read.op, OpResult::Ok)
            .and(h.job.handle_completion(read.op, OpResult::Ok)),
        Err(JobError::UnknownOp(read.op)),
        "a double completion (the write is not polled yet)"
    );
    h.pending.remove(0);
    h.drain();
    let write = h.pending.iter().position(|a| a.op == read.op).unwrap();
    assert_eq!(
        h.job.handle_completion(read.op, OpResult::OkZeroes),
        Err(JobError::BadResult {
            op: read.op,
            kind: "write",
            result: "zeroes"
        })
    );
    h.pending.remove(write);
    h.job.handle_completion(read.op, OpResult::Ok).unwrap();
    h.drain();
    assert_eq!(
        h.job.handle_completion(read.op, OpResult::Ok),
        Err(JobError::UnknownOp(read.op))
    );
    assert_eq!(
        h.job.handle_completion(OpId(1 << 40), OpResult::Ok),
        Err(JobError::UnknownOp(OpId(1 << 40)))
    );
    assert_eq!(h.job.progress().current, 256 << 10);
}

#[test]
fn config_is_validated() {
    let bad = |f: &dyn Fn(&mut MirrorConfig)| {
        let mut config = MirrorConfig::new(MIB);
        f(&mut config);
        MirrorJob::new(config).unwrap_err()
    };
    assert_eq!(
        bad(&|c| c.granularity = 256),
        JobError::Config(ConfigError::Granularity(256))
    );
    assert_eq!(
        bad(&|c| c.granularity = 3 << 10),
        JobError::Config(ConfigError::Granularity(3 << 10))
    );
    assert_eq!(
        bad(&|c| c.granularity = 128 << 20),
        JobError::Config(ConfigError::Granularity(128 << 20))
    );
    assert_eq!(
        bad(&|c| c.max_io = 1000),
        JobError::Config(ConfigError::MaxIo {
            max_io: 1000,
            granularity: 64 << 10
        })
    );
    assert_eq!(
        bad(&|c| c.max_io = 0),
        JobError::Config(ConfigError::MaxIo {
            max_io: 0,
            granularity: 64 << 10
        })
    );
    assert_eq!(
        bad(&|c| c.buf_size = 0),
        JobError::Config(ConfigError::BufSize)
    );
    assert_eq!(
        bad(&|c| c.buf_size = u64::MAX),
        JobError::Config(ConfigError::BufSize)
    );
    assert_eq!(
        bad(&|c| c.max_in_flight = 0),
        JobError::Config(ConfigError::MaxInFlight)
    );
    assert!(matches!(
        bad(&|c| {
            c.length = u64::MAX;
            c.granularity = 512
        }),
        JobError::Config(ConfigError::TooLarge { .. })
    ));
    for granularity in [512, 4096, 64 << 20] {
        let mut config = MirrorConfig::new(MIB);
        config.granularity = granularity;
        config.max_io = granularity;
        assert!(MirrorJob::new(config).is_ok());
    }
}

/// A READY flush that keeps failing under `ignore` (a dead target cache): the job waits
/// before each new flush, doubling the wait up to a cap, rather than re-flushing at once.
/// So reaching ten seconds of virtual time takes a bounded number of flushes; once the
/// target heals, the job gets ready.
#[test]
fn persistent_flush_failure_under_ignore_backs_off() {
    const SEC: u64 = 1_000_000_000;
    let mut h = Harness::new(config_with(ErrorPolicy::Report, ErrorPolicy::Ignore));
    h.fault = Box::new(|a: &Action| (a.kind == ActionKind::Flush).then_some(IoErrorKind::Io));
    h.start();
    assert!(h.run_until(100_000, |h| h.now >= 10 * SEC), "time never reached 10 s: the flush spins");
    let flushes = h.errors().len() as u64;
    assert!(flushes > 1, "the flush is retried");
    // From 10 ms doubling to 1 s: 7 rounds reach 1.27 s, then one per second.
    assert!(flushes <= 20, "{flushes} flushes in 10 s");
    assert_eq!(h.job.status(), Running, "never ready while the flush fails");
    h.fault = Box::new(|_: &Action| None);
    h.run_to_ready();
}
