//! Bad input never panics: random calls in any order with any arguments — unknown and
//! repeated op ids, results that do not fit, ranges past the end, verbs in every status,
//! time going backwards, outputs left undrained — must only ever return typed errors.
//! (The disciplined driver with every invariant is `job_model.rs`.)

use blockmirror_core::job::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Call {
    Start(u64),
    GuestWrite(u64, u64),
    Declare(u64, u64, u8),
    Complete(u64, u8),
    CompletePolled(usize, u8),
    Timeout(u64),
    Pause,
    Resume,
    SetSpeed(u64),
    SetCopyMode(bool),
    FinishSwitch,
    Cancel(bool),
    Dismiss,
    PollAction,
    PollEvent,
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        1 => any::<u64>().prop_map(Call::Start),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(o, l)| Call::GuestWrite(o, l)),
        1 => (0u64..1 << 22, 0u64..1 << 22).prop_map(|(o, l)| Call::GuestWrite(o, l)),
        1 => (any::<u64>(), any::<u64>(), any::<u8>()).prop_map(|(o, l, s)| Call::Declare(o, l, s)),
        1 => (0u64..1 << 22, 0u64..1 << 22, any::<u8>()).prop_map(|(o, l, s)| Call::Declare(o, l, s)),
        1 => (any::<u64>(), any::<u8>()).prop_map(|(op, r)| Call::Complete(op, r)),
        1 => (0u64..64, any::<u8>()).prop_map(|(op, r)| Call::Complete(op, r)),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, r)| Call::CompletePolled(i, r)),
        1 => any::<u64>().prop_map(Call::Timeout),
        1 => Just(Call::Pause),
        1 => Just(Call::Resume),
        1 => any::<u64>().prop_map(Call::SetSpeed),
        1 => any::<bool>().prop_map(Call::SetCopyMode),
        1 => Just(Call::FinishSwitch),
        1 => any::<bool>().prop_map(Call::Cancel),
        1 => Just(Call::Dismiss),
        2 => Just(Call::PollAction),
        1 => Just(Call::PollEvent),
    ]
}

fn result(code: u8) -> OpResult {
    match code % 6 {
        0 => OpResult::Failed(IoErrorKind::NoSpace),
        1 => OpResult::Failed(IoErrorKind::from_errno(code as i32)),
        2 => OpResult::OkZeroes,
        _ => OpResult::Ok,
    }
}

fn state(code: u8) -> RangeState {
    [
        RangeState::Allocated,
        RangeState::Unallocated,
        RangeState::Zero,
    ][code as usize % 3]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_calls_never_panic(
        length in prop_oneof![Just(0u64), 1u64..1 << 22],
        granularity_log in 9u32..16,
        sync in 0u8..3,
        write_blocking in any::<bool>(),
        source_policy in 0u8..4,
        target_policy in 0u8..4,
        calls in prop::collection::vec(call(), 0..300),
    ) {
        let policies = [ErrorPolicy::Report, ErrorPolicy::Ignore, ErrorPolicy::Stop, ErrorPolicy::Enospc];
        let mut config = MirrorConfig::new(length);
        config.granularity = 1 << granularity_log;
        config.max_io = config.granularity * 4;
        config.buf_size = config.granularity * 6;
        config.sync = [SyncMode::Full, SyncMode::Top, SyncMode::None][sync as usize];
        config.copy_mode = if write_blocking { CopyMode::WriteBlocking } else { CopyMode::Background };
        config.on_source_error = policies[source_policy as usize];
        config.on_target_error = policies[target_policy as usize];
        let mut job = MirrorJob::new(config).unwrap();
        let mut polled: Vec<Action> = Vec::new();
        for call in calls {
            match call {
                Call::Start(now) => { let _ = job.start(Nanos(now)); }
                Call::GuestWrite(offset, len) => { let _ = job.handle_guest_write(offset, len); }
                Call::Declare(offset, len, s) => { let _ = job.declare(offset, len, state(s)); }
                Call::Complete(op, r) => { let _ = job.handle_completion(OpId(op), result(r)); }
                Call::CompletePolled(index, r) => {
                    if !polled.is_empty() {
                        let action = polled.swap_remove(index % polled.len());
                        // Quiesce/unquiesce/pivot failures end the job; keep some runs long.
                        let r = if matches!(action.kind, ActionKind::Quiesce | ActionKind::Unquiesce | ActionKind::Pivot) && r % 4 != 0 { 3 } else { r };
                        let _ = job.handle_completion(action.op, result(r));
                    }
                }
                Call::Timeout(now) => job.handle_timeout(Nanos(now)),
                Call::Pause => { let _ = job.pause(); }
                Call::Resume => { let _ = job.resume(); }
                Call::SetSpeed(speed) => { let _ = job.set_speed(speed); }
                Call::SetCopyMode(wb) => {
                    let _ = job.set_copy_mode(if wb { CopyMode::WriteBlocking } else { CopyMode::Background });
                }
                Call::FinishSwitch => { let _ = job.complete(); }
                Call::Cancel(force) => { let _ = job.cancel(force); }
                Call::Dismiss => { let _ = job.dismiss(); }
                Call::PollAction => {
                    while let Some(action) = job.poll_action() {
                        prop_assert!(action.offset.checked_add(action.length).is_some_and(|end| end <= length));
                        polled.push(action);
                    }
                }
                Call::PollEvent => { while job.poll_event().is_some() {} }
            }
            let progress = job.progress();
            prop_assert!(progress.current <= progress.total);
            let _ = (job.rates(), job.poll_timeout(), job.ops().count(), job.status());
        }
    }
}
