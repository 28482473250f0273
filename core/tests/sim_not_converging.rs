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

/// Runs `sim` one event at a time until ready or `until_ns`, checking at every step that the
/// ETA and the not-converging state agree. Returns the steps spent not converging, and of
/// those the ones whose 2 s rates alone (copy faster than dirty) would give a finite ETA.
fn check_eta_agrees_at_every_step(sim: &mut Simulation, until_ns: u64) -> (u64, u64) {
    let reported = |sim: &Simulation| event_types(sim).iter().filter(|t| **t == "BLOCK_JOB_NOT_CONVERGING").count();
    let (mut not_converging_steps, mut rates_say_converging) = (0, 0);
    let mut events_before = reported(sim);
    let mut estimated_while_converging = false;
    while sim.now_ns() < until_ns && !sim.job().is_ready_reached() {
        sim.run_until_within(Goal::Concluded, 1, until_ns);
        let job = sim.job();
        let rates = job.rates();
        let events_now = reported(sim);
        if events_now > events_before {
            assert!(job.is_not_converging(), "the step that reports it is in the episode, at {} ns", sim.now_ns());
        }
        events_before = events_now;
        if job.is_ready_reached() {
            break;
        }
        if job.is_not_converging() {
            assert_eq!(rates.eta_ready_ns, None, "an ETA while not converging, at {} ns: {rates:?}", sim.now_ns());
            not_converging_steps += 1;
            rates_say_converging += u64::from(rates.copy_bytes_per_sec > rates.dirty_bytes_per_sec);
        } else {
            estimated_while_converging |= rates.eta_ready_ns.is_some();
        }
    }
    assert!(estimated_while_converging, "some ETA before the episode");
    (not_converging_steps, rates_say_converging)
}

#[test]
fn no_eta_while_not_converging() {
    for seed in 1..=3 {
        let mut config = hot_spot(seed, HOT_SPOT_EQUILIBRIUM_RATE);
        config.limits.stop_at_not_converging = false;
        let mut sim = Simulation::new(config).expect("valid");
        let (not_converging_steps, rates_say_converging) = check_eta_agrees_at_every_step(&mut sim, 3 * DEFAULT_NOT_CONVERGING_WINDOW_NS);
        assert!(sim.summary().not_converging_at_ns.is_some(), "seed {seed}: reported");
        assert!(not_converging_steps > 0, "seed {seed}");
        // The case the rule exists for: the last 2 s show the copy ahead of the guest, yet
        // the backlog does not clear in a useful time.
        assert!(rates_say_converging > 0, "seed {seed}: the 2 s rates never disagreed with the rule");
    }
}
