//! Fault injection under each policy, on each side.

mod sim_common;
use blockmirror_core::job::{ErrorAction, ErrorPolicy, Event, IoErrorKind, JobStatus, Operation};
use blockmirror_core::fault::FaultRule;
use blockmirror_core::sim::{Goal, Pattern, RunOutcome, Side, SimConfig, SimEventKind, Simulation};
use sim_common::*;

fn errors(sim: &Simulation) -> Vec<(Operation, ErrorAction, IoErrorKind)> {
    sim.events()
        .iter()
        .filter_map(|e| match &e.kind {
            SimEventKind::Job(Event::Error { operation, action, error, .. }) => Some((*operation, *action, *error)),
            _ => None,
        })
        .collect()
}

fn one_fault(side: Side, policy: ErrorPolicy, error: IoErrorKind) -> SimConfig {
    let mut config = with_guest(base(16 * MIB), Pattern::Uniform, 5 * MIB);
    config = match side {
        Side::Source => policies(config, policy, ErrorPolicy::Report),
        Side::Target => policies(config, ErrorPolicy::Report, policy),
    };
    config.faults.scripted.push(FaultRule::once(side, 4, error).unwrap());
    config.complete_on_ready = true;
    config.guest.stop_ns = Some(2 * SEC);
    config
}

fn operation(side: Side) -> Operation {
    match side {
        Side::Source => Operation::Read,
        Side::Target => Operation::Write,
    }
}

#[test]
fn report_fails_the_job_with_the_error() {
    for side in [Side::Source, Side::Target] {
        let mut sim = Simulation::new(one_fault(side, ErrorPolicy::Report, IoErrorKind::Io)).expect("valid");
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
        let s = sim.summary();
        assert_eq!((s.ending, s.error, s.pivoted), (Some("completed"), Some(IoErrorKind::Io), false));
        assert_eq!(errors(&sim), [(operation(side), ErrorAction::Report, IoErrorKind::Io)]);
        assert_clean(&sim);
    }
}

#[test]
fn ignore_retries_and_still_completes_equal() {
    for side in [Side::Source, Side::Target] {
        let mut sim = Simulation::new(one_fault(side, ErrorPolicy::Ignore, IoErrorKind::Io)).expect("valid");
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
        let s = sim.summary();
        assert_eq!((s.ending, s.error, s.equal_at_end), (Some("completed"), None, Some(true)));
        assert_eq!(errors(&sim), [(operation(side), ErrorAction::Ignore, IoErrorKind::Io)]);
        assert_clean(&sim);
    }
}

#[test]
fn stop_pauses_until_resumed() {
    for side in [Side::Source, Side::Target] {
        let mut config = one_fault(side, ErrorPolicy::Stop, IoErrorKind::Io);
        config.guest.write_rate_bytes_per_sec = 0;
        let mut sim = Simulation::new(config.clone()).expect("valid");
        // Nobody resumes: nothing more happens.
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Stalled);
        assert_eq!(sim.job().status(), JobStatus::Paused);
        assert_eq!(errors(&sim), [(operation(side), ErrorAction::Stop, IoErrorKind::Io)]);

        config.resume_after_stop_ns = Some(100 * MS);
        let mut sim = Simulation::new(config).expect("valid");
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
        assert_eq!(sim.summary().equal_at_end, Some(true));
        assert_clean(&sim);
    }
}

#[test]
fn enospc_stops_on_no_space_and_reports_other_errors() {
    let mut config = one_fault(Side::Target, ErrorPolicy::Enospc, IoErrorKind::NoSpace);
    config.resume_after_stop_ns = Some(10 * MS);
    let mut sim = Simulation::new(config).expect("valid");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    assert_eq!(errors(&sim), [(Operation::Write, ErrorAction::Stop, IoErrorKind::NoSpace)]);
    assert_eq!(sim.summary().equal_at_end, Some(true));

    let mut sim = Simulation::new(one_fault(Side::Target, ErrorPolicy::Enospc, IoErrorKind::Io)).expect("valid");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    assert_eq!(errors(&sim), [(Operation::Write, ErrorAction::Report, IoErrorKind::Io)]);
    assert_eq!(sim.summary().error, Some(IoErrorKind::Io));
}

