//! Helpers shared by the simulator tests (included with `mod sim_common;`).
#![allow(dead_code)]

use blockmirror_core::job::{CopyMode, ErrorPolicy, MirrorConfig, SyncMode};
use blockmirror_core::sim::{DeviceConfig, Pattern, SimConfig, SimEventKind, Simulation};

pub const MIB: u64 = 1 << 20;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

/// A 64 MiB disk, 64 KiB chunks, target at 200 MiB/s, source at 1 GiB/s.
pub fn base(length: u64) -> SimConfig {
    let mut config = SimConfig::new(MirrorConfig::new(length));
    config.source = DeviceConfig { bandwidth_bytes_per_sec: 1024 * MIB, latency_ns: 100_000, jitter_ns: 0 };
    config.target = DeviceConfig { bandwidth_bytes_per_sec: 200 * MIB, latency_ns: 200_000, jitter_ns: 0 };
    config
}

pub fn with_guest(mut config: SimConfig, pattern: Pattern, rate: u64) -> SimConfig {
    config.guest.pattern = pattern;
    config.guest.write_rate_bytes_per_sec = rate;
    config
}

pub fn modes(mut config: SimConfig, sync: SyncMode, copy: CopyMode) -> SimConfig {
    config.job.sync = sync;
    config.job.copy_mode = copy;
    config
}

pub fn policies(mut config: SimConfig, source: ErrorPolicy, target: ErrorPolicy) -> SimConfig {
    config.job.on_source_error = source;
    config.job.on_target_error = target;
    config
}

/// The type names of the job events, in order.
pub fn event_types(sim: &Simulation) -> Vec<&'static str> {
    sim.events()
        .iter()
        .filter_map(|e| match &e.kind {
            SimEventKind::Job(ev) => Some(ev.type_name()),
            _ => None,
        })
        .collect()
}

/// Panics with the violations, if any.
pub fn assert_clean(sim: &Simulation) {
    assert!(sim.violations().is_empty(), "violations: {:?}", sim.violations());
    assert!(sim.summary().ready_events <= 1, "READY more than once");
}
