//! The same configuration and seed give the same run, step for step.

mod sim_common;
use blockmirror_core::job::CopyMode;
use blockmirror_core::sim::{Goal, Pattern, RunOutcome, Simulation};
use sim_common::*;

fn busy_config(seed: u64) -> blockmirror_core::sim::SimConfig {
    let mut config = with_guest(base(32 * MIB), Pattern::HOT_SPOT_90_10, 50 * MIB);
    config.seed = seed;
    config.target.jitter_ns = 300_000;
    config.faults.target_rate = 0.01;
    config.job.on_target_error = blockmirror_core::job::ErrorPolicy::Ignore;
    config.job.copy_mode = CopyMode::WriteBlocking;
    config.guest.stop_ns = Some(2 * SEC);
    config.complete_on_ready = true;
    config.record_trace = true;
    config
}

fn run(seed: u64) -> Simulation {
    let mut sim = Simulation::new(busy_config(seed)).expect("valid config");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    sim
}

#[test]
fn same_seed_gives_the_same_trace_events_and_summary() {
    let (a, b) = (run(11), run(11));
    assert!(!a.trace().is_empty());
    assert_eq!(a.trace(), b.trace());
    assert_eq!(a.events(), b.events());
    assert_eq!(a.samples(), b.samples());
    assert_eq!(a.summary(), b.summary());
    assert_clean(&a);
}

#[test]
fn different_seeds_give_different_runs() {
    assert_ne!(run(1).trace_digest(), run(2).trace_digest());
}

#[test]
fn stopping_and_resuming_a_run_changes_nothing() {
    let whole = run(5);
    let mut pieces = Simulation::new(busy_config(5)).expect("valid config");
    for t in [MS, 10 * MS, 50 * MS, 120 * MS] {
        assert_eq!(pieces.run_until(Goal::Time(t)), RunOutcome::Reached);
        assert_eq!(pieces.now_ns(), t);
    }
    assert_eq!(pieces.run_until(Goal::Concluded), RunOutcome::Reached);
    assert_eq!(whole.trace(), pieces.trace());
    assert_eq!(whole.summary(), pieces.summary());
}
