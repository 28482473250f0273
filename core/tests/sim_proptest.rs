//! Random simulator configurations: whatever happens, the invariants hold.
//!
//! For every seed, mode, policy, fault script and command schedule: the simulator sees no
//! protocol violation, READY fires at most once, a `BLOCK_JOB_COMPLETED` without error
//! leaves the target equal to the source at the switch moment, and the run ends in an
//! outcome (never a hang). With no faults and no commands, every run completes equal; under
//! `ignore` (or `stop` with an operator who resumes) it still does once the faults stop.
//!
//! "The job never writes the source" holds by construction here: no action kind names the
//! source except `read`, and the simulator changes the source only for guest writes. What the
//! job writes to the target must come from a read of the same op (else a violation), so
//! target data is always source data or zeroes where the source read zero.

mod sim_common;
use blockmirror_core::job::{CopyMode, ErrorPolicy, IoErrorKind, MirrorConfig, SyncMode};
use blockmirror_core::fault::FaultRule;
use blockmirror_core::sim::{
    Command, DeviceConfig, Goal, Pattern, ReadCapture, RunOutcome, ScriptedCommand, Side, SimConfig,
    Simulation,
};
use proptest::prelude::*;
use sim_common::*;

fn copy_mode() -> impl Strategy<Value = CopyMode> {
    prop_oneof![Just(CopyMode::Background), Just(CopyMode::WriteBlocking)]
}
fn sync_mode() -> impl Strategy<Value = SyncMode> {
    prop_oneof![Just(SyncMode::Full), Just(SyncMode::Top), Just(SyncMode::None)]
}
fn policy() -> impl Strategy<Value = ErrorPolicy> {
    prop_oneof![Just(ErrorPolicy::Report), Just(ErrorPolicy::Ignore), Just(ErrorPolicy::Stop), Just(ErrorPolicy::Enospc)]
}
fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![Just(Pattern::Uniform), Just(Pattern::HOT_SPOT_90_10), Just(Pattern::Sequential)]
}
fn read_capture() -> impl Strategy<Value = ReadCapture> {
    prop_oneof![Just(ReadCapture::Either), Just(ReadCapture::Issue), Just(ReadCapture::Completion)]
}
fn error_kind() -> impl Strategy<Value = IoErrorKind> {
    prop_oneof![Just(IoErrorKind::NoSpace), Just(IoErrorKind::Io), Just(IoErrorKind::Other(27))]
}
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Pause),
        Just(Command::Resume),
        (0u64..64 * MIB).prop_map(Command::SetSpeed),
        copy_mode().prop_map(Command::SetCopyMode),
        Just(Command::Complete),
        any::<bool>().prop_map(|force| Command::Cancel { force }),
    ]
}

/// A small random world: disk of up to 4 MiB, chunks of 512 B to 64 KiB.
fn world() -> impl Strategy<Value = SimConfig> {
    (
        (any::<u64>(), 1u64..4 * MIB, 9u32..17, 1u64..5, sync_mode(), copy_mode(), 0.0f64..=1.0, any::<bool>()),
        (pattern(), 0u64..20_000, 1u64..20_000, prop_oneof![Just(1u64), Just(512), Just(4096)], 1u32..8, 0u64..3 * SEC),
        (MIB..100 * MIB, 0u64..2 * MS, MIB..64 * MIB, 0u64..2 * MS, 1u64..(8 << 20), 1usize..6, read_capture()),
    )
        .prop_map(|(a, b, c)| {
            let (seed, length, g_log, io_chunks, sync, copy, data_fraction, declare) = a;
            let (pattern, writes_per_sec, write_size, align, depth, stop) = b;
            let (target_bw, target_jitter, source_bw, source_jitter, buf, in_flight, capture) = c;
            let granularity = 1u64 << g_log;
            let mut job = MirrorConfig::new(length);
            job.granularity = granularity;
            job.max_io = granularity * io_chunks;
            job.buf_size = buf;
            job.max_in_flight = in_flight;
            job.sync = sync;
            job.copy_mode = copy;
            let mut config = SimConfig::new(job);
            config.seed = seed;
            config.layout.data_fraction = data_fraction;
            config.layout.declare = declare;
            config.guest.pattern = pattern;
            // At most 60 000 guest writes per run: the step budget is for the job, not the guest.
            config.guest.write_rate_bytes_per_sec = writes_per_sec * write_size;
            config.guest.write_size = write_size;
            config.guest.write_align = align;
            config.guest.queue_depth = depth;
            config.guest.stop_ns = Some(stop);
            config.target = DeviceConfig { bandwidth_bytes_per_sec: target_bw, latency_ns: 50_000, jitter_ns: target_jitter };
            config.source = DeviceConfig { bandwidth_bytes_per_sec: source_bw, latency_ns: 20_000, jitter_ns: source_jitter };
            config.read_capture = capture;
            config.complete_on_ready = true;
            config.sample_interval_ns = 0;
            config.limits.max_steps = 2_000_000;
            config.limits.max_duration_ns = 120 * SEC;
            config
        })
}