#[test]
fn random_faults_in_a_window_under_ignore_converge_after_the_window() {
    for rate in [0.05, 0.5] {
        let mut config = with_guest(base(16 * MIB), Pattern::HOT_SPOT_90_10, 5 * MIB);
        config = policies(config, ErrorPolicy::Ignore, ErrorPolicy::Ignore);
        config.faults.source_rate = rate;
        config.faults.target_rate = rate;
        config.faults.window_ns = Some((0, 500 * MS));
        config.complete_on_ready = true;
        config.guest.stop_ns = Some(SEC);
        let mut sim = Simulation::new(config).expect("valid");
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
        let s = sim.summary();
        assert!(s.error_events > 0);
        assert_eq!(s.equal_at_end, Some(true));
        assert_clean(&sim);
    }
}

#[test]
fn failed_chunks_show_until_rewritten() {
    let mut config = base(16 * MIB);
    config = policies(config, ErrorPolicy::Report, ErrorPolicy::Stop);
    config.faults.scripted.push(FaultRule::once(Side::Target, 1, IoErrorKind::NoSpace).unwrap());
    let mut sim = Simulation::new(config).expect("valid");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Stalled);
    let mut states = Vec::new();
    sim.chunk_states(&mut states);
    let failed = states.iter().filter(|&&b| b == blockmirror_core::sim::ChunkState::Failed as u8).count();
    assert_eq!(failed as u64, sim.job().config().max_io / sim.job().config().granularity);
}

/// A fault that persists (a full disk) under `ignore`: the job backs off before each retry
/// instead of re-issuing the failed chunks at once, so ten virtual seconds of a dead side
/// cost a bounded number of attempts; once the fault is gone the job converges (a failed chunk stays dirty, never given up).
#[test]
fn persistent_fault_under_ignore_backs_off_then_converges() {
    const FAULTY_NS: u64 = 10 * SEC;
    for side in [Side::Source, Side::Target] {
        let mut config = with_guest(base(16 * MIB), Pattern::Uniform, 2 * MIB);
        config = match side {
            Side::Source => policies(config, ErrorPolicy::Ignore, ErrorPolicy::Report),
            Side::Target => policies(config, ErrorPolicy::Report, ErrorPolicy::Ignore),
        };
        match side {
            Side::Source => config.faults.source_rate = 1.0,
            Side::Target => config.faults.target_rate = 1.0,
        }
        config.faults.random_error = Some(IoErrorKind::NoSpace);
        config.faults.window_ns = Some((0, FAULTY_NS));
        config.complete_on_ready = true;
        config.guest.stop_ns = Some(FAULTY_NS + 2 * SEC);
        let mut sim = Simulation::new(config).expect("valid");
        assert_eq!(sim.run_until(Goal::Time(FAULTY_NS)), RunOutcome::Reached);
        let failures = errors(&sim).len() as u64;
        assert!(failures > 0, "{side:?}: the fault was hit");
        // Retrying at once would fail every ~0.2 ms per op in flight (hundreds of thousands
        // of attempts); backing off from 10 ms allows at most one round per 10 ms.
        assert!(failures <= FAULTY_NS / (10 * MS), "{side:?}: {failures} failed attempts in 10 s");
        assert!(sim.steps() < 100_000, "{side:?}: {} steps in 10 s", sim.steps());
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached, "{side:?}");
        let s = sim.summary();
        assert_eq!((s.ending, s.error, s.equal_at_end), (Some("completed"), None, Some(true)), "{side:?}");
        assert_clean(&sim);
    }
}
