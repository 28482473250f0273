//! A disk's timing: one FIFO server with a bandwidth, plus a fixed latency and jitter.
//!
//! An I/O of `n` bytes issued at `t` starts service at `max(t, busy_until)`, holds the
//! server for `n / bandwidth`, and completes `latency (+ jitter)` after its service ends.
//! Jitter lets completions overtake each other (out-of-order completion).

use super::rng::Rng;

/// Timing parameters of one side (source or target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Bytes per second the device serves; 0 means unlimited.
    pub bandwidth_bytes_per_sec: u64,
    /// Fixed delay added to every I/O, in nanoseconds.
    pub latency_ns: u64,
    /// Extra delay drawn uniformly from `[0, jitter_ns]` per I/O; non-zero reorders completions.
    pub jitter_ns: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self { bandwidth_bytes_per_sec: 0, latency_ns: 100_000, jitter_ns: 0 }
    }
}

/// The device's queue state.
#[derive(Debug, Clone)]
pub struct Device {
    config: DeviceConfig,
    busy_until_ns: u64,
}

impl Device {
    /// An idle device.
    pub fn new(config: DeviceConfig) -> Self {
        Self { config, busy_until_ns: 0 }
    }

    /// Change the bandwidth from now on (I/O already queued keeps its times).
    pub fn set_bandwidth(&mut self, bytes_per_sec: u64) {
        self.config.bandwidth_bytes_per_sec = bytes_per_sec;
    }

    /// Queue an I/O of `bytes` at `now_ns`; returns its completion time.
    pub fn submit(&mut self, now_ns: u64, bytes: u64, rng: &mut Rng) -> u64 {
        let service_ns = match self.config.bandwidth_bytes_per_sec {
            0 => 0,
            bw => {
                let ns = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(bw));
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        };
        let start = now_ns.max(self.busy_until_ns);
        self.busy_until_ns = start.saturating_add(service_ns);
        let jitter = if self.config.jitter_ns == 0 { 0 } else { rng.below(self.config.jitter_ns + 1) };
        self.busy_until_ns.saturating_add(self.config.latency_ns).saturating_add(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_service_at_bandwidth_plus_latency() {
        let mut rng = Rng::new(0);
        let mut d = Device::new(DeviceConfig { bandwidth_bytes_per_sec: 1_000_000_000, latency_ns: 10, jitter_ns: 0 });
        assert_eq!(d.submit(0, 1000, &mut rng), 1010);
        assert_eq!(d.submit(0, 1000, &mut rng), 2010, "the second waits for the first");
        assert_eq!(d.submit(5000, 1000, &mut rng), 6010, "an idle device starts at once");
    }
}
