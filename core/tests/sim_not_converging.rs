//! `BLOCK_JOB_NOT_CONVERGING`'s forecast rule in whole simulations: a backlog that the guest
//! keeps from clearing is reported early, while a copy that converges is left alone.

mod sim_common;
use blockmirror_core::job::{DEFAULT_NOT_CONVERGING_WINDOW_NS, NOT_CONVERGING_ETA_WINDOWS};
use blockmirror_core::sim::{DeviceConfig, Goal, Pattern, RunOutcome, SimConfig, Simulation};
use blockmirror_core::job::MirrorConfig;
use sim_common::*;

/// A 64 MiB disk in 64 KiB chunks copied at 16 MiB/s (4 s alone) while the guest writes
/// 4 KiB blocks at `write_rate`, 90 % of them to a hot 10 % of the disk.
fn hot_spot(seed: u64, write_rate: u64) -> SimConfig {
    let mut config = SimConfig::new(MirrorConfig::new(64 * MIB));
    config.seed = seed;
    config.target = DeviceConfig { bandwidth_bytes_per_sec: 16 * MIB, latency_ns: 100_000, jitter_ns: 0 };
    config.source = DeviceConfig { bandwidth_bytes_per_sec: 0, latency_ns: 100_000, jitter_ns: 0 };
    config.guest.pattern = Pattern::HOT_SPOT_90_10;
    config.guest.write_rate_bytes_per_sec = write_rate;
    config.guest.write_size = 4096;
    config.guest.write_align = 4096;
    config.limits.max_duration_ns = 60 * SEC;
    config
}

/// 6.6 % of the target's bandwidth: the guest then newly dirties about as much as the job
/// copies, and the backlog hovers at a few chunks, touching new lows now and then. The stall
/// rule alone (no new low for the 10 s window) stays silent here, and the job gets ready
/// only by chance after about 30 s; the forecast reports it within two windows.
const HOT_SPOT_EQUILIBRIUM_RATE: u64 = 1_099_848;

#[test]
fn a_backlog_the_guest_keeps_from_clearing_is_reported_early() {
    assert_eq!(NOT_CONVERGING_ETA_WINDOWS, 1);
    let mut sim = Simulation::new(hot_spot(1, HOT_SPOT_EQUILIBRIUM_RATE)).expect("valid");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::NotConverging);
    let at = sim.summary().not_converging_at_ns.expect("the event was recorded");
    assert!(at < 2 * DEFAULT_NOT_CONVERGING_WINDOW_NS, "at {at} ns");
    assert_eq!(sim.summary().ready_at_ns, None);
}

#[test]
fn converging_copies_are_not_reported() {
    // Below the knee (a quarter of the rate above), for several seeds: ready, no event.
    for seed in 1..=4 {
        let mut sim = Simulation::new(hot_spot(seed, HOT_SPOT_EQUILIBRIUM_RATE / 4)).expect("valid");
        assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached, "seed {seed}");
        assert_eq!(sim.summary().not_converging_at_ns, None, "seed {seed}");
        assert!(!event_types(&sim).contains(&"BLOCK_JOB_NOT_CONVERGING"));
    }
    // A large copy without a guest: far more than a window to go, never reported.
    let mut idle = hot_spot(1, 0);
    idle.job = MirrorConfig::new(512 * MIB);
    idle.job.not_converging_window_ns = SEC; // the copy needs 32 windows
    let mut sim = Simulation::new(idle).expect("valid");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    assert_eq!(sim.summary().not_converging_at_ns, None);
}