/// The invariants every run keeps, whatever its outcome.
fn check(sim: &Simulation, outcome: RunOutcome) -> Result<(), TestCaseError> {
    let s = sim.summary();
    prop_assert!(sim.violations().is_empty(), "violations {:?}", sim.violations());
    prop_assert!(s.ready_events <= 1, "READY {} times", s.ready_events);
    if s.ending == Some("completed") && s.error.is_none() {
        prop_assert_eq!(s.equal_at_end, Some(true), "completed without error but the target differs");
    }
    if outcome == RunOutcome::Reached {
        prop_assert!(s.concluded_at_ns.is_some());
    }
    Ok(())
}

proptest! {
    // 512 cases each by default; PROPTEST_CASES=n overrides (e.g. for a long hunt).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    /// No faults, no commands, the guest stops: every run completes with equal disks.
    #[test]
    fn fault_free_runs_complete_equal(config in world()) {
        let mut sim = Simulation::new(config).expect("the strategy makes valid configs");
        let outcome = sim.run_until(Goal::Concluded);
        check(&sim, outcome)?;
        prop_assert_eq!(outcome, RunOutcome::Reached, "{:?}", sim.summary());
        prop_assert_eq!(sim.summary().equal_at_end, Some(true));
    }

    /// Faults on either side under any policy, and commands at random times.
    #[test]
    fn faults_and_commands_never_break_the_invariants(
        config in world(),
        source_policy in policy(),
        target_policy in policy(),
        faults in prop::collection::vec((any::<bool>(), 0u64..200, error_kind()), 0..4),
        random_rate in prop_oneof![Just(0.0f64), 0.0f64..0.3],
        window_end in 0u64..2 * SEC,
        commands in prop::collection::vec((0u64..3 * SEC, command()), 0..5),
        resume_after_stop in prop::option::of(0u64..200 * MS),
    ) {
        let mut config = config;
        config.job.on_source_error = source_policy;
        config.job.on_target_error = target_policy;
        config.faults.scripted = faults
            .into_iter()
            .map(|(target, nth, error)| FaultRule::once(if target { Side::Target } else { Side::Source }, nth + 1, error).unwrap())
            .collect();
        config.faults.source_rate = random_rate;
        config.faults.target_rate = random_rate;
        config.faults.window_ns = Some((0, window_end));
        config.commands = commands.into_iter().map(|(at_ns, command)| ScriptedCommand { at_ns, command }).collect();
        config.resume_after_stop_ns = resume_after_stop;
        let mut sim = Simulation::new(config).expect("the strategy makes valid configs");
        let outcome = sim.run_until(Goal::Concluded);
        check(&sim, outcome)?;
        prop_assert!(outcome != RunOutcome::Livelock, "{:?}", sim.summary());
    }

    /// Under `ignore`, or `stop` with an operator who resumes, faults that stop (random ones
    /// within a window, a few scripted ones) never keep the job from completing equal.
    #[test]
    fn recoverable_policies_converge_once_faults_stop(
        config in world(),
        stop in any::<bool>(),
        faults in prop::collection::vec((any::<bool>(), 0u64..100, error_kind()), 0..4),
        rate in 0.0f64..0.5,
        window_end in 0u64..2 * SEC,
    ) {
        let mut config = config;
        let policy = if stop { ErrorPolicy::Stop } else { ErrorPolicy::Ignore };
        config.job.on_source_error = policy;
        config.job.on_target_error = policy;
        config.resume_after_stop_ns = Some(20 * MS);
        config.faults.scripted = faults
            .into_iter()
            .map(|(target, nth, error)| FaultRule::once(if target { Side::Target } else { Side::Source }, nth + 1, error).unwrap())
            .collect();
        config.faults.source_rate = rate;
        config.faults.target_rate = rate;
        config.faults.window_ns = Some((0, window_end));
        let mut sim = Simulation::new(config).expect("the strategy makes valid configs");
        let outcome = sim.run_until(Goal::Concluded);
        check(&sim, outcome)?;
        prop_assert_eq!(outcome, RunOutcome::Reached, "{:?}", sim.summary());
        let s = sim.summary();
        prop_assert_eq!((s.ending, s.error, s.equal_at_end), (Some("completed"), None, Some(true)));
    }
}
